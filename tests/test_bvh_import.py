"""BVH import: the project's own export comes back exactly; a real walk retargeted onto a CMU-like
and a Mixamo-like skeleton (other names, extra joints, rest poses, bone lengths, units, up axes,
rotation orders and frame rates) comes back as a clean SMPL-22 walk; bad files name file and line."""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from scipy.spatial.transform import Rotation

from vimogen_core.sources.raw_takes import SourcesConfig, build_sources
from vimogen_core.errors import MotionDataError
from vimogen_core.motion.export import EULER_ORDERS, Z_UP_TO_Y_UP, save_bvh
from vimogen_core.motion.kinematics import forward_kinematics, rest_joints24
from vimogen_core.motion.motion import Motion, mirror_joints, resample
from vimogen_core.motion.skeleton import FPS, JOINT_NAMES, LEFT_FOOT, LEFT_HIP, RIGHT_FOOT, RIGHT_HIP, bone_lengths
from vimogen_core.sources.bvh import read_bvh, source_forward_kinematics
from vimogen_core.sources.bvh_retarget import load_bvh, map_joints, world_frame
from vimogen_core.sources.deepmimic import builtin_clip_names, load_builtin_clip
from vimogen_core.train.evaluation import frame_aligned_error, retrieval

VIMOGEN = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "vimogen")
BLENDER_SCRIPT = Path(__file__).with_name("blender_bvh_joints.py")
J = {name: i for i, name in enumerate(JOINT_NAMES)}
REST = rest_joints24()[:22]  # SMPL body frame: Y up, facing +Z, left = +X


@pytest.fixture(scope="module")
def walk() -> Motion:
    return load_builtin_clip("walk", min_frames=60).motion


def _turn(axis: str, degrees: float) -> np.ndarray:
    return Rotation.from_euler(axis, degrees, degrees=True).as_matrix()


def _skeleton(spec, arm_drop: float, body_to_file: np.ndarray):
    """spec rows (name, parent, position, rotation): the SMPL joint (or (a, b, fraction) between two)
    the BVH joint sits at, and the SMPL joint whose rotation it carries. Rest offsets are the SMPL
    rest bones in the carrying parent's rest frame S = body_to_file @ A, A lowering the arms by
    `arm_drop` degrees (an A-pose) for the arm joints."""
    def where(position):
        if isinstance(position, tuple):
            a, b, fraction = position
            return REST[J[a]] + (REST[J[b]] - REST[J[a]]) * fraction
        return REST[J[position]]

    frames = {}
    for name, _, _, carries in spec:
        drop = 0.0
        for side, sign in (("left", -1.0), ("right", 1.0)):
            if carries in (f"{side}_shoulder", f"{side}_elbow", f"{side}_wrist"):
                drop = sign * arm_drop
        frames[name] = body_to_file @ _turn("z", drop)
    position_of = {name: pos for name, _, pos, _ in spec}
    offsets = {name: np.zeros(3) if parent is None else frames[parent] @ (where(pos) - where(position_of[parent]))
               for name, parent, pos, _ in spec}
    return frames, offsets


