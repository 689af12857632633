"""Inverse kinematics for joint-only motion (MBench's pose dimensions need rotations): the fit is
`vimogen_core.motion.ik.ik_fit`; here, where a scored motion's rotations come from."""
from __future__ import annotations

import numpy as np
import torch

from vimogen_core.motion.ik import ik_fit

IK_SOURCE = "IK fit from joints"


def motion_rotations(joints: np.ndarray | None, features: np.ndarray | None) -> tuple[np.ndarray, str]:
    """Local rotations (T, 22, 3, 3) of a motion and where they came from."""
    if features is not None:
        from vimogen_core.motion.representation import features_to_rotations

        local, _ = features_to_rotations(torch.as_tensor(np.asarray(features), dtype=torch.float64))
        return local.numpy(), "276-d rotations"
    if joints is None:
        raise ValueError("a motion needs joints or features")
    return ik_fit(joints), IK_SOURCE
