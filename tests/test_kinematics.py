"""Forward kinematics is written once (motion.kinematics); every caller gives the joints a real
clip's 276-d features hold, within 1e-5 m."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vimogen_core.bench.penetration import BodyMesh
from vimogen_core.motion.kinematics import forward_kinematics, rest_joints24
from vimogen_core.motion.motion import Motion
from vimogen_core.motion.representation import features_to_joints, features_to_rotations
from vimogen_core.motion.skeleton import FPS, NUM_JOINTS, rest_offsets
from vimogen_core.sources.deepmimic import load_builtin_clip

TOLERANCE_M = 1e-5


@pytest.fixture(scope="module")
def clip_features():
    """A built-in clip's features (T, 276) as stored (float32), its rotations and joints decoded."""
    feats = load_builtin_clip("cartwheel").motion.features().double()
    local, pelvis = features_to_rotations(feats)  # (T, 22, 3, 3), (T, 3)
    return local, pelvis, features_to_joints(feats)  # joints (T, 22, 3)


def test_forward_kinematics_reproduces_the_clip_joints(clip_features):
    local, pelvis, joints = clip_features
    offsets = rest_offsets()
    fk, global_rotmats = forward_kinematics(local, pelvis - torch.as_tensor(offsets[0]), offsets)
    assert (fk - joints).abs().max() < TOLERANCE_M
    assert global_rotmats.shape == local.shape


def test_motion_constructors_use_it(clip_features):
    local, pelvis, joints = clip_features
    from_rotations = Motion.from_rotations(local, pelvis - torch.as_tensor(rest_offsets()[0]), FPS, rest_offsets())
    assert (from_rotations.joints - joints).abs().max() < TOLERANCE_M
    refitted = from_rotations.with_joints_from_fk(local, torch.zeros_like(joints), pelvis)
    assert (refitted.joints - joints).abs().max() < TOLERANCE_M


def test_body_mesh_joints_follow_the_skeleton(clip_features):
    local, _, joints = clip_features
    posed, global_rotmats = BodyMesh.procedural().posed_joints(local.numpy())  # (T, 24, 3), (T, 24, 3, 3)
    relative = (joints - joints[:, :1]).numpy()  # the body mesh keeps the pelvis at the origin
    assert np.abs(posed[:, :NUM_JOINTS] - relative).max() < TOLERANCE_M
    np.testing.assert_allclose(global_rotmats[:, 22], global_rotmats[:, 20], atol=1e-12)  # left hand follows its wrist


def test_rest_joints_are_forward_kinematics_of_the_identity_pose():
    identity = torch.eye(3, dtype=torch.float64).expand(1, NUM_JOINTS, 3, 3)
    fk, _ = forward_kinematics(identity, torch.zeros(1, 3, dtype=torch.float64), rest_offsets())
    np.testing.assert_array_equal(rest_joints24()[:NUM_JOINTS], fk[0].numpy())