def _write_bvh(path, spec, motion: Motion, *, scale: float, unit: float, world: np.ndarray, body_to_file: np.ndarray,
               arm_drop: float, orders, position_channels_everywhere: bool = False) -> Path:
    """The motion retargeted onto the spec's skeleton, `scale` times the SMPL size, written in
    `unit`s per metre with the world turned by `world` (project Z-up -> file axes)."""
    frames, offsets = _skeleton(spec, arm_drop, body_to_file)
    local = motion.local_rotmats
    _, smpl_global = forward_kinematics(local, torch.zeros(motion.n_frames, 3, dtype=torch.float64), motion.offsets)
    smpl_global = smpl_global.numpy()
    names = [row[0] for row in spec]
    parent_of = {row[0]: row[1] for row in spec}
    world_rot = {name: world @ smpl_global[:, J[carries]] @ frames[name].T for name, _, _, carries in spec}
    columns, lines = [], ["HIERARCHY"]
    children = {name: [r[0] for r in spec if r[1] == name] for name in names}

    def write(name, depth, k):
        pad = "  " * depth
        order = orders[k % len(orders)]
        parent = parent_of[name]
        g = world_rot[name]
        local_rot = g if parent is None else np.swapaxes(world_rot[parent], -1, -2) @ g
        angles = Rotation.from_matrix(local_rot).as_euler(order, degrees=True)
        rotation_channels = [f"{axis}rotation" for axis in order]
        offset = offsets[name] * scale * unit
        lines.append(f"{pad}{'ROOT' if parent is None else 'JOINT'} {name}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  OFFSET {offset[0]:.6f} {offset[1]:.6f} {offset[2]:.6f}")
        if parent is None or position_channels_everywhere:
            if parent is None:
                position = (motion.joints[:, 0].numpy() @ world.T) * scale * unit
            else:
                position = np.broadcast_to(offset, (motion.n_frames, 3))
            lines.append(f"{pad}  CHANNELS 6 Xposition Yposition Zposition {' '.join(rotation_channels)}")
            columns.append(position)
        else:
            lines.append(f"{pad}  CHANNELS 3 {' '.join(rotation_channels)}")
        columns.append(angles)
        for child in children[name]:
            k = write(child, depth + 1, k + 1)
        if not children[name]:
            lines.extend([f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET 0.000000 {5 * unit * 0.01:.6f} 0.000000",
                          f"{pad}  }}"])
        lines.append(f"{pad}}}")
        return k

    write(names[0], 0, 0)
    lines += ["MOTION", f"Frames: {motion.n_frames}", f"Frame Time: {1.0 / motion.fps:.8f}"]
    table = np.concatenate(columns, axis=1)
    path = Path(path)
    path.write_text("\n".join(lines) + "\n" + "\n".join(" ".join(f"{v:.6f}" for v in row) for row in table) + "\n")
    return path


def _sided(rows):
    out = []
    for row in rows:
        if "{" not in row[0]:
            out.append(row)
            continue
        for side, Side, S in (("left", "Left", "L"), ("right", "Right", "R")):
            fmt = lambda v: v.format(side=side, Side=Side, S=S) if isinstance(v, str) else (  # noqa: E731
                v if v is None else tuple(x.format(side=side) if isinstance(x, str) else x for x in v))
            out.append(tuple(fmt(v) for v in row))
    return out


# CMU (cgspeed BVH) layout: LHipJoint halfway to the hip, LowerBack and Neck on top of their parents,
# LeftShoulder (the collar) on Spine1, one spine joint fewer than SMPL.
CMU_SPEC = _sided([
    ("Hips", None, "pelvis", "pelvis"),
    ("{S}HipJoint", "Hips", ("pelvis", "{side}_hip", 0.5), "pelvis"),
    ("{Side}UpLeg", "{S}HipJoint", "{side}_hip", "{side}_hip"),
    ("{Side}Leg", "{Side}UpLeg", "{side}_knee", "{side}_knee"),
    ("{Side}Foot", "{Side}Leg", "{side}_ankle", "{side}_ankle"),
    ("{Side}ToeBase", "{Side}Foot", "{side}_foot", "{side}_foot"),
    ("LowerBack", "Hips", "pelvis", "pelvis"),
    ("Spine", "LowerBack", "spine1", "spine1"),
    ("Spine1", "Spine", "spine3", "spine3"),
    ("Neck", "Spine1", "spine3", "spine3"),
    ("Neck1", "Neck", "neck", "neck"),
    ("Head", "Neck1", "head", "head"),
    ("{Side}Shoulder", "Spine1", "spine3", "{side}_collar"),
    ("{Side}Arm", "{Side}Shoulder", "{side}_shoulder", "{side}_shoulder"),
    ("{Side}ForeArm", "{Side}Arm", "{side}_elbow", "{side}_elbow"),
    ("{Side}Hand", "{Side}ForeArm", "{side}_wrist", "{side}_wrist"),
])
MIXAMO_SPEC = [(f"mixamorig:{n}", None if p is None else f"mixamorig:{p}", pos, r) for n, p, pos, r in _sided([
    ("Hips", None, "pelvis", "pelvis"),
    ("Spine", "Hips", "spine1", "spine1"),
    ("Spine1", "Spine", "spine2", "spine2"),
    ("Spine2", "Spine1", "spine3", "spine3"),
    ("Neck", "Spine2", "neck", "neck"),
    ("Head", "Neck", "head", "head"),
    ("{Side}Shoulder", "Spine2", "{side}_collar", "{side}_collar"),
    ("{Side}Arm", "{Side}Shoulder", "{side}_shoulder", "{side}_shoulder"),
    ("{Side}ForeArm", "{Side}Arm", "{side}_elbow", "{side}_elbow"),
    ("{Side}Hand", "{Side}ForeArm", "{side}_wrist", "{side}_wrist"),
    ("{Side}UpLeg", "Hips", "{side}_hip", "{side}_hip"),
    ("{Side}Leg", "{Side}UpLeg", "{side}_knee", "{side}_knee"),
    ("{Side}Foot", "{Side}Leg", "{side}_ankle", "{side}_ankle"),
    ("{Side}ToeBase", "{Side}Foot", "{side}_foot", "{side}_foot"),
])]


