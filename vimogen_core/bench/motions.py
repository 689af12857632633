"""Motions to score: `LoadedMotion` (joints, and features when the source had them, or the error
that stopped it) and the readers of one `.npy` file or a folder of `{key}.npy`, never unpickling."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vimogen_core.errors import MotionDataError
from vimogen_core.motion import metrics
from vimogen_core.motion.representation import FEATURE_DIM, check_features, features_to_joints, read_npy


@dataclass
class LoadedMotion:
    """One motion to score: joints (T, 22, 3) and, when the source had them, features (T, 276)."""

    joints: np.ndarray | None
    features: np.ndarray | None = None
    error: str | None = None


def load_motion_file(path: str | os.PathLike) -> LoadedMotion:
    """`.npy` with joints (T, 22, 3) or 276-d features (T, 276); never unpickles."""
    path = Path(path)
    array = read_npy(path, missing="motion file not found")
    if array.ndim == 2 and array.shape[1] == FEATURE_DIM:
        features = check_features(array, path).astype(np.float32)
        joints = features_to_joints(features)
        return LoadedMotion(metrics.validate_joints(joints, path), features)
    return LoadedMotion(metrics.validate_joints(array, path))


def load_motion_folder(directory: str | os.PathLike, keys: Sequence[str]) -> dict[str, LoadedMotion]:
    """`{key}.npy` for each key; a `features/{key}.npy` beside it (what `generate_motions` writes)
    supplies the 276-d rotations for the pose metrics."""
    directory = Path(directory)
    loaded = {}
    for key in keys:
        try:
            motion = load_motion_file(directory / f"{key}.npy")
            features_path = directory / "features" / f"{key}.npy"
            if motion.features is None and features_path.is_file():
                features = load_motion_file(features_path).features
                if features is None or len(features) != len(motion.joints):
                    raise MotionDataError(features_path, "does not hold the 276-d features of the same motion")
                motion.features = features
            loaded[key] = motion
        except MotionDataError as err:
            loaded[key] = LoadedMotion(None, error=str(err))
    return loaded
