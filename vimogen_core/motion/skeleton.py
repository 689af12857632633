"""The SMPL 22-joint skeleton used by the 276-d representation, and the project's rest pose.

The rest pose is expressed in the SMPL body frame (Y up, facing +Z, the body's left = +X), so
SMPL-style rotations apply unchanged; the world frame of motions is Z up (the root orientation
carries the axis change, as in AMASS).
"""
from __future__ import annotations

import numpy as np

FPS = 20
NUM_JOINTS = 22

JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
)
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
# SMPL proper has 24 joints: the two hands hang off the wrists.
SMPL24_PARENTS = PARENTS + (20, 21)

LEFT_ANKLE, RIGHT_ANKLE, LEFT_FOOT, RIGHT_FOOT = 7, 8, 10, 11
LEFT_HIP, RIGHT_HIP = 1, 2


def _mirror_permutation(names: tuple[str, ...]) -> tuple[int, ...]:
    def swap(name: str) -> str:
        if name.startswith("left_"):
            return "right_" + name[5:]
        if name.startswith("right_"):
            return "left_" + name[6:]
        return name

    return tuple(names.index(swap(n)) for n in names)


MIRROR_PERM = _mirror_permutation(JOINT_NAMES)

# Rest offsets (joint minus parent) of a plausible adult, metres, SMPL body frame; the left side
# is written out and the right side mirrored so the skeleton is exactly symmetric.
_LEFT_AND_CENTRE_OFFSETS = {
    "pelvis": (0.0, 0.0, 0.0),
    "left_hip": (0.070, -0.090, 0.000),
    "spine1": (0.000, 0.110, -0.020),
    "left_knee": (0.035, -0.385, 0.010),
    "spine2": (0.000, 0.135, 0.028),
    "left_ankle": (-0.015, -0.400, -0.050),
    "spine3": (0.000, 0.055, 0.000),
    "left_foot": (0.030, -0.055, 0.120),
    "neck": (0.000, 0.215, -0.040),
    "left_collar": (0.075, 0.120, -0.030),
    "head": (0.000, 0.065, 0.050),
    "left_shoulder": (0.120, 0.045, -0.015),
    "left_elbow": (0.255, -0.015, -0.020),
    "left_wrist": (0.260, 0.010, -0.005),
    "left_hand": (0.085, -0.010, -0.010),
}


def rest_offsets24() -> np.ndarray:
    """(24, 3) rest offsets of the 24 SMPL joints (22 + two hands)."""
    names = JOINT_NAMES + ("left_hand", "right_hand")
    out = np.zeros((24, 3))
    for i, name in enumerate(names):
        if name.startswith("right_"):
            out[i] = np.asarray(_LEFT_AND_CENTRE_OFFSETS["left_" + name[6:]]) * (-1.0, 1.0, 1.0)
        else:
            out[i] = _LEFT_AND_CENTRE_OFFSETS[name]
    return out


def rest_offsets() -> np.ndarray:
    """(22, 3) rest offsets of the 22-joint skeleton; row 0 is the pelvis rest position."""
    return rest_offsets24()[:NUM_JOINTS].copy()


def offsets_from_rest_joints(rest_joints: np.ndarray) -> np.ndarray:
    """(22, 3) offsets from (>=22, 3) rest joint positions, e.g. a body model's."""
    rest_joints = np.asarray(rest_joints, dtype=np.float64)[:NUM_JOINTS]
    parents = np.asarray(PARENTS)
    offsets = rest_joints.copy()
    offsets[1:] -= rest_joints[parents[1:]]
    return offsets


def bone_lengths(joints):
    """(..., 21) lengths of the bones from each non-root joint to its parent."""
    child = joints[..., 1:, :]
    parent = joints[..., list(PARENTS[1:]), :]
    diff = child - parent
    return (diff * diff).sum(-1) ** 0.5