def _cmu_like(walk, path):
    """Y up, centimetres, ZXY everywhere, 120 fps, 12 % larger, facing -Z at rest, arms 20 degrees down."""
    return _write_bvh(path, CMU_SPEC, resample(walk, 120.0), scale=1.12, unit=100.0, world=Z_UP_TO_Y_UP,
                      body_to_file=_turn("y", 180.0), arm_drop=20.0, orders=["ZXY"])


def _mixamo_like(walk, path):
    """Z up, metres, 30 fps, 7 % smaller, A-pose (arms 45 degrees down), every joint with position
    channels, a different rotation order per joint."""
    return _write_bvh(path, MIXAMO_SPEC, resample(walk, 30.0), scale=0.93, unit=1.0, world=np.eye(3),
                      body_to_file=_turn("x", 90.0), arm_drop=45.0, orders=list(EULER_ORDERS),
                      position_channels_everywhere=True)


def test_own_bvh_export_reads_back_within_a_millimetre(tmp_path):
    for name in ("walk", "cartwheel", "getup_facedown"):
        clip = load_builtin_clip(name).motion
        back = load_bvh(save_bvh(tmp_path / f"{name}.bvh", clip))
        assert back.fps == FPS and back.n_frames == clip.n_frames
        error = float((back.joints - clip.joints).norm(dim=-1).max())
        assert error < 1e-3, (name, error)
        assert float((back.features() - clip.features()).abs().max()) < 1e-3


@pytest.mark.parametrize("make", [_cmu_like, _mixamo_like], ids=["cmu", "mixamo"])
def test_other_skeletons_retarget_to_a_clean_smpl_walk(walk, tmp_path, make):
    path = make(walk, tmp_path / "take.bvh")
    motion = load_bvh(path)
    joints = motion.joints
    assert motion.fps == FPS and abs(motion.n_frames - walk.n_frames) <= 1  # 30 fps ends 1/30 s short of the last 20 fps frame
    assert float(bone_lengths(joints).std(dim=0).max()) < 1e-3  # the project skeleton, every frame
    feet = joints[:, [LEFT_FOOT, RIGHT_FOOT], 2]
    assert float(joints[..., 2].min()) > -1e-9 and abs(float(feet.min())) < 0.02
    across = joints[0, RIGHT_HIP] - joints[0, LEFT_HIP]
    assert float(across[0]) > 0 and abs(float(across[1])) < 1e-6  # frame 0 faces +Y
    clips = [load_builtin_clip(name).motion.joints for name in builtin_clip_names()]
    found = retrieval([joints.numpy()], [[c.numpy(), mirror_joints(c).numpy()] for c in clips], builtin_clip_names())
    assert found.nearest == ["walk"], dict(zip(builtin_clip_names(), found.distances[0].round(3)))
    # The same walk as the clip it came from, up to the spine the CMU layout lacks and two resamplings.
    assert frame_aligned_error(joints.numpy(), walk.joints.numpy()) < 0.005  # measured 1.0 mm (CMU), 0.7 mm (Mixamo)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("blender") is None, reason="needs Debian blender (make system-deps)")
