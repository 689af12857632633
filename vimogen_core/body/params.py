"""Validation of SMPL parameter arrays read from files (AMASS, mesh recovery).

Each check raises MotionDataError naming the file and what is wrong, so a batch job can
quarantine the sample with that reason.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from vimogen_core.errors import MotionDataError
from vimogen_core.motion import rotations as rot
from vimogen_core.motion.skeleton import NUM_JOINTS

NUM_BODY_JOINTS = NUM_JOINTS - 1  # 21: the 22 joints less the root


def finite_array(data, key: str, path: str | os.PathLike | None) -> np.ndarray:
    """data[key] as a finite float64 array."""
    if key not in data:
        raise MotionDataError(path, f"missing '{key}'")
    try:
        array = np.asarray(data[key], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise MotionDataError(path, f"'{key}' is not numeric ({err})") from None
    if not np.isfinite(array).all():
        raise MotionDataError(path, f"'{key}' has non-finite values (NaN or inf)")
    return array


def as_axis_angle(array: np.ndarray, n_joints: int, key: str, path) -> np.ndarray:
    """Per-frame joint rotations -> (T, n_joints * 3) axis-angle.

    Accepts (T, k*3) or (T, k, 3) axis-angle and (T, k, 3, 3) rotation matrices with k >= n_joints
    (SMPL's 23 body joints, or SMPL-H/X full poses); extra joints at the end are dropped."""
    is_matrix = array.shape[-2:] == (3, 3) and (array.ndim == 4 or (array.ndim == 3 and n_joints == 1))
    if is_matrix:
        matrices = array.reshape(array.shape[0], -1, 3, 3)
        if matrices.shape[1] < n_joints:
            raise MotionDataError(path, f"'{key}' has {matrices.shape[1]} rotation matrices per frame, need {n_joints}")
        array = rot.matrix_to_axis_angle(torch.as_tensor(matrices[:, :n_joints])).numpy()
    if array.ndim == 3 and array.shape[-1] == 3:
        array = array.reshape(array.shape[0], -1)
    if array.ndim != 2 or array.shape[1] < 3 * n_joints or array.shape[1] % 3:
        raise MotionDataError(path, f"'{key}' has shape {tuple(array.shape)}, expected (T, {3 * n_joints}) axis-angle")
    return array[:, : 3 * n_joints]


def check_frames(arrays: dict[str, np.ndarray], path) -> int:
    """All arrays share the same, non-trivial number of frames; returns it."""
    lengths = {key: len(value) for key, value in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise MotionDataError(path, f"frame counts differ: {lengths}")
    n_frames = next(iter(lengths.values()))
    if n_frames < 2:
        raise MotionDataError(path, f"need at least 2 frames, got {n_frames}")
    return n_frames


def check_translation(array: np.ndarray, key: str, path) -> np.ndarray:
    if array.ndim != 2 or array.shape[1] != 3:
        raise MotionDataError(path, f"'{key}' has shape {tuple(array.shape)}, expected (T, 3)")
    return array


def check_betas(data, key: str, path) -> np.ndarray | None:
    """Optional shape coefficients: (n,) or (T, n) (then averaged over frames: one body per clip)."""
    if key not in data:
        return None
    betas = finite_array(data, key, path)
    if betas.ndim == 2:
        betas = betas.mean(axis=0)
    if betas.ndim != 1:
        raise MotionDataError(path, f"'{key}' has shape {tuple(betas.shape)}, expected (n,) or (T, n)")
    return betas


def check_fps(value, path) -> float:
    try:
        fps = float(np.asarray(value).reshape(()))
    except (TypeError, ValueError):
        raise MotionDataError(path, f"frame rate {value!r} is not a number") from None
    if not np.isfinite(fps) or fps <= 0:
        raise MotionDataError(path, f"frame rate must be positive, got {fps}")
    return fps
