"""The 276-d per-frame motion features (DESIGN.md section 4) and their normaliser.

From N frames of rotations and joints, `encode_features` gives N-1 feature frames, because the
velocity channels are forward differences x[t+1] - x[t]. Two decodes give joints back: reading
the position channels, or integrating the velocity channels from frame 0 (what the released
evaluation does); on clean data they agree.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from vimogen_core.errors import MotionDataError
from vimogen_core.files import atomic_path
from vimogen_core.motion import rotations as rot
from vimogen_core.motion.skeleton import MIRROR_PERM, NUM_JOINTS

FEATURE_DIM = 276
REF_FEATURE_DIM = 138

POSE6D = slice(0, 126)
JOINT_POS = slice(126, 192)
JOINT_VEL = slice(192, 258)
ROOT_ROT6D = slice(258, 264)
ROOT_ANGVEL = slice(264, 270)
ROOT_TRANS = slice(270, 273)
ROOT_VEL = slice(273, 276)
# The reference-motion branch sees body pose, root orientation and root angular velocity.
REF_INDEX = np.r_[0:126, 258:270]


def encode_features(local_rotmats: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
    """local_rotmats (..., T, 22, 3, 3), joints (..., T, 22, 3) world -> (..., T-1, 276)."""
    if joints.shape[-3] < 2:
        raise ValueError(f"need at least 2 frames to encode features, got {joints.shape[-3]}")
    lead = joints.shape[:-3]
    t = joints.shape[-3] - 1
    root = local_rotmats[..., :, 0, :, :]  # (..., T, 3, 3)
    pieces = [
        rot.matrix_to_rot6d(local_rotmats[..., :-1, 1:, :, :]).reshape(*lead, t, 126),
        joints[..., :-1, :, :].reshape(*lead, t, 66),
        (joints[..., 1:, :, :] - joints[..., :-1, :, :]).reshape(*lead, t, 66),
        rot.matrix_to_rot6d(root[..., :-1, :, :]),
        rot.matrix_to_rot6d(root[..., 1:, :, :] @ root[..., :-1, :, :].transpose(-1, -2)),
        joints[..., :-1, 0, :],
        joints[..., 1:, 0, :] - joints[..., :-1, 0, :],
    ]
    return torch.cat(pieces, dim=-1)


def _mirror_feature_map() -> tuple[np.ndarray, np.ndarray]:
    """(source channel, sign) per feature channel of the mirror image: a reflection x -> -x with
    left/right swapped turns every rotation R into M R M (rot6d entry (i, j) times m_i m_j) and every
    position or velocity v into M v, and moves each joint's channels to its mirror joint."""
    axes = np.array([-1.0, 1.0, 1.0])
    rot6d_sign = np.array([axes[i] * axes[j] for i in range(3) for j in range(2)])  # [R00, R01, R10, ...]
    source = np.arange(FEATURE_DIM)
    sign = np.ones(FEATURE_DIM)
    for joint in range(1, NUM_JOINTS):  # body pose: joints 1..21, 6 channels each
        new, old = POSE6D.start + 6 * (joint - 1), POSE6D.start + 6 * (MIRROR_PERM[joint] - 1)
        source[new:new + 6], sign[new:new + 6] = np.arange(old, old + 6), rot6d_sign
    for block in (JOINT_POS, JOINT_VEL):
        for joint in range(NUM_JOINTS):
            new, old = block.start + 3 * joint, block.start + 3 * MIRROR_PERM[joint]
            source[new:new + 3], sign[new:new + 3] = np.arange(old, old + 3), axes
    for block in (ROOT_ROT6D, ROOT_ANGVEL):
        sign[block] = rot6d_sign
    for block in (ROOT_TRANS, ROOT_VEL):
        sign[block] = axes
    return source, sign


_MIRROR_SOURCE, _MIRROR_SIGN = _mirror_feature_map()


def mirror_features(feats: np.ndarray) -> np.ndarray:
    """(..., T, 276) -> the features of the mirror image, exactly what encoding `motion.mirror` of
    the motion gives (only signs and channel order change), without re-encoding."""
    return feats[..., _MIRROR_SOURCE] * _MIRROR_SIGN.astype(feats.dtype)


def turn_and_move_features(feats: torch.Tensor, yaw: float, shift_xy: tuple[float, float]) -> torch.Tensor:
    """(..., T, 276) -> the features of the same motion turned by `yaw` (radians) about Z and then
    moved by `shift_xy` on the ground, exactly what encoding the moved motion gives: positions turn
    and move, velocities turn, the root orientation R becomes Rz R and its per-frame change
    A becomes Rz A Rz^T; the body's local rotations do not change."""
    turn = rot.rotation_about_z(torch.tensor(float(yaw), dtype=torch.float64)).to(feats.dtype)  # (3, 3)
    shift = torch.tensor([shift_xy[0], shift_xy[1], 0.0], dtype=feats.dtype)
    out = feats.clone()
    lead = feats.shape[:-1]
    for block, moved in ((JOINT_POS, True), (JOINT_VEL, False), (ROOT_TRANS, True), (ROOT_VEL, False)):
        vectors = feats[..., block].reshape(*lead, -1, 3) @ turn.T
        out[..., block] = (vectors + shift if moved else vectors).reshape(*lead, -1)
    # On the two stored columns directly (linear, so exact for generated, not quite orthonormal ones):
    # Rz has e_z as its third column, so the first two columns of A Rz^T mix only A's first two.
    root = feats[..., ROOT_ROT6D].reshape(*lead, 3, 2)
    out[..., ROOT_ROT6D] = (turn @ root).reshape(*lead, 6)
    change = feats[..., ROOT_ANGVEL].reshape(*lead, 3, 2)
    out[..., ROOT_ANGVEL] = (turn @ change @ turn.T[:2, :2]).reshape(*lead, 6)
    return out