@pytest.mark.parametrize("make", [_cmu_like, _mixamo_like], ids=["cmu", "mixamo"])
def test_the_file_skeleton_is_posed_as_blenders_importer_poses_it(walk, tmp_path, make):
    """The reader's forward kinematics of the file's own hierarchy (channel orders, position channels
    on every joint, zero-length bones) against a third-party reader, on every frame."""
    path = make(walk, tmp_path / "take.bvh")
    out = tmp_path / "blender.json"
    subprocess.run(["blender", "-b", "--factory-startup", "--python-exit-code", "1", "--python", str(BLENDER_SCRIPT),
                    "--", str(path), str(out)], check=True, capture_output=True, timeout=600)
    blender = json.loads(out.read_text())
    clip = read_bvh(path)
    positions, _ = source_forward_kinematics(clip)
    ours = positions[:, [clip.names.index(n) for n in blender["names"]]].numpy() @ Z_UP_TO_Y_UP  # Y up -> Blender's Z up
    theirs = np.asarray(blender["heads"])
    assert theirs.shape == ours.shape
    size = np.ptp(ours[0], axis=0).max()
    assert np.linalg.norm(ours - theirs, axis=-1).max() < 1e-4 * size  # 0.2 mm on a 1.7 m body


@pytest.mark.parametrize("unit, per_metre", [("m", 1.0), ("cm", 100.0), ("mm", 1000.0), ("inch", 1 / 0.0254),
                                             ("cmu", 0.45 / 0.0254)])
@pytest.mark.parametrize("up", ["y", "z"])
def test_up_axis_and_unit_are_read_from_the_rest_pose(walk, tmp_path, unit, per_metre, up):
    world, body = (Z_UP_TO_Y_UP, np.eye(3)) if up == "y" else (np.eye(3), _turn("x", 90.0))
    path = _write_bvh(tmp_path / "take.bvh", CMU_SPEC, walk.slice(0, 3), scale=1.0, unit=per_metre, world=world,
                      body_to_file=body, arm_drop=0.0, orders=["ZYX"])
    clip = read_bvh(path)
    turn, metres = world_frame(clip, map_joints(clip)[0])
    assert metres == pytest.approx(1 / per_metre)
    np.testing.assert_allclose(turn.numpy(), world.T, atol=1e-12)  # the file's axes back to the project's


def test_a_skeleton_of_no_human_size_needs_its_unit(walk, tmp_path):
    def write(name, per_metre):
        return _write_bvh(tmp_path / name, CMU_SPEC, walk, scale=1.0, unit=per_metre, world=Z_UP_TO_Y_UP,
                          body_to_file=np.eye(3), arm_drop=0.0, orders=["ZYX"])

    giant = write("giant.bvh", 1e5)
    with pytest.raises(MotionDataError, match="line 2: an ankle-to-head height of .* give the unit"):
        load_bvh(giant)
    # The retargeted motion takes its size from the project skeleton: the unit does not change it.
    same = load_bvh(write("cm.bvh", 100.0)).joints
    assert float((load_bvh(giant, units=1e-5).joints - same).abs().max()) < 1e-5


def test_joint_map_override_names_an_unknown_skeleton(tmp_path):
    clip = load_builtin_clip("walk").motion
    text = save_bvh(tmp_path / "walk.bvh", clip).read_text()
    renamed = text
    for name in JOINT_NAMES:
        renamed = renamed.replace(f"JOINT {name}\n", f"JOINT bone_{J[name]:02d}\n").replace(f"ROOT {name}\n", f"ROOT bone_{J[name]:02d}\n")
    (tmp_path / "anon.bvh").write_text(renamed)
    with pytest.raises(MotionDataError, match="line 2: no humanoid skeleton"):
        load_bvh(tmp_path / "anon.bvh")
    joint_map = tmp_path / "map.json"
    joint_map.write_text(json.dumps({f"bone_{i:02d}": name for i, name in enumerate(JOINT_NAMES)}))
    back = load_bvh(tmp_path / "anon.bvh", joint_map=joint_map)
    assert float((back.joints - clip.joints).norm(dim=-1).max()) < 1e-3
    joint_map.write_text(json.dumps({"bone_00": "hips"}))
    with pytest.raises(MotionDataError, match="unknown SMPL-22 joint 'hips'") as err:
        load_bvh(tmp_path / "anon.bvh", joint_map=joint_map)
    assert str(joint_map) in str(err.value)


def _line_of(lines, prefix):
    return next(i for i, line in enumerate(lines, start=1) if line.startswith(prefix))


