"""Export motions to files other tools read: joints `.npy`, AMASS-like SMPL `.npz`, BVH.

BVH layout: the 22-joint SMPL hierarchy with the skeleton's rest offsets (SMPL body frame: the
rest pose stands Y up facing +Z), world Y up (the project's Z-up world turned by (x, y, z) ->
(x, z, -y), so a canonical clip walks along -Z), metres. The root has position channels (the
pelvis position; its OFFSET is zero) and every joint three rotation channels. Each joint gets
the Euler order (of the six Tait-Bryan orders) whose middle angle stays farthest from +-90
degrees over the clip, so no joint passes near gimbal lock; angles are unwrapped over time.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from vimogen_core.files import atomic_path, atomic_write_text
from vimogen_core.motion.kinematics import forward_kinematics
from vimogen_core.motion.motion import Motion
from vimogen_core.motion.skeleton import FPS, JOINT_NAMES, NUM_JOINTS, PARENTS

EULER_ORDERS = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")  # intrinsic: R = R_first @ R_second @ R_third
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
END_SITE_LENGTH = 0.1  # metres past each leaf joint, along its bone


def save_joints_npy(path: str | os.PathLike, joints) -> Path:
    """Joints (T, 22, 3) -> float32 `.npy`."""
    joints = np.asarray(joints.detach().cpu() if isinstance(joints, torch.Tensor) else joints, dtype=np.float32)
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"joints must have shape (T, {NUM_JOINTS}, 3), got {joints.shape}")
    if not np.isfinite(joints).all():
        raise ValueError("joints have non-finite values")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a handle: numpy appends no ".npy"
        np.save(handle, joints)
    return path


def save_smpl_npz(path: str | os.PathLike, feats_or_motion, fps: float = FPS, betas=None,
                  gender: str = "neutral") -> Path:
    """(T, 276) features or a Motion -> AMASS-like `.npz`: poses (T, 72), trans (T, 3), betas,
    gender, mocap_framerate. From features, trans is relative to the default skeleton's rest pelvis."""
    from vimogen_core.motion.representation import check_features, features_to_smpl
    from vimogen_core.sources.amass import write_amass_npz

    if isinstance(feats_or_motion, Motion):
        return write_amass_npz(path, feats_or_motion, betas=betas, gender=gender)
    feats = check_features(np.asarray(feats_or_motion), path)
    return write_amass_npz(path, features_to_smpl(feats), fps=fps, betas=betas, gender=gender)


def estimate_offsets(local_rotmats: torch.Tensor, joints: torch.Tensor) -> np.ndarray:
    """(22, 3) rest offsets that best explain joints (T, 22, 3) under local_rotmats (T, 22, 3, 3):
    each bone vector brought into its parent's frame, averaged over frames (exact for FK data)."""
    zero = torch.zeros(local_rotmats.shape[0], 3, dtype=local_rotmats.dtype)
    _, global_rotmats = forward_kinematics(local_rotmats, zero, torch.zeros(NUM_JOINTS, 3, dtype=local_rotmats.dtype))
    parents = list(PARENTS[1:])
    bones = joints[:, 1:] - joints[:, parents]  # (T, 21, 3)
    local_bones = (global_rotmats[:, parents].transpose(-1, -2) @ bones[..., None])[..., 0]
    offsets = torch.zeros(NUM_JOINTS, 3, dtype=joints.dtype)
    offsets[1:] = local_bones.mean(0)
    return offsets.numpy()


def _depth_first(parents=PARENTS) -> list[int]:
    order, stack = [], [0]
    while stack:
        joint = stack.pop()
        order.append(joint)
        stack.extend(sorted((c for c, p in enumerate(parents) if p == joint), reverse=True))
    return order


def _euler_per_joint(rotations: np.ndarray) -> tuple[list[str], np.ndarray]:
    """rotations (T, 22, 3, 3) -> per-joint orders and angles (T, 22, 3) in degrees."""
    n_frames = rotations.shape[0]
    flat = Rotation.from_matrix(rotations.reshape(-1, 3, 3))
    orders, angles = [], np.zeros((n_frames, NUM_JOINTS, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # gimbal-lock warnings of the orders not chosen
        candidates = {order: flat.as_euler(order).reshape(n_frames, NUM_JOINTS, 3) for order in EULER_ORDERS}
    worst_middle = np.stack([np.abs(candidates[o][..., 1]).max(0) for o in EULER_ORDERS])  # (6, 22)
    best = worst_middle.argmin(0)
    for joint in range(NUM_JOINTS):
        order = EULER_ORDERS[best[joint]]
        orders.append(order)
        angles[:, joint] = np.unwrap(candidates[order][:, joint], axis=0)
    return orders, np.degrees(angles)


def save_bvh(path: str | os.PathLike, motion: Motion) -> Path:
    """A Motion -> BVH (see the module docstring). Offsets: the motion's skeleton, or estimated
    from its joints and rotations when it has none (e.g. a motion decoded from features)."""
    local = motion.local_rotmats.to(torch.float64)
    joints = motion.joints.to(torch.float64)
    offsets = motion.offsets if motion.offsets is not None else estimate_offsets(local, joints)
    rotations = local.numpy().copy()  # (T, 22, 3, 3)
    rotations[:, 0] = Z_UP_TO_Y_UP @ rotations[:, 0]
    orders, angles = _euler_per_joint(rotations)
    root_position = joints[:, 0].numpy() @ Z_UP_TO_Y_UP.T  # (T, 3)

    order = _depth_first()
    children = {j: [c for c, p in enumerate(PARENTS) if p == j] for j in range(NUM_JOINTS)}
    lines = ["HIERARCHY"]

    def write_joint(joint: int, depth: int) -> None:
        pad = "  " * depth
        offset = np.zeros(3) if joint == 0 else offsets[joint]
        rotation_channels = " ".join(f"{axis}rotation" for axis in orders[joint])
        lines.append(f"{pad}{'ROOT' if joint == 0 else 'JOINT'} {JOINT_NAMES[joint]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  OFFSET {offset[0]:.6f} {offset[1]:.6f} {offset[2]:.6f}")
        if joint == 0:
            lines.append(f"{pad}  CHANNELS 6 Xposition Yposition Zposition {rotation_channels}")
        else:
            lines.append(f"{pad}  CHANNELS 3 {rotation_channels}")
        for child in children[joint]:
            write_joint(child, depth + 1)
        if not children[joint]:
            tip = offsets[joint] / max(np.linalg.norm(offsets[joint]), 1e-9) * END_SITE_LENGTH
            lines.extend([f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET {tip[0]:.6f} {tip[1]:.6f} {tip[2]:.6f}",
                          f"{pad}  }}"])
        lines.append(f"{pad}}}")

    write_joint(0, 0)
    lines += ["MOTION", f"Frames: {motion.n_frames}", f"Frame Time: {1.0 / motion.fps:.8f}"]
    table = np.concatenate([root_position, angles[:, order].reshape(motion.n_frames, -1)], axis=1)
    body = io.StringIO()
    np.savetxt(body, table, fmt="%.6f")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, "\n".join(lines) + "\n" + body.getvalue())
