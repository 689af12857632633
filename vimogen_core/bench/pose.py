"""MBench pose metrics: Body_Penetration and Pose_Quality, as one scorer the runner uses.

The parts, one module each: `bench.ik` (rotations for joint-only motion), `bench.penetration`
(the skinned body mesh and its self-intersections) and `bench.priors` (distance to plausible poses).
"""
from __future__ import annotations

import os

import numpy as np

from vimogen_core.bench.ik import IK_SOURCE, motion_rotations
from vimogen_core.bench.penetration import BodyMesh
from vimogen_core.bench.priors import DistanceFieldPrior, PosePrior


class PoseScorer:
    """Scores Body_Penetration and Pose_Quality; its name says which mesh and prior produced them."""

    def __init__(self, mesh: BodyMesh, prior: PosePrior | DistanceFieldPrior, frame_stride: int = 1):
        self.mesh = mesh
        self.prior = prior
        self.frame_stride = frame_stride

    @property
    def name(self) -> str:
        stride = "" if self.frame_stride == 1 else f", every {self.frame_stride}th frame"
        return (f"mesh: {self.mesh.name} (parts < {self.mesh.min_tree_distance} tree steps apart not tested{stride}); "
                f"prior: {self.prior.name}; joint-only motions: IK fit")

    def score(self, dimension: str, joints: np.ndarray | None, features: np.ndarray | None) -> float:
        local, source = motion_rotations(joints, features)
        if dimension == "Body_Penetration":
            return self.mesh.body_penetration(local, self.frame_stride)
        if dimension == "Pose_Quality":
            return self.prior.pose_quality(local, swing_only=source == IK_SOURCE)
        raise ValueError(f"not a pose dimension: {dimension}")


def default_pose_scorer() -> PoseScorer:
    """Procedural body (or $VIMOGEN_SMPL_MODEL_PATH) and the built-in pose bank (or
    $VIMOGEN_POSE_PRIOR, a distance-field checkpoint)."""
    mesh_path = os.environ.get("VIMOGEN_SMPL_MODEL_PATH")
    mesh = BodyMesh.from_file(mesh_path) if mesh_path else BodyMesh.procedural()
    prior_path = os.environ.get("VIMOGEN_POSE_PRIOR")
    prior = DistanceFieldPrior.load(prior_path) if prior_path else PosePrior.builtin()
    return PoseScorer(mesh, prior)
