"""Export motions to files other tools read: joints `.npy`, AMASS-like SMPL `.npz`, BVH; and
`export_features`, the one dispatcher from 276-d features to any export format (GLB and video too).

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
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from vimogen_core.files import atomic_path, atomic_write_text
from vimogen_core.motion import rotations as rot
from vimogen_core.motion.kinematics import forward_kinematics
from vimogen_core.motion.motion import Motion
from vimogen_core.motion.skeleton import FPS, JOINT_NAMES, NUM_JOINTS, PARENTS

if TYPE_CHECKING:
    from vimogen_core.motion.gltf import BodyBuilder

EULER_ORDERS = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")  # intrinsic: R = R_first @ R_second @ R_third
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
END_SITE_LENGTH = 0.1  # metres past each leaf joint, along its bone
SMPL_POSE_DIM = 72  # root + 23 body joints, what `write_amass_npz` writes (the two hand joints at rest)


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


def smpl_params_of(motion: Motion) -> dict[str, np.ndarray]:
    """global_orient (T, 3), body_pose (T, 63), transl (T, 3) of a Motion (float64 numpy)."""
    aa = rot.matrix_to_axis_angle(motion.local_rotmats.to(torch.float64)).numpy()  # (T, 22, 3)
    return {"global_orient": aa[:, 0], "body_pose": aa[:, 1:].reshape(len(aa), -1),
            "transl": motion.transl.to(torch.float64).numpy()}


def write_amass_npz(path: str | os.PathLike, motion_or_params: Motion | dict, fps: float | None = None,
                    betas: np.ndarray | None = None, gender: str = "neutral") -> Path:
    """Write an AMASS-like `.npz`: poses (T, 72), trans (T, 3), betas (10,), gender, mocap_framerate.

    motion_or_params: a Motion (its rotations and SMPL translation; fps defaults to its own) or a
    dict with global_orient (T, 3), body_pose (T, 63), transl (T, 3)."""
    if isinstance(motion_or_params, Motion):
        params = smpl_params_of(motion_or_params)
        fps = motion_or_params.fps if fps is None else fps
    else:
        params = {key: np.asarray(motion_or_params[key], dtype=np.float64)
                  for key in ("global_orient", "body_pose", "transl")}
    if fps is None:
        raise ValueError("fps is required when writing SMPL parameters")
    n_frames = len(params["transl"])
    poses = np.zeros((n_frames, SMPL_POSE_DIM))
    poses[:, :3] = params["global_orient"].reshape(n_frames, 3)
    poses[:, 3: 3 * NUM_JOINTS] = params["body_pose"].reshape(n_frames, 3 * (NUM_JOINTS - 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a handle: numpy appends no ".npz"
        np.savez_compressed(handle, poses=poses, trans=params["transl"].reshape(n_frames, 3),
                            betas=np.zeros(10) if betas is None else np.asarray(betas, dtype=np.float64),
                            gender=np.array(gender), mocap_framerate=np.array(float(fps)))
    return path


def save_smpl_npz(path: str | os.PathLike, feats_or_motion, fps: float = FPS, betas=None,
                  gender: str = "neutral") -> Path:
    """(T, 276) features or a Motion -> AMASS-like `.npz`: poses (T, 72), trans (T, 3), betas,
    gender, mocap_framerate. From features, trans is relative to the default skeleton's rest pelvis."""
    from vimogen_core.motion.representation import check_features, features_to_smpl

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


def animated_joints(feats: np.ndarray) -> np.ndarray:
    """(T, 22, 3): the joints a BVH or glTF export of features (T, 276) animates: the rotation
    channels posing the offsets `estimate_offsets` finds, at the pelvis of the position channels."""
    from vimogen_core.motion.representation import features_to_joints, features_to_rotations

    f = torch.as_tensor(np.asarray(feats), dtype=torch.float64)
    local, _ = features_to_rotations(f)
    joints = features_to_joints(f)
    return forward_kinematics(local, joints[:, 0], torch.from_numpy(estimate_offsets(local, joints)))[0].numpy()


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


def export_features(feats: np.ndarray, fmt: str, out: str | os.PathLike, body: BodyBuilder | None = None) -> None:
    """Write (T, 276) features as joints .npy, SMPL .npz, BVH, GLB (with the mesh `body` builds
    skinned, when given), or a rendered MP4/GIF."""
    from vimogen_core.motion import gltf, render  # gltf builds on this module; render pulls in matplotlib
    from vimogen_core.motion.representation import features_to_joints, features_to_rotations

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    feats_t = torch.as_tensor(feats, dtype=torch.float64)
    joints = features_to_joints(feats_t)
    if fmt == "npy":
        save_joints_npy(out, joints.float().numpy())
    elif fmt == "npz":
        save_smpl_npz(out, feats)
    elif fmt in ("bvh", "glb"):
        local, _ = features_to_rotations(feats_t)
        motion = Motion(local, joints, float(FPS))
        if fmt == "bvh":
            save_bvh(out, motion)
        else:
            gltf.save_glb(out, motion, body=body)
    else:
        render.render_motion(joints.numpy(), out, fps=FPS)
