"""Inverse kinematics for joint-only motion (MBench's pose dimensions need rotations).

`ik_fit(joints)`: local rotations (T, 22, 3, 3) from joint positions. Each joint's rotation is the
minimal swing that turns its rest bone direction onto the observed one (Kabsch over the children
where a joint has several: pelvis, spine3); twist about a bone is unobservable from positions and
left at zero; end joints (head, feet, wrists) keep the identity.
"""
from __future__ import annotations

import numpy as np
import torch

from vimogen_core.motion.skeleton import NUM_JOINTS, PARENTS, rest_offsets

IK_SOURCE = "IK fit from joints"
_CHILDREN = {j: [c for c, p in enumerate(PARENTS) if p == j] for j in range(NUM_JOINTS)}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def swing_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., 3, 3) minimal rotations taking unit directions a (..., 3) onto b (..., 3)."""
    a, b = _unit(a), _unit(b)
    axis = np.cross(a, b)
    cos = np.sum(a * b, axis=-1)
    # Opposite directions: any perpendicular axis works for a half turn.
    opposite = cos < -1 + 1e-8
    if opposite.any():
        helper = np.where(np.abs(a[..., :1]) < 0.9, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
        perpendicular = _unit(np.cross(a, helper))
        half_turn = 2 * perpendicular[..., :, None] * perpendicular[..., None, :] - np.eye(3)
    skew = np.zeros(a.shape[:-1] + (3, 3))
    skew[..., 0, 1], skew[..., 0, 2], skew[..., 1, 2] = -axis[..., 2], axis[..., 1], -axis[..., 0]
    skew[..., 1, 0], skew[..., 2, 0], skew[..., 2, 1] = axis[..., 2], -axis[..., 1], axis[..., 0]
    factor = 1.0 / np.maximum(1.0 + cos, 1e-8)
    rotation = np.eye(3) + skew + skew @ skew * factor[..., None, None]
    if opposite.any():
        rotation[opposite] = half_turn[opposite]
    return rotation


def kabsch_rotation(rest: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """rest (K, 3), observed (..., K, 3) unit directions -> (..., 3, 3) best rotation R: R rest ~ observed."""
    h = np.einsum("ki,...kj->...ij", rest, observed)  # (..., 3, 3)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.swapaxes(-1, -2) @ u.swapaxes(-1, -2)))
    fix = np.ones(h.shape[:-2] + (3,))
    fix[..., 2] = d
    return vt.swapaxes(-1, -2) @ (fix[..., :, None] * u.swapaxes(-1, -2))


def ik_fit(joints: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    """joints (T, 22, 3) -> local rotations (T, 22, 3, 3) on the skeleton with rest `offsets`."""
    joints = np.asarray(joints, dtype=np.float64)
    offsets = rest_offsets() if offsets is None else np.asarray(offsets, dtype=np.float64)
    rest_dir = _unit(offsets)
    global_rot = np.zeros(joints.shape[:-2] + (NUM_JOINTS, 3, 3))
    local = np.zeros_like(global_rot)
    for j in range(NUM_JOINTS):  # loop over the tree, vectorised over frames
        kids = _CHILDREN[j]
        parent_rot = np.broadcast_to(np.eye(3), joints.shape[:-2] + (3, 3)) if PARENTS[j] < 0 else global_rot[..., PARENTS[j], :, :]
        observed = _unit(joints[..., kids, :] - joints[..., j : j + 1, :])  # (T, K, 3)
        if len(kids) > 1:
            global_rot[..., j, :, :] = kabsch_rotation(rest_dir[kids], observed)
        elif len(kids) == 1:
            predicted = np.einsum("...ij,j->...i", parent_rot, rest_dir[kids[0]])
            global_rot[..., j, :, :] = swing_rotation(predicted, observed[..., 0, :]) @ parent_rot
        else:
            global_rot[..., j, :, :] = parent_rot
        local[..., j, :, :] = parent_rot.swapaxes(-1, -2) @ global_rot[..., j, :, :]
    return local


def motion_rotations(joints: np.ndarray | None, features: np.ndarray | None) -> tuple[np.ndarray, str]:
    """Local rotations (T, 22, 3, 3) of a motion and where they came from."""
    if features is not None:
        from vimogen_core.motion.representation import features_to_rotations

        local, _ = features_to_rotations(torch.as_tensor(np.asarray(features), dtype=torch.float64))
        return local.numpy(), "276-d rotations"
    if joints is None:
        raise ValueError("a motion needs joints or features")
    return ik_fit(joints), IK_SOURCE