def facing_turn_angle(root: torch.Tensor) -> torch.Tensor:
    """The turn about Z (radians, (...)) that makes a body with root orientation `root` (..., 3, 3)
    face +Y: its x axis (SMPL: the body's left) goes onto -X, so the hips (left -> right) lie along +X."""
    body_left = root[..., :2, 0]
    return -torch.atan2(-body_left[..., 1], -body_left[..., 0])


def canonical_turn_and_shift(feats: np.ndarray) -> tuple[float, tuple[float, float]]:
    """The turn (radians about Z) and then the move on the ground that put frame 0 of `feats`
    (T, 276) at x = y = 0 facing +Y, as curation canonicalises a clip."""
    root = rot.rot6d_to_matrix(torch.from_numpy(np.asarray(feats[0, ROOT_ROT6D], dtype=np.float64)))
    yaw = float(facing_turn_angle(root))
    turn = rot.rotation_about_z(torch.tensor(yaw, dtype=torch.float64)).numpy()
    pelvis = turn @ np.asarray(feats[0, JOINT_POS][:3], dtype=np.float64)
    return yaw, (-float(pelvis[0]), -float(pelvis[1]))


def turn_and_move_array(feats: np.ndarray, yaw: float, shift_xy: tuple[float, float]) -> np.ndarray:
    """`turn_and_move_features` on a (..., T, 276) array, computed in float64, returned as float32."""
    return turn_and_move_features(torch.from_numpy(np.asarray(feats, dtype=np.float64)), yaw, shift_xy).float().numpy()


def path_from_root_velocities(feats: torch.Tensor) -> torch.Tensor:
    """(..., T, 276) -> the same motion moved on the ground, frame by frame and all joints alike, so
    that its root starts at x = y = 0 and travels as its root velocity channels say; heights, the body
    about its root, velocities and rotations stay. On a canonical clip it changes nothing (its two
    decodes agree)."""
    steps = feats[..., :-1, ROOT_VEL.start:ROOT_VEL.start + 2]  # (..., T - 1, 2)
    path = torch.cat([torch.zeros_like(steps[..., :1, :]), torch.cumsum(steps, dim=-2)], dim=-2)  # (..., T, 2)
    shift = path - feats[..., ROOT_TRANS.start:ROOT_TRANS.start + 2]  # (..., T, 2)
    lead = feats.shape[:-1]
    positions = feats[..., JOINT_POS].reshape(*lead, NUM_JOINTS, 3)
    moved = torch.cat([positions[..., :2] + shift[..., None, :], positions[..., 2:]], dim=-1)
    return torch.cat([feats[..., :JOINT_POS.start], moved.reshape(*lead, 3 * NUM_JOINTS),
                      feats[..., JOINT_POS.stop:ROOT_TRANS.start], path, feats[..., ROOT_TRANS.start + 2:]], dim=-1)


