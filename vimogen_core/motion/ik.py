"""Inverse kinematics: local rotations (T, 22, 3, 3) that pose the skeleton along joint positions.

`ik_fit(joints)`: each joint's rotation is the minimal swing that turns its rest bone direction onto
the observed one (Kabsch over the children where a joint has several: pelvis, spine3). Twist about a
bone is unobservable from positions: left at zero, or kept from `reference` rotations (generated
ones, which the clean-up fits to the cleaned positions); end joints (head, feet, wrists) keep the
identity or their reference rotation.
"""
from __future__ import annotations

import numpy as np

from vimogen_core.motion.skeleton import NUM_JOINTS, PARENTS, rest_offsets

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


def ik_fit(joints: np.ndarray, offsets: np.ndarray | None = None, reference: np.ndarray | None = None) -> np.ndarray:
    """joints (T, 22, 3) -> local rotations (T, 22, 3, 3) on the skeleton with rest `offsets`.
    With `reference` local rotations (T, 22, 3, 3), each joint starts from its reference rotation
    instead of the identity: a one-child joint keeps its twist about the bone, an end joint and the
    root their whole rotation."""
    joints = np.asarray(joints, dtype=np.float64)
    offsets = rest_offsets() if offsets is None else np.asarray(offsets, dtype=np.float64)
    rest_dir = _unit(offsets)
    global_rot = np.zeros(joints.shape[:-2] + (NUM_JOINTS, 3, 3))
    local = np.zeros_like(global_rot)
    for j in range(NUM_JOINTS):  # loop over the tree, vectorised over frames
        kids = _CHILDREN[j]
        parent_rot = np.broadcast_to(np.eye(3), joints.shape[:-2] + (3, 3)) if PARENTS[j] < 0 else global_rot[..., PARENTS[j], :, :]
        start = parent_rot if reference is None else parent_rot @ reference[..., j, :, :]
        observed = _unit(joints[..., kids, :] - joints[..., j : j + 1, :])  # (T, K, 3)
        if len(kids) > 1 and (reference is None or PARENTS[j] >= 0):
            global_rot[..., j, :, :] = kabsch_rotation(rest_dir[kids], observed)
        elif len(kids) > 1:  # the root keeps its reference: the body's heading, which a hip axis gets wrong
            global_rot[..., j, :, :] = start
        elif len(kids) == 1:
            predicted = np.einsum("...ij,j->...i", start, rest_dir[kids[0]])
            global_rot[..., j, :, :] = swing_rotation(predicted, observed[..., 0, :]) @ start
        else:
            global_rot[..., j, :, :] = start
        local[..., j, :, :] = parent_rot.swapaxes(-1, -2) @ global_rot[..., j, :, :]
    return local
