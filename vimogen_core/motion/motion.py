"""A motion as SMPL-style rotations plus world joints, and the operations curation needs:
canonicalisation, resampling to 20 fps and left-right mirroring."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from vimogen_core.motion import rotations as rot
from vimogen_core.motion.kinematics import forward_kinematics
from vimogen_core.motion.skeleton import FPS, LEFT_HIP, MIRROR_PERM, NUM_JOINTS, RIGHT_HIP

# Reflection across the world x = 0 plane and across the body's sagittal plane (SMPL body frame: left = +X).
_MIRROR_AXES = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)  # the reflection x -> -x
# M R M for M = diag(_MIRROR_AXES) is R with entry (i, j) times m_i m_j: a sign mask, no matmul.
_MIRROR_SIGNS = _MIRROR_AXES[:, None] * _MIRROR_AXES[None, :]


@dataclass(frozen=True)
class Motion:
    """local_rotmats (T, 22, 3, 3): joint 0 is the global root orientation (world Z up);
    joints (T, 22, 3) world positions in metres; offsets (22, 3) the skeleton's rest offsets
    (row 0 = pelvis rest position) when the joints come from forward kinematics."""

    local_rotmats: torch.Tensor
    joints: torch.Tensor
    fps: float
    offsets: np.ndarray | None = None

    def __reduce__(self):
        # Between processes as plain arrays: torch's own tensor pickling moves every tensor through
        # a shared-memory segment and a file-descriptor handshake, which costs more than the copy.
        return _motion_from_arrays, (self.local_rotmats.numpy(), self.joints.numpy(), self.fps, self.offsets)

    @property
    def n_frames(self) -> int:
        return int(self.joints.shape[0])

    @property
    def transl(self) -> torch.Tensor:
        """(T, 3) SMPL translation: pelvis minus its rest position."""
        pelvis_rest = 0.0 if self.offsets is None else torch.as_tensor(self.offsets[0], dtype=self.joints.dtype)
        return self.joints[:, 0] - pelvis_rest

    @classmethod
    def from_rotations(cls, local_rotmats: torch.Tensor, transl: torch.Tensor, fps: float,
                       offsets: np.ndarray | None = None) -> "Motion":
        """Joints by forward kinematics of the (default or given) skeleton."""
        from vimogen_core.motion.skeleton import rest_offsets

        offsets = rest_offsets() if offsets is None else np.asarray(offsets, dtype=np.float64)
        local_rotmats = torch.as_tensor(local_rotmats, dtype=torch.float64)
        joints, _ = forward_kinematics(local_rotmats, torch.as_tensor(transl, dtype=torch.float64), offsets)
        return cls(local_rotmats, joints, float(fps), offsets)

    @classmethod
    def from_smpl(cls, global_orient, body_pose, transl, fps: float, offsets: np.ndarray | None = None,
                  joints=None) -> "Motion":
        """global_orient (T, 3), body_pose (T, 63) axis-angle, transl (T, 3); joints from a body model
        may be given, otherwise forward kinematics of `offsets` (default skeleton) computes them."""
        global_orient = torch.as_tensor(np.asarray(global_orient), dtype=torch.float64)
        body_pose = torch.as_tensor(np.asarray(body_pose), dtype=torch.float64)
        aa = torch.cat([global_orient[:, None, :], body_pose.reshape(-1, NUM_JOINTS - 1, 3)], dim=1)
        local_rotmats = rot.axis_angle_to_matrix(aa)  # (T, 22, 3, 3)
        if joints is None:
            return cls.from_rotations(local_rotmats, torch.as_tensor(np.asarray(transl)), fps, offsets)
        return cls(local_rotmats, torch.as_tensor(np.asarray(joints), dtype=torch.float64), float(fps), offsets)

    def with_joints_from_fk(self, local_rotmats: torch.Tensor, joints_fallback: torch.Tensor,
                            pelvis: torch.Tensor, fps: float | None = None) -> "Motion":
        """A motion with new rotations; joints by FK when the skeleton is known, else the fallback."""
        fps = self.fps if fps is None else fps
        if self.offsets is None:
            return Motion(local_rotmats, joints_fallback, fps, None)
        transl = pelvis - torch.as_tensor(self.offsets[0], dtype=pelvis.dtype)
        joints, _ = forward_kinematics(local_rotmats, transl, self.offsets)
        return Motion(local_rotmats, joints, fps, self.offsets)

    def features(self) -> torch.Tensor:
        """(T-1, 276) float32 features (DESIGN.md section 4)."""
        from vimogen_core.motion.representation import encode_features

        return encode_features(self.local_rotmats, self.joints).float()

    def slice(self, start: int, stop: int) -> "Motion":
        return replace(self, local_rotmats=self.local_rotmats[start:stop], joints=self.joints[start:stop])


def _motion_from_arrays(local_rotmats: np.ndarray, joints: np.ndarray, fps: float, offsets: np.ndarray | None) -> Motion:
    return Motion(torch.from_numpy(local_rotmats), torch.from_numpy(joints), fps, offsets)


def facing_rotation(joints: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotations about Z that turn each frame's hip axis (left -> right hip) onto +X,
    so the body faces +Y; joints (..., 22, 3)."""
    across = joints[..., RIGHT_HIP, :] - joints[..., LEFT_HIP, :]  # (..., 3)
    return rot.rotation_about_z(-torch.atan2(across[..., 1], across[..., 0]))