def test_bad_files_name_the_file_and_the_line(tmp_path):
    lines = save_bvh(tmp_path / "walk.bvh", load_builtin_clip("walk").motion).read_text().splitlines()
    first_frame = _line_of(lines, "Frame Time:") + 1
    cases = {}
    cases["no_motion"] = (lines[:_line_of(lines, "MOTION") - 1], _line_of(lines, "MOTION") - 1, "no MOTION section")
    short = list(lines)
    short[first_frame + 4] = " ".join(short[first_frame + 4].split()[:-1])
    cases["short_frame"] = (short, first_frame + 5, "frame 5 has 68 values, the hierarchy declares 69 channels")
    nan = list(lines)
    values = nan[first_frame + 9].split()
    values[7] = "nan"
    nan[first_frame + 9] = " ".join(values)
    cases["nan"] = (nan, first_frame + 10, "frame 10 has a non-finite value (nan) in channel 7")
    unknown = [line.replace("ROOT pelvis", "ROOT Armature").replace("JOINT left_hip", "JOINT thigh.L") for line in lines]
    unknown = [line.replace("JOINT right_hip", "JOINT thigh.R") for line in unknown]
    cases["unknown_root"] = (unknown, 2, "no humanoid skeleton recognised under root 'Armature'")
    for name, (content, line, reason) in cases.items():
        path = tmp_path / f"{name}.bvh"
        path.write_text("\n".join(content) + "\n")
        with pytest.raises(MotionDataError) as err:
            load_bvh(path)
        message = str(err.value)
        assert message.startswith(f"{path}: line {line}: ") and reason in message, (name, message)


def test_cli_converts_bvh_to_features(walk, tmp_path):
    path = _cmu_like(walk, tmp_path / "cmu.bvh")
    out = tmp_path / "feats.npy"
    done = subprocess.run([VIMOGEN, "motion", "convert", str(path), "--from", "bvh", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    feats = np.load(out)
    assert feats.shape == (load_bvh(path).n_frames - 1, 276) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, load_bvh(path).features().numpy(), atol=1e-6)
    bad = tmp_path / "bad.bvh"
    bad.write_text("HIERARCHY\nROOT Hips\n{\n  OFFSET 0 0 0\n")
    done = subprocess.run([VIMOGEN, "motion", "convert", str(bad), "--from", "bvh", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"{bad}: line 4: no MOTION section" in done.stderr


def test_bvh_takes_in_the_inbox_join_optical_mocap(walk, tmp_path):
    from vimogen_core.curation.pipeline import curate_samples
    from vimogen_core.curation.source_index import SourceIndex

    inbox = tmp_path / "inbox"
    (inbox / "optical_mocap" / "cmu").mkdir(parents=True)
    take = _cmu_like(walk, inbox / "optical_mocap" / "cmu" / "walk_120fps.bvh")
    take.with_suffix(".txt").write_text("a person walks forward\n")
    (inbox / "optical_mocap" / "cmu" / "broken.bvh").write_text("HIERARCHY\n")
    (inbox / "optical_mocap" / "cmu" / "broken.txt").write_text("a person walks\n")
    (inbox / "optical_mocap" / "cmu" / "broken.npz").write_bytes(b"")  # the same take name twice
    sources = build_sources(tmp_path / "sources", SourcesConfig(clips=("punch",)), sources=("optical_mocap",), inbox=inbox)
    assert sources.by_subset == {"deepmimic": 1, "inbox": 2}
    assert sources.inbox_ignored == {str(inbox / "optical_mocap" / "cmu" / "broken.npz"): "broken.bvh has the same name and is read instead"}
    result = curate_samples(SourceIndex(str(tmp_path / "sources")), tmp_path / "curated")
    manifest = pq.read_table(result.manifest_path).to_pandas()
    assert {"inbox/optical_mocap/cmu/walk_120fps", "inbox/optical_mocap/cmu/walk_120fps~mirror"} <= set(manifest["id"])
    quarantine = {row["id"]: row for row in pq.read_table(result.quarantine_path).to_pylist()}
    broken = quarantine["inbox/optical_mocap/cmu/broken"]
    assert broken["gates"] == ["load"] and "broken.bvh: line 1: no MOTION section" in broken["reasons"][0]
