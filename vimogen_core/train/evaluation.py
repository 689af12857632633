"""Does the model follow its conditioning? Nearest-real-clip retrieval for generated motions.

Distance between two motions (joints (T, 22, 3), world, Z up, 20 fps):

1. Per frame, a descriptor that ignores where the body is and which way it faces, but keeps
   what it does: joint positions relative to the pelvis, turned about the vertical so the hips
   lie along +X (posture, including lying face up or down); the pelvis height; and the joint
   velocities in that same heading frame, in m/s and weighted by `VELOCITY_WEIGHT` (so a walk
   and a run with similar postures differ).
2. Between motions A and B, the symmetric chamfer distance of their descriptor sets:
   mean over A's frames of the distance to the closest frame of B, plus the same from B to A.
   A must show B's postures and B must show A's: a motion that stands still does not match a
   backflip merely because the backflip starts standing. Timing does not matter (no alignment),
   which suits generated motions whose phase is free. A clip is represented by itself and its mirror
image (the captions do not say which side leads, and training sees both), and the distance to the
clip is the smaller of the two.

`frame_aligned_error` is the stricter measure for reference mode, where the output should
follow the reference frame by frame: the mean per-joint distance of pelvis-relative joints.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vimogen_core.motion.skeleton import FPS, LEFT_HIP, RIGHT_HIP

VELOCITY_WEIGHT = 0.1  # 1 m/s of joint speed counts like 10 cm of posture difference


def _heading_turn(joints: np.ndarray) -> np.ndarray:
    """(T, 22, 3) -> (T, 3, 3) rotations about Z putting each frame's hip axis on +X."""
    across = joints[:, RIGHT_HIP] - joints[:, LEFT_HIP]  # (T, 3)
    angle = -np.arctan2(across[:, 1], across[:, 0])
    cos, sin = np.cos(angle), np.sin(angle)
    turn = np.zeros((len(joints), 3, 3))
    turn[:, 0, 0], turn[:, 0, 1], turn[:, 1, 0], turn[:, 1, 1], turn[:, 2, 2] = cos, -sin, sin, cos, 1.0
    return turn


def motion_descriptor(joints: np.ndarray, fps: float = FPS) -> np.ndarray:
    """(T, 22, 3) -> (T-1, 22*3 + 1 + 22*3) per-frame descriptors (see the module docstring)."""
    joints = np.asarray(joints, dtype=np.float64)
    turn = _heading_turn(joints)[:-1]  # (T-1, 3, 3)
    rel = joints[:-1] - joints[:-1, :1]  # (T-1, 22, 3)
    posture = np.einsum("tij,tkj->tki", turn, rel)
    velocity = np.einsum("tij,tkj->tki", turn, (joints[1:] - joints[:-1]) * fps)
    height = joints[:-1, 0, 2:3]  # (T-1, 1)
    n = len(posture)
    return np.concatenate([posture.reshape(n, -1), height, VELOCITY_WEIGHT * velocity.reshape(n, -1)], axis=1)


def chamfer_distance(desc_a: np.ndarray, desc_b: np.ndarray) -> float:
    """Symmetric chamfer distance between descriptor sets (Na, D) and (Nb, D)."""
    d = torch.cdist(torch.from_numpy(desc_a)[None], torch.from_numpy(desc_b)[None])[0]  # (Na, Nb)
    return float(d.min(dim=1).values.mean() + d.min(dim=0).values.mean())


def frame_aligned_error(joints_a: np.ndarray, joints_b: np.ndarray) -> float:
    """Mean per-joint distance (m) of pelvis-relative joints over the common frames."""
    n = min(len(joints_a), len(joints_b))
    a = joints_a[:n] - joints_a[:n, :1]
    b = joints_b[:n] - joints_b[:n, :1]
    return float(np.linalg.norm(a - b, axis=-1).mean())


@dataclass
class RetrievalResult:
    names: list[str]
    distances: np.ndarray  # (N generated, N clips)

    @property
    def nearest(self) -> list[str]:
        return [self.names[i] for i in self.distances.argmin(axis=1)]

    @property
    def correct(self) -> int:
        return int(sum(n == target for n, target in zip(self.nearest, self.names)))


def retrieval(generated_joints: list[np.ndarray], clip_variants: list[list[np.ndarray]], names: list[str]) -> RetrievalResult:
    """Generated motion i was asked for clip i; `clip_variants[j]` holds clip j's joints and its
    variants (e.g. its mirror image). Distance to a clip: the smallest over its variants."""
    clip_desc = [[motion_descriptor(j) for j in variants] for variants in clip_variants]
    gen_desc = [motion_descriptor(j) for j in generated_joints]
    distances = np.array([[min(chamfer_distance(g, c) for c in variants) for variants in clip_desc] for g in gen_desc])
    return RetrievalResult(list(names), distances)