def canonicalize_arrays(local_rotmats: torch.Tensor, joints: torch.Tensor, set_floor: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """local_rotmats (..., T, 22, 3, 3), joints (..., T, 22, 3): every motion of the batch turned and
    moved so that its frame 0 faces +Y with the pelvis at x = y = 0 (see `canonicalize`)."""
    turn = facing_rotation(joints[..., 0, :, :]).to(joints.dtype)  # (..., 3, 3)
    joints = joints @ turn[..., None, :, :].transpose(-1, -2)  # (..., T, 22, 3)
    shift = torch.zeros(*joints.shape[:-3], 3, dtype=joints.dtype)  # (..., 3)
    shift[..., :2] = joints[..., 0, 0, :2]
    if set_floor:
        shift[..., 2] = joints[..., 2].amin(dim=(-2, -1))
    joints = joints - shift[..., None, None, :]
    local = local_rotmats.clone()
    local[..., 0, :, :] = turn[..., None, :, :] @ local_rotmats[..., 0, :, :]
    return local, joints


def canonicalize(motion: Motion, set_floor: bool = False) -> Motion:
    """Frame 0 faces +Y with its pelvis at x = y = 0; with `set_floor` the lowest joint of the
    whole clip is moved to z = 0 (video-recovered motion has no trustworthy height)."""
    local, joints = canonicalize_arrays(motion.local_rotmats, motion.joints, set_floor)
    return Motion(local, joints, motion.fps, motion.offsets)


def resample(motion: Motion, fps: float = FPS, times: np.ndarray | None = None) -> Motion:
    """Resample in time: slerp for rotations, linear for positions. `times` (T,) gives the source
    frame times in seconds when frames are not evenly spaced. Output covers the input's duration."""
    n_in = motion.n_frames
    if times is None:
        if abs(motion.fps - fps) < 1e-9:
            return motion
        times = np.arange(n_in) / motion.fps
    times = torch.as_tensor(np.asarray(times, dtype=np.float64))
    n_out = int(np.floor(float(times[-1] - times[0]) * fps + 1e-6)) + 1
    target = times[0] + torch.arange(n_out, dtype=torch.float64) / fps
    i1 = torch.searchsorted(times, target, right=True).clamp(1, n_in - 1)
    i0 = i1 - 1
    w = ((target - times[i0]) / (times[i1] - times[i0])).clamp(0.0, 1.0)
    local = rot.slerp_frames(motion.local_rotmats, i0, i1, w[:, None].expand(-1, NUM_JOINTS))
    joints = motion.joints[i0] + (motion.joints[i1] - motion.joints[i0]) * w[:, None, None]
    return motion.with_joints_from_fk(local, joints, joints[:, 0], fps)


def mirror_joints(joints: torch.Tensor) -> torch.Tensor:
    """(..., 22, 3) world joints -> those of the mirror image (x negated, left/right swapped)."""
    return joints[..., list(MIRROR_PERM), :] * _MIRROR_AXES.to(joints.dtype)


def mirror(motion: Motion) -> Motion:
    """Left-right mirror image: reflect x in the world and in the body frame, swap left/right joints."""
    perm = list(MIRROR_PERM)
    local = motion.local_rotmats[:, perm] * _MIRROR_SIGNS.to(motion.local_rotmats.dtype)
    joints = mirror_joints(motion.joints)
    offsets = None if motion.offsets is None else motion.offsets[perm] * np.array([-1.0, 1.0, 1.0])
    mirrored = Motion(local, joints, motion.fps, offsets)
    return mirrored.with_joints_from_fk(local, joints, joints[:, 0]) if offsets is not None else mirrored
