"""`vimogen motion ...`: list the built-in clips, convert sources to 276-d features, decode
features to joints, export to BVH / GLB / NPZ / MP4 / GIF."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vimogen_core.errors import MotionDataError
from vimogen_core.files import atomic_path
from vimogen_core.sources.bvh_retarget import UNITS, UP_AXES

SOURCES = ("deepmimic", "amass", "hmr", "vimogen", "bvh")
EXPORTS = ("bvh", "glb", "npz", "mp4", "gif", "npy")


def register(subparsers: argparse._SubParsersAction) -> None:
    motion = subparsers.add_parser("motion", help="motion representation tools")
    sub = motion.add_subparsers(dest="motion_command", required=True)

    clips = sub.add_parser("clips", help="list the built-in motion-capture clips")
    clips.set_defaults(func=cmd_clips)

    convert = sub.add_parser("convert", help="convert a motion source to 276-d features (.npy)")
    convert.add_argument("src", help="a file, or the name of a built-in clip with --from deepmimic")
    convert.add_argument("--from", dest="source", choices=SOURCES, required=True)
    convert.add_argument("--out", required=True, help="output FEATS.npy")
    convert.add_argument("--fps", type=float, default=None, help="source frame rate where the file has none (hmr)")
    convert.add_argument("--joint-map", default=None,
                         help='bvh: JSON {"BVH joint": "smpl_joint"} for names the built-in conventions do not know')
    convert.add_argument("--up", choices=UP_AXES, default="auto",
                         help="bvh: the file's up axis (default: read from the rest pose)")
    convert.add_argument("--units", choices=("auto", *UNITS), default="auto",
                         help="bvh: the file's length unit (default: read from the rest pose's height)")
    convert.set_defaults(func=cmd_convert)

    joints = sub.add_parser("joints", help="decode features to joints (T, 22, 3)")
    joints.add_argument("feats")
    joints.add_argument("--out", required=True)
    joints.add_argument("--from-velocity", action="store_true",
                        help="integrate the velocity channels from frame 0 instead of reading positions")
    joints.set_defaults(func=cmd_joints)

    export = sub.add_parser("export", help="export features to another format")
    export.add_argument("feats")
    export.add_argument("--to", choices=EXPORTS, required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--body", action="store_true",
                        help="glb: also skin the procedural body mesh to the skeleton (viewers draw meshes, not bare joints)")
    export.set_defaults(func=cmd_export)


def cmd_clips(args) -> int:
    from vimogen_core.sources.deepmimic import load_builtin_clip, builtin_clip_names

    for name in builtin_clip_names():
        clip = load_builtin_clip(name)
        print(f"{name:16s} {clip.motion.n_frames:4d} frames @ 20 fps  {clip.captions[0]}")
    return 0


def convert_source(src: str, source: str, fps: float | None = None, joint_map: str | None = None,
                   up: str = "auto", units: str = "auto") -> np.ndarray:
    """One implementation for the CLI and the pipeline: a source -> (T, 276) float32 features.
    joint_map, up and units apply to BVH files (see `vimogen_core.sources.bvh_retarget.load_bvh`)."""
    if source == "deepmimic":
        from vimogen_core.sources.deepmimic import builtin_clip_path, load_builtin_clip, load_deepmimic_file

        if Path(src).is_file():
            return load_deepmimic_file(src).features().numpy()
        builtin_clip_path(src)  # raises "unknown built-in clip" naming the choices
        return load_builtin_clip(src).motion.features().numpy()
    _existing(src)
    if source == "amass":
        from vimogen_core.sources.amass import load_amass_npz

        motion = load_amass_npz(src)
    elif source == "hmr":
        from vimogen_core.sources.hmr import load_hmr_output

        motion = load_hmr_output(src, fps=fps)[0]
    elif source == "bvh":
        from vimogen_core.sources.bvh_retarget import load_bvh

        motion = load_bvh(src, joint_map=joint_map, up=up, units=units)
    else:
        from vimogen_core.sources.vimogen228k import load_vimogen_motion

        return np.asarray(load_vimogen_motion(src)["motion"], dtype=np.float32)
    return motion.features().numpy()


def _existing(path: str) -> None:
    if not Path(path).exists():
        raise MotionDataError(path, "file not found")


def _save_npy(path: str, array: np.ndarray) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, open(tmp, "wb") as handle:  # a handle: numpy appends no ".npy"
        np.save(handle, array)


def cmd_convert(args) -> int:
    feats = convert_source(args.src, args.source, args.fps, args.joint_map, args.up, args.units)
    _save_npy(args.out, feats)
    print(f"{args.out}: {feats.shape[0]} frames x {feats.shape[1]} features")
    return 0


def cmd_joints(args) -> int:
    from vimogen_core.motion.representation import features_to_joints, features_to_joints_integrated, load_features

    feats = torch.as_tensor(load_features(args.feats), dtype=torch.float64)
    decode = features_to_joints_integrated if args.from_velocity else features_to_joints
    joints = decode(feats).float().numpy()
    _save_npy(args.out, joints)
    print(f"{args.out}: joints {joints.shape}")
    return 0


def cmd_export(args) -> int:
    from vimogen_core.body.procedural import build_procedural_smpl
    from vimogen_core.motion.export import export_features
    from vimogen_core.motion.representation import load_features

    feats = load_features(args.feats)
    export_features(feats, args.to, args.out, body=build_procedural_smpl if args.body else None)
    print(f"{args.out}: {args.to} export of {len(feats)} frames")
    return 0
