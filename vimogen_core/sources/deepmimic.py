"""The DeepMimic `humanoid3d_*` motion-capture clips that ship inside `pybullet`, retargeted
onto the SMPL 22-joint skeleton, resampled to 20 fps and canonicalised.

DeepMimic frame layout (44 floats): duration, root position (Y up), root quaternion, then chest,
neck, right hip quaternions, right knee angle, right ankle, right shoulder quaternions, right
elbow angle, and the same for the left side; quaternions are w-first, knees and elbows turn about
the DeepMimic body z axis. The DeepMimic body faces +X with its right side on +Z.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from vimogen_core.errors import MotionDataError
from vimogen_core.motion import rotations as rot
from vimogen_core.motion.motion import Motion, canonicalize, resample
from vimogen_core.motion.skeleton import FPS, JOINT_NAMES, rest_offsets
from vimogen_core.sources.captions import CLIP_CAPTIONS

BUILTIN_CLIPS = (
    "walk", "run", "jump", "kick", "punch", "spin", "spinkick", "backflip", "cartwheel",
    "crawl", "roll", "dance_a", "dance_b", "getup_faceup", "getup_facedown",
)
FRAME_WIDTH = 44
# DeepMimic thigh + shin lengths in metres (URDF lengths at the 0.25 scale DeepMimic uses).
_DEEPMIMIC_LEG = (1.686184 + 1.639480) * 0.25

# Constant frame changes. DeepMimic body (front +X, up +Y, right +Z) -> SMPL body (front +Z,
# up +Y, left +X): a -90 degree turn about Y. DeepMimic world (Y up) -> project world (Z up).
_BODY = rot.axis_angle_to_matrix(torch.tensor([0.0, -np.pi / 2, 0.0], dtype=torch.float64))
_WORLD = rot.axis_angle_to_matrix(torch.tensor([np.pi / 2, 0.0, 0.0], dtype=torch.float64))
# DeepMimic arms hang down in the rest pose, SMPL arms point sideways: turn the SMPL arm chain
# about the body's forward axis so its bones follow the DeepMimic ones.
_LEFT_ARM_REST = rot.rotation_about_z(torch.tensor(-np.pi / 2, dtype=torch.float64))
_RIGHT_ARM_REST = rot.rotation_about_z(torch.tensor(np.pi / 2, dtype=torch.float64))


@dataclass(frozen=True)
class Clip:
    """A captioned motion: 20 fps, canonicalised."""

    name: str
    motion: Motion
    captions: list[str]
    video_caption: str
    source: str = "optical_mocap"
    meta: dict = field(default_factory=dict)


def motions_dir() -> Path:
    import pybullet_data

    return Path(pybullet_data.getDataPath()) / "data" / "motions"


def builtin_clip_names() -> list[str]:
    return list(BUILTIN_CLIPS)


def builtin_clip_path(name: str) -> Path:
    if name not in BUILTIN_CLIPS:
        raise MotionDataError(name, f"unknown built-in clip; choose one of: {', '.join(BUILTIN_CLIPS)}")
    return motions_dir() / f"humanoid3d_{name}.txt"


def read_deepmimic_frames(path: str | os.PathLike) -> tuple[np.ndarray, bool]:
    """The (N, 44) frame table of a DeepMimic motion file, validated, and whether it loops."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise MotionDataError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MotionDataError(path, f"not valid JSON ({err.__class__.__name__}: {err})") from None
    if not isinstance(data, dict) or "Frames" not in data:
        raise MotionDataError(path, "not a DeepMimic motion: no 'Frames' list")
    try:
        frames = np.asarray(data["Frames"], dtype=np.float64)
    except (TypeError, ValueError):
        raise MotionDataError(path, "'Frames' is not a rectangular table of numbers") from None
    if frames.ndim != 2 or frames.shape[1] != FRAME_WIDTH:
        raise MotionDataError(path, f"expected frames of {FRAME_WIDTH} numbers, got shape {frames.shape}")
    if len(frames) < 2:
        raise MotionDataError(path, "fewer than 2 frames")
    if not np.isfinite(frames).all():
        raise MotionDataError(path, "non-finite values in frames")
    if (frames[:-1, 0] <= 0).any():
        raise MotionDataError(path, "frame durations must be positive")
    return frames, data.get("Loop") == "wrap"


def _yaw_matrix(quat_wxyz: torch.Tensor) -> torch.Tensor:
    """The heading part (rotation about DeepMimic's up axis Y) of a root orientation."""
    forward = rot.quat_to_matrix(quat_wxyz)[..., :, 0]  # the body's +X axis in the world
    angle = torch.atan2(-forward[..., 2], forward[..., 0])
    return rot.axis_angle_to_matrix(torch.stack([torch.zeros_like(angle), angle, torch.zeros_like(angle)], -1))


