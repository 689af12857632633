"""Rotations, kinematics, the 276-d representation and the motion operations on real clips."""
from dataclasses import replace

import numpy as np
import pytest
import roma
import torch

from vimogen_core.motion import rotations as rot
from vimogen_core.motion.kinematics import forward_kinematics
from vimogen_core.motion.motion import Motion, canonicalize, mirror, resample
from vimogen_core.motion.representation import (
    FEATURE_DIM, REF_INDEX, Normalizer, encode_features, features_to_joints,
    features_to_joints_integrated, features_to_rotations, features_to_smpl, mirror_features, reference_features,
)
from vimogen_core.motion.skeleton import MIRROR_PERM, PARENTS, bone_lengths, rest_offsets
from vimogen_core.sources.deepmimic import load_builtin_clip


def random_rotmats(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    aa = torch.randn(n, 3, generator=g, dtype=torch.float64)
    aa = aa / aa.norm(dim=-1, keepdim=True) * torch.rand(n, 1, generator=g, dtype=torch.float64) * 3.1
    return rot.axis_angle_to_matrix(aa)


def test_rotation_round_trips_within_1e6():
    mats = random_rotmats(2000)
    assert torch.allclose(rot.rot6d_to_matrix(rot.matrix_to_rot6d(mats)), mats, atol=1e-6)
    assert torch.allclose(rot.axis_angle_to_matrix(rot.matrix_to_axis_angle(mats)), mats, atol=1e-6)
    assert torch.allclose(rot.quat_to_matrix(rot.matrix_to_quat(mats)), mats, atol=1e-6)
    quats = rot.matrix_to_quat(mats)
    assert torch.allclose(rot.matrix_to_quat(rot.quat_to_matrix(quats)), quats, atol=1e-6)
    aa = rot.matrix_to_axis_angle(mats)
    assert torch.allclose(rot.matrix_to_axis_angle(rot.axis_angle_to_matrix(aa)), aa, atol=1e-6)


def test_rotation_conversions_agree_with_roma_from_zero_to_pi():
    """roma is an independent implementation; the angles include 0, 1e-9, and within 1e-7 of pi."""
    g = torch.Generator().manual_seed(1)
    axes = torch.nn.functional.normalize(torch.randn(600, 3, generator=g, dtype=torch.float64), dim=-1)
    angles = torch.cat([torch.zeros(100), torch.full((100,), 1e-9), torch.rand(200, generator=g) * torch.pi,
                        torch.full((200,), torch.pi - 1e-7)]).to(torch.float64)
    aa = axes * angles[:, None]
    mats = rot.axis_angle_to_matrix(aa)
    torch.testing.assert_close(mats, roma.rotvec_to_rotmat(aa), atol=1e-12, rtol=0)
    xyzw = roma.rotmat_to_unitquat(mats)
    wxyz = torch.cat([xyzw[:, 3:], xyzw[:, :3]], dim=-1)
    ours = rot.matrix_to_quat(mats)
    same_sign = torch.where((ours * wxyz).sum(-1, keepdim=True) < 0, -wxyz, wxyz)  # q and -q are one rotation
    torch.testing.assert_close(ours, same_sign, atol=1e-12, rtol=0)
    torch.testing.assert_close(rot.quat_to_matrix(ours), mats, atol=1e-12, rtol=0)
    back = rot.axis_angle_to_matrix(rot.matrix_to_axis_angle(mats))  # the rotvec of an angle-pi turn has two signs
    torch.testing.assert_close(back, mats, atol=1e-7, rtol=0)
    torch.testing.assert_close(rot.matrix_to_axis_angle(mats[:400]), roma.rotmat_to_rotvec(mats[:400]), atol=1e-9, rtol=0)
    six = torch.randn(300, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(rot.rot6d_to_matrix(six), roma.special_gramschmidt(six.reshape(300, 3, 2)), atol=1e-12, rtol=0)


def test_rot6d_layout_is_first_two_columns_row_by_row():
    m = torch.arange(9, dtype=torch.float64).reshape(3, 3)
    assert rot.matrix_to_rot6d(m).tolist() == [0, 1, 3, 4, 6, 7]


def test_quaternions_are_w_first():
    quarter_turn_z = torch.tensor([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)], dtype=torch.float64)
    assert torch.allclose(rot.quat_to_matrix(quarter_turn_z) @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
                          torch.tensor([0.0, 1, 0], dtype=torch.float64), atol=1e-12)


def test_forward_kinematics_rest_pose_reproduces_offsets():
    offsets = rest_offsets()
    joints, _ = forward_kinematics(torch.eye(3, dtype=torch.float64).expand(22, 3, 3), torch.zeros(3, dtype=torch.float64))
    for j, p in enumerate(PARENTS):
        expected = offsets[0] if p < 0 else joints[p].numpy() + offsets[j]
        assert np.allclose(joints[j].numpy(), expected)


def test_encode_decode_reproduces_joints_on_a_real_clip():
    motion = load_builtin_clip("walk", min_frames=201).motion
    assert motion.n_frames >= 201
    feats = encode_features(motion.local_rotmats[:201], motion.joints[:201])  # 200 feature frames
    assert feats.shape == (200, FEATURE_DIM)
    direct = features_to_joints(feats)
    assert (direct - motion.joints[:200]).abs().max() < 1e-5
    integrated = features_to_joints_integrated(feats)
    assert (integrated - direct).abs().max() < 1e-4
    # float32 storage, as written to disk, keeps both decodes within tolerance
    feats32 = feats.float()
    assert (features_to_joints_integrated(feats32) - features_to_joints(feats32)).abs().max() < 1e-4
    local, root = features_to_rotations(feats)
    assert (local - motion.local_rotmats[:200]).abs().max() < 1e-9
    assert (root - motion.joints[:200, 0]).abs().max() < 1e-12


def test_features_to_smpl_round_trip_through_forward_kinematics():
    motion = load_builtin_clip("cartwheel").motion
    feats = motion.features().double()
    params = features_to_smpl(feats)
    again = Motion.from_smpl(params["global_orient"], params["body_pose"], params["transl"], fps=20)
    assert (again.joints - motion.joints[:-1]).abs().max() < 1e-5


def test_root_angular_velocity_channel_is_relative_rotation():
    motion = load_builtin_clip("spin").motion
    feats = motion.features().double()
    root = rot.rot6d_to_matrix(feats[:, 258:264])
    step = rot.rot6d_to_matrix(feats[:, 264:270])
    assert torch.allclose(step[:-1] @ root[:-1], root[1:], atol=1e-5)


def test_reference_features_take_pose_and_root_rotation_channels():
    feats = torch.arange(2 * FEATURE_DIM, dtype=torch.float32).reshape(2, FEATURE_DIM)
    ref = reference_features(feats)
    assert ref.shape == (2, 138)
    assert ref[0, :126].tolist() == list(range(126)) and ref[0, 126:].tolist() == list(range(258, 270))
    assert len(REF_INDEX) == 138


def test_canonicalize_faces_plus_y_and_centres_pelvis():
    motion = load_builtin_clip("run").motion
    turned = rot.rotation_about_z(torch.tensor(1.234, dtype=torch.float64))
    local = motion.local_rotmats.clone()
    local[:, 0] = turned @ local[:, 0]
    moved = Motion(local, motion.joints @ turned.T + torch.tensor([3.0, -2.0, 0.5], dtype=torch.float64),
                   motion.fps, motion.offsets)
    canon = canonicalize(moved)
    across = canon.joints[0, 2] - canon.joints[0, 1]  # left hip -> right hip
    assert abs(float(across[1])) < 1e-9 and float(across[0]) > 0  # hip axis along +X, so facing +Y
    assert canon.joints[0, 0, :2].abs().max() < 1e-9
    assert (canon.joints - (motion.joints + torch.tensor([0, 0, 0.5], dtype=torch.float64))).abs().max() < 1e-6
    floored = canonicalize(moved, set_floor=True)
    assert abs(float(floored.joints[..., 2].min())) < 1e-12


def test_resample_keeps_duration_and_bone_lengths():
    motion = load_builtin_clip("jump").motion
    fast = resample(motion, 60)
    assert fast.n_frames == (motion.n_frames - 1) * 3 + 1
    back = resample(fast, 20)
    assert (back.joints - motion.joints).abs().max() < 1e-6
    assert bone_lengths(fast.joints).std(0).max() < 1e-9


def test_mirror_swaps_sides_and_is_an_involution():
    motion = load_builtin_clip("kick").motion
    flipped = mirror(motion)
    assert torch.allclose(flipped.joints[:, :, 0], -motion.joints[:, list(MIRROR_PERM), 0], atol=1e-9)
    twice = mirror(flipped)
    assert (twice.joints - motion.joints).abs().max() < 1e-9
    assert (twice.local_rotmats - motion.local_rotmats).abs().max() < 1e-9
    # mirrored rotations drive the mirrored joints: FK agrees with the reflected positions
    assert (flipped.features()[:, 126:192] - flipped.joints[:-1].reshape(-1, 66).float()).abs().max() < 1e-5


def test_normalizer_fit_save_load(tmp_path, shared):
    feats = [load_builtin_clip(n).motion.features().numpy() for n in ("walk", "run", "jump")]
    norm = Normalizer.fit(feats)
    stacked = np.concatenate(feats)
    assert np.allclose(norm.mean, stacked.mean(0), atol=1e-5)
    assert np.allclose(norm.std, np.maximum(stacked.std(0), Normalizer.MIN_STD), atol=1e-5)
    path = tmp_path / "stats.npz"
    norm.save(path)
    loaded = Normalizer.load(path)
    x = torch.as_tensor(stacked)
    assert torch.allclose(loaded.denormalize(loaded.normalize(x)), x, atol=1e-4)
    released = Normalizer.from_released(shared / "reference")
    assert released.mean.shape == (FEATURE_DIM,) and np.isfinite(released.std).all()


def test_slerp_frames_follows_the_geodesic_between_neighbouring_frames():
    torch.manual_seed(0)
    frames = roma.random_rotmat((50, 22), dtype=torch.float64)
    frames[10] = frames[9]  # equal neighbours: the small-angle branch
    i0 = torch.randint(0, 49, (80,))
    i1 = i0 + 1
    weight = torch.rand(80, 22, dtype=torch.float64)
    weight[:5], weight[5:10] = 0.0, 1.0
    relative = roma.rotmat_to_rotvec(frames[i0].transpose(-1, -2) @ frames[i1])  # (80, 22, 3), angle <= pi
    geodesic = frames[i0] @ roma.rotvec_to_rotmat(relative * weight[..., None])
    torch.testing.assert_close(rot.slerp_frames(frames, i0, i1, weight), geodesic, atol=1e-12, rtol=0)


def test_mirror_features_equal_encoding_the_mirror_image():
    clip = load_builtin_clip("cartwheel")
    motion = replace(canonicalize(clip.motion), offsets=None)  # reflect the joints, no FK re-solve
    expected = mirror(motion).features().numpy()
    np.testing.assert_array_equal(mirror_features(motion.features().numpy()), expected)
    np.testing.assert_array_equal(mirror_features(mirror_features(expected)), expected)  # an involution


def test_motion_crosses_processes_as_plain_arrays():
    """torch's own tensor pickling would hand each tensor over through a shared-memory segment."""
    from multiprocessing.reduction import ForkingPickler
    import pickle

    motion = load_builtin_clip("walk", min_frames=121).motion
    data = bytes(ForkingPickler.dumps(motion))
    assert len(data) > motion.local_rotmats.numel() * 8  # the values themselves travel
    back = pickle.loads(data)
    assert torch.equal(back.local_rotmats, motion.local_rotmats) and torch.equal(back.joints, motion.joints)
    assert back.fps == motion.fps and np.array_equal(back.offsets, motion.offsets)