def features_to_joints(feats: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """(..., T, 276) -> (..., T, 22, 3) by reading the position channels (tensor or array alike)."""
    return feats[..., JOINT_POS].reshape(*feats.shape[:-1], NUM_JOINTS, 3)


def features_to_joints_integrated(feats: torch.Tensor) -> torch.Tensor:
    """(..., T, 276) -> (..., T, 22, 3): frame-0 positions plus the accumulated velocities."""
    start = features_to_joints(feats[..., :1, :])  # (..., 1, 22, 3)
    vel = feats[..., :-1, JOINT_VEL].reshape(*feats.shape[:-2], feats.shape[-2] - 1, NUM_JOINTS, 3)
    steps = torch.cat([torch.zeros_like(start), vel], dim=-3)
    return start + torch.cumsum(steps, dim=-3)


def features_to_rotations(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., T, 276) -> local_rotmats (..., T, 22, 3, 3) (joint 0 global), root position (..., T, 3)."""
    body = rot.rot6d_to_matrix(feats[..., POSE6D].reshape(*feats.shape[:-1], NUM_JOINTS - 1, 6))
    root = rot.rot6d_to_matrix(feats[..., ROOT_ROT6D])[..., None, :, :]
    return torch.cat([root, body], dim=-3), feats[..., ROOT_TRANS]


def features_to_smpl(feats: torch.Tensor | np.ndarray, pelvis_rest: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """(T, 276) -> SMPL parameters: global_orient (T, 3), body_pose (T, 63), transl (T, 3).
    transl = pelvis - pelvis_rest (the body model's rest pelvis; default skeleton: the origin)."""
    feats = torch.as_tensor(np.asarray(feats), dtype=torch.float64)
    local, root_pos = features_to_rotations(feats)
    aa = rot.matrix_to_axis_angle(local).numpy()  # (T, 22, 3)
    if pelvis_rest is None:
        from vimogen_core.motion.skeleton import rest_offsets

        pelvis_rest = rest_offsets()[0]
    return {
        "global_orient": aa[:, 0],
        "body_pose": aa[:, 1:].reshape(len(aa), 63),
        "transl": root_pos.numpy() - np.asarray(pelvis_rest),
    }


def reference_features(feats):
    """(..., T, 276) -> (..., T, 138): what the reference-motion branch sees."""
    return feats[..., REF_INDEX]


def check_features(feats: np.ndarray, path: str | os.PathLike | None = None) -> np.ndarray:
    """Validate a (T, 276) feature array; raise MotionDataError naming `path` otherwise."""
    feats = np.asarray(feats)
    if feats.ndim != 2 or feats.shape[1] != FEATURE_DIM:
        raise MotionDataError(path, f"expected features of shape (T, {FEATURE_DIM}), got {tuple(feats.shape)}")
    if feats.shape[0] < 1:
        raise MotionDataError(path, "motion has no frames")
    if not np.isfinite(feats).all():
        bad = int((~np.isfinite(feats)).any(axis=1).sum())
        raise MotionDataError(path, f"non-finite values in {bad} frame(s)")
    return feats


def read_npy(path: str | os.PathLike, missing: str = "file not found") -> np.ndarray:
    """An `.npy` array, never unpickled; a missing file raises MotionDataError(path, `missing`), an
    unreadable one says why."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise MotionDataError(path, missing) from None
    except (ValueError, OSError, EOFError) as err:
        raise MotionDataError(path, f"not a readable .npy array ({err})") from None


def load_features(path: str | os.PathLike) -> np.ndarray:
    """Load and validate a (T, 276) `.npy` feature file (never unpickles)."""
    return check_features(read_npy(path), path)


@dataclass
class Normalizer:
    """Per-dimension (x - mean) / std."""

    mean: np.ndarray  # (276,)
    std: np.ndarray  # (276,)

    MIN_STD = 1e-4  # constant channels (e.g. a root never moving sideways) must not blow up

    def __post_init__(self):
        self.mean = np.asarray(self.mean, dtype=np.float32)
        self.std = np.maximum(np.asarray(self.std, dtype=np.float32), self.MIN_STD)
        if self.mean.shape != (FEATURE_DIM,) or self.std.shape != (FEATURE_DIM,):
            raise ValueError(f"normaliser statistics must have shape ({FEATURE_DIM},)")

    def normalize(self, x):
        if isinstance(x, torch.Tensor):
            return (x - torch.as_tensor(self.mean, device=x.device)) / torch.as_tensor(self.std, device=x.device)
        return (x - self.mean) / self.std

    def denormalize(self, x):
        if isinstance(x, torch.Tensor):
            return x * torch.as_tensor(self.std, device=x.device) + torch.as_tensor(self.mean, device=x.device)
        return x * self.std + self.mean

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a handle: numpy appends no ".npz"
            np.savez(handle, mean=self.mean, std=self.std)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Normalizer":
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(data["mean"], data["std"])
        except (KeyError, ValueError, OSError) as err:
            raise MotionDataError(path, f"not a normaliser file ({err})") from None

    @classmethod
    def from_released(cls, directory: str | os.PathLike) -> "Normalizer":
        """The released model's statistics: vimogen228k_mean.npy / vimogen228k_std.npy in `directory`."""
        directory = Path(directory)
        mean = np.load(directory / "vimogen228k_mean.npy", allow_pickle=False)
        std = np.load(directory / "vimogen228k_std.npy", allow_pickle=False)
        return cls(mean, std)

    @classmethod
    def fit(cls, feature_arrays: Iterable[np.ndarray]) -> "Normalizer":
        """Streaming mean/std over frames of many (T, 276) arrays, accumulated in float64."""
        count = 0
        total = np.zeros(FEATURE_DIM)
        total_sq = np.zeros(FEATURE_DIM)
        shift = None  # subtracting a first-sample shift keeps the sum of squares well conditioned
        for feats in feature_arrays:
            feats = np.asarray(feats, dtype=np.float64)
            if shift is None:
                shift = feats.mean(axis=0)
            centred = feats - shift
            count += len(feats)
            total += centred.sum(axis=0)
            total_sq += (centred * centred).sum(axis=0)
        if count == 0:
            raise ValueError("no frames to compute statistics from")
        mean_c = total / count
        var = np.maximum(total_sq / count - mean_c**2, 0.0)
        return cls(mean_c + shift, np.sqrt(var))