def extend_frames(frames: np.ndarray, loops: bool, min_duration: float) -> np.ndarray:
    """Lengthen a clip to at least `min_duration` seconds. A looping clip repeats its cycle, each
    cycle continuing from where the previous one ended (heading and position); a one-shot clip
    holds its first and last poses, as a performer standing before and after the action."""
    duration = float(frames[:-1, 0].sum())
    if duration >= min_duration:
        return frames
    if not loops:
        step = float(np.median(frames[:-1, 0]))
        pad = int(np.ceil((min_duration - duration) / step / 2)) + 1
        held = np.concatenate([np.repeat(frames[:1], pad, 0), frames, np.repeat(frames[-1:], pad, 0)])
        held[:, 0] = np.where(np.arange(len(held)) < pad, step, held[:, 0])
        held[pad + len(frames) - 1:, 0] = step  # the clip's last frame now has successors
        return held
    f = torch.as_tensor(frames, dtype=torch.float64)
    turn = _yaw_matrix(f[-1, 4:8]) @ _yaw_matrix(f[0, 4:8]).T  # heading change over one cycle
    start = f[0, 1:4] * torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    end = f[-1, 1:4] * torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    cycle, cycles = f[:-1], [f[:-1]]
    while sum(len(c) for c in cycles) * float(frames[0, 0]) < min_duration + 1e-9:
        nxt = cycle.clone()
        nxt[:, 1:4] = (cycle[:, 1:4] - start) @ turn.T + end
        nxt[:, 4:8] = rot.matrix_to_quat(turn @ rot.quat_to_matrix(cycle[:, 4:8]))
        cycles.append(nxt)
        cycle = nxt
    return torch.cat(cycles + [cycles[-1][-1:]]).numpy()


def _retarget(frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepMimic frames -> SMPL local rotations (N, 22, 3, 3), pelvis positions (N, 3)."""
    f = torch.as_tensor(frames, dtype=torch.float64)
    quat = lambda start: rot.quat_to_matrix(f[:, start:start + 4])  # noqa: E731
    hinge = lambda col: rot.rotation_about_z(f[:, col])  # noqa: E731  knee/elbow about body z
    dm = {
        "root": quat(4), "chest": quat(8), "neck": quat(12),
        "right_hip": quat(16), "right_knee": hinge(20), "right_ankle": quat(21),
        "right_shoulder": quat(25), "right_elbow": hinge(29),
        "left_hip": quat(30), "left_knee": hinge(34), "left_ankle": quat(35),
        "left_shoulder": quat(39), "left_elbow": hinge(43),
    }
    to_smpl = lambda r: _BODY @ r @ _BODY.T  # noqa: E731  a DeepMimic local rotation in SMPL axes
    n = len(frames)
    local = torch.eye(3, dtype=torch.float64).expand(n, len(JOINT_NAMES), 3, 3).clone()
    index = {name: i for i, name in enumerate(JOINT_NAMES)}
    local[:, 0] = _WORLD @ dm["root"] @ _BODY.T
    spine_part = rot.matrix_power(to_smpl(dm["chest"]), 1.0 / 3.0)  # chest bend spread over 3 vertebrae
    for name in ("spine1", "spine2", "spine3"):
        local[:, index[name]] = spine_part
    neck_part = rot.matrix_power(to_smpl(dm["neck"]), 0.5)
    local[:, index["neck"]] = neck_part
    local[:, index["head"]] = neck_part
    for side, arm_rest in (("left", _LEFT_ARM_REST), ("right", _RIGHT_ARM_REST)):
        for joint in ("hip", "knee", "ankle"):
            local[:, index[f"{side}_{joint}"]] = to_smpl(dm[f"{side}_{joint}"])
        local[:, index[f"{side}_shoulder"]] = to_smpl(dm[f"{side}_shoulder"]) @ arm_rest
        local[:, index[f"{side}_elbow"]] = arm_rest.T @ to_smpl(dm[f"{side}_elbow"]) @ arm_rest
    offsets = rest_offsets()
    smpl_leg = np.linalg.norm(offsets[index["left_knee"]]) + np.linalg.norm(offsets[index["left_ankle"]])
    pelvis = (f[:, 1:4] @ _WORLD.T) * (smpl_leg / _DEEPMIMIC_LEG)
    return local, pelvis


def load_deepmimic_file(path: str | os.PathLike, fps: float = FPS, min_frames: int = 0) -> Motion:
    """A DeepMimic motion file -> a canonicalised SMPL-skeleton Motion at `fps`, standing on z = 0.
    `min_frames` lengthens short clips (see `extend_frames`) to at least that many frames."""
    frames, loops = read_deepmimic_frames(path)
    if min_frames:
        frames = extend_frames(frames, loops, (min_frames - 1) / fps)
    local, pelvis = _retarget(frames)
    offsets = rest_offsets()
    times = np.concatenate([[0.0], np.cumsum(frames[:-1, 0])])  # frame durations vary in some clips
    motion = Motion.from_rotations(local, pelvis - torch.as_tensor(offsets[0]), 1.0 / frames[0, 0], offsets)
    motion = resample(motion, fps, times=times)
    return canonicalize(motion, set_floor=True)


@lru_cache(maxsize=None)
def _load_builtin_motion(name: str, min_frames: int) -> Motion:
    return load_deepmimic_file(builtin_clip_path(name), min_frames=min_frames)


def load_builtin_clip(name: str, min_frames: int = 0) -> Clip:
    """A built-in clip at 20 fps; `min_frames` > 0 loops (or, for one-shot clips, pads) it to that length."""
    motion = _load_builtin_motion(name, int(min_frames))
    captions = CLIP_CAPTIONS[name]
    return Clip(name=name, motion=motion, captions=list(captions["motion"]), video_caption=captions["video"],
                meta={"file": str(builtin_clip_path(name))})


def load_builtin_clips(min_frames: int = 0) -> list[Clip]:
    return [load_builtin_clip(name, min_frames) for name in BUILTIN_CLIPS]
