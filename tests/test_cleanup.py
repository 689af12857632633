"""Clean-up of generated motion: one consistent motion out of redundant, disagreeing channels."""
from __future__ import annotations

import numpy as np
import torch

from vimogen_core.motion import metrics
from vimogen_core.motion.cleanup import CleanupConfig, clean_features, foot_hold, fuse_positions
from vimogen_core.motion.export import animated_joints
from vimogen_core.motion.representation import (JOINT_POS, JOINT_VEL, features_to_joints, features_to_joints_integrated,
                                                 features_to_rotations)
from vimogen_core.sources.deepmimic import load_builtin_clip, load_builtin_clips
from vimogen_core.train.geometry_loss import JointGeometryLoss
from vimogen_core.motion.representation import Normalizer


def walk_features(frames: int = 100) -> np.ndarray:
    return load_builtin_clip("walk", min_frames=frames + 1).motion.features().numpy()[:frames]


def as_generated(feats: np.ndarray, seed: int = 0) -> np.ndarray:
    """What the network writes for a real walk: positions that wander frame to frame (the pelvis by
    decimetres, the body by centimetres) and the whole motion shifted away from the origin, with
    velocity channels that stay close to the motion's."""
    rng = np.random.default_rng(seed)
    t = len(feats)
    wander = np.array([2.0, 11.0, 0.0]) + rng.normal(0, 0.2, (t, 1, 3)) * [1, 1, 0.1] + rng.normal(0, 0.02, (t, 22, 3))
    out = shifted(feats, JOINT_POS, wander)
    out[:, JOINT_VEL] += rng.normal(0, 0.003, (t, 66))
    return out.astype(np.float32)


def shifted(feats: np.ndarray, channels: slice, offset) -> np.ndarray:
    """A copy of `feats` (T, 276) with the per-joint channels `channels` (positions or velocities)
    moved by `offset`, broadcast to (T, 22, 3)."""
    out = feats.copy()
    out[:, channels] = (out[:, channels].reshape(len(out), 22, 3) + offset).reshape(len(out), 66)
    return out


def lifted_by(feats: np.ndarray, height: float) -> np.ndarray:
    """The same motion with every joint position `height` metres higher."""
    return shifted(feats, JOINT_POS, [0.0, 0.0, height])


def test_cleaned_motion_starts_at_the_origin_and_both_decodes_agree():
    real = walk_features()
    noisy = as_generated(real)
    before = torch.from_numpy(noisy[:80].astype(np.float64))
    assert float(features_to_joints(before)[0, 0, :2].norm()) > 1.0
    assert float((features_to_joints(before) - features_to_joints_integrated(before)).norm(dim=-1).max()) > 0.3
    cleaned = torch.from_numpy(clean_features(noisy).astype(np.float64))
    read, integrated = features_to_joints(cleaned), features_to_joints_integrated(cleaned)
    assert float(read[0, 0, :2].norm()) < 1e-6  # pelvis at x = y = 0 on frame 0, like the data
    assert float((read[:80] - integrated[:80]).norm(dim=-1).max()) < 0.05  # within 5 cm over 4 s
    # The jagged copy is brought back near the real walk's smoothness and path.
    jitter = [metrics.jitter_degree(j) for j in (features_to_joints(real), read.numpy(), features_to_joints(noisy))]
    assert jitter[1] < 2.0 * jitter[0] and jitter[1] < 0.1 * jitter[2]
    travel = read[-1, 0, :2] - read[0, 0, :2]
    real_travel = features_to_joints(real)[-1, 0, :2] - features_to_joints(real)[0, 0, :2]
    assert float(np.linalg.norm(travel.numpy() - real_travel)) < 0.3


def rotation_change_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(T, 22) angle in degrees between the rotations of features a and b (T, 276)."""
    ra, _ = features_to_rotations(torch.from_numpy(np.asarray(a, dtype=np.float64)))
    rb, _ = features_to_rotations(torch.from_numpy(np.asarray(b, dtype=np.float64)))
    cos = ((ra.transpose(-1, -2) @ rb).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1))).numpy()


def test_cleanup_leaves_a_real_clip_as_it_was():
    real = walk_features()
    cleaned = clean_features(real)
    assert np.abs(features_to_joints(cleaned) - features_to_joints(real)).max() < 0.07  # metres: only the foot hold moves them (feet, ankles, knees)
    np.testing.assert_allclose(clean_features(real, CleanupConfig(rotation_sigma=0))[:, :126], real[:, :126], atol=1e-5)
    turned = rotation_change_deg(real, cleaned)[:, 1:]  # the body's joints (the root: canonicalised)
    assert np.median(turned) < 2.0 and np.percentile(turned, 95) < 15.0  # smoothing barely turns a real walk


def test_cleaned_rotations_lose_the_jitter_exports_would_show():
    """BVH and glTF exports animate the rotation channels, and a network's jitter (the demo champion's
    exports: 4.3x the real clips' Jitter_Degree): a real walk whose rotations shiver by a few degrees a
    frame exports close to the clip's own jitter once cleaned, and with its path and stride kept."""
    real = walk_features()
    rng = np.random.default_rng(0)
    shivering = real.copy()
    shivering[:, :126] += rng.normal(0, 0.05, (len(real), 126))  # (T, 21 x 6)
    jitter = lambda f: metrics.jitter_degree(animated_joints(f))  # noqa: E731
    assert jitter(shivering) > 3 * jitter(real)
    assert jitter(clean_features(shivering, CleanupConfig(rotation_sigma=0))) > 3 * jitter(real)
    cleaned = clean_features(shivering)
    assert jitter(cleaned) < 1.5 * jitter(real)
    assert np.median(rotation_change_deg(real, cleaned)[:, 1:]) < 3.0


def test_fused_path_follows_velocities_in_short_and_positions_in_long():
    t = np.arange(200, dtype=np.float64)[:, None]
    truth = np.sin(t / 15.0)  # (T, 1)
    velocity = np.diff(truth, axis=0, append=truth[-1:] * 0 + np.sin(200 / 15.0))
    wandering = truth + np.random.default_rng(1).normal(0, 0.2, truth.shape)
    fused = fuse_positions(torch.from_numpy(wandering), torch.from_numpy(velocity), 400.0).numpy()
    assert np.abs(fused - truth).max() < 0.05 < np.abs(wandering - truth).max()


def test_a_planted_foot_is_held_still():
    joints = torch.from_numpy(features_to_joints(walk_features()).astype(np.float64))
    shivering = joints.clone()
    shivering[:, [7, 10]] += torch.from_numpy(np.random.default_rng(2).normal(0, 0.006, (len(joints), 2, 3)))
    contact = metrics.foot_contact(joints.numpy())[:, 0]
    held = foot_hold(shivering)
    slide = lambda j: np.linalg.norm(np.diff(j[:, 10, :2], axis=0), axis=-1)[contact[:-1]].mean()  # noqa: E731
    assert slide(held.numpy()) < 0.5 * slide(shivering.numpy())
    assert float((held[:, 10] - joints[:, 10]).norm(dim=-1).max()) < 0.08  # held where it was planted


def test_a_held_foot_bends_the_knee_instead_of_stretching_the_shin():
    """The hold moves the ankle with the foot; the knee follows, so thigh and shin keep their lengths."""
    joints = torch.from_numpy(features_to_joints(walk_features()).astype(np.float64))
    sliding = joints.clone()
    sliding[:, [7, 10], 1] += 0.04 * torch.sin(torch.arange(len(joints), dtype=torch.float64) / 3.0)[:, None]
    held = foot_hold(sliding)
    bone = lambda j, a, b: (j[:, a] - j[:, b]).norm(dim=-1)  # noqa: E731
    assert float((held[:, 7] - sliding[:, 7]).norm(dim=-1).max()) > 0.02  # the hold moved the ankle
    for hip, knee, ankle in ((1, 4, 7), (2, 5, 8)):
        assert float((bone(held, hip, knee) - bone(sliding, hip, knee)).abs().max()) < 1e-6
        assert float((bone(held, knee, ankle) - bone(sliding, knee, ankle)).abs().max()) < 1e-6


def test_geometry_loss_is_zero_on_the_target_and_grows_with_a_shivering_body():
    real = walk_features()
    normalizer = Normalizer(real.mean(0), real.std(0))
    x0 = torch.from_numpy(normalizer.normalize(real).astype(np.float32))[None]
    loss = JointGeometryLoss(normalizer)
    mask = torch.ones(1, len(real), dtype=torch.bool)
    exact = loss(x0, x0, mask)
    assert float(exact.relative) == 0.0 and float(exact.consistency) < 1e-6
    shaken = torch.from_numpy(normalizer.normalize(as_generated(real)).astype(np.float32))[None]
    worse = loss(shaken, x0, mask)
    assert float(worse.relative) > 0.1 and float(worse.consistency) > 1.0


def test_geometry_loss_sees_a_body_floating_above_the_floor():
    """Lifted 8 cm, the walk is the same relative to its pelvis: only the ground term sees it, at
    (8 cm / 2 cm)^2."""
    real = walk_features()
    normalizer = Normalizer(real.mean(0), real.std(0))
    lifted = lifted_by(real, 0.08)
    t = len(real)
    x0, floating = (torch.from_numpy(normalizer.normalize(m).astype(np.float32))[None] for m in (real, lifted))
    mask = torch.ones(1, t, dtype=torch.bool)
    loss = JointGeometryLoss(normalizer)
    assert float(loss(x0, x0, mask).ground) == 0.0
    terms = loss(floating, x0, mask)
    assert float(terms.relative) < 1e-6
    assert abs(float(terms.ground) - 16.0) < 0.01


def test_geometry_loss_leaves_the_floor_to_rows_whose_global_channels_train():
    """Of two floating walks, the one whose global channels are unsupervised (a video capture in
    text mode) adds nothing to the ground term: half of the frames' (8 cm / 2 cm)^2."""
    real = walk_features()
    normalizer = Normalizer(real.mean(0), real.std(0))
    lifted = lifted_by(real, 0.08)
    t = len(real)
    x0, floating = (torch.from_numpy(normalizer.normalize(m).astype(np.float32))[None].repeat(2, 1, 1)
                    for m in (real, lifted))
    mask = torch.ones(2, t, dtype=torch.bool)
    terms = JointGeometryLoss(normalizer)(floating, x0, mask, global_rows=torch.tensor([True, False]))
    assert abs(float(terms.ground) - 8.0) < 0.01


def test_cleanup_keeps_the_pelvis_at_the_height_its_positions_give():
    """Velocity channels whose height component is biased by 3 mm per frame (as a generated run's
    were) integrate to decimetres over 5 s; the positions give the height in every frame, so the
    cleaned pelvis stays at it instead of sinking and dragging the feet along the floor."""
    real = walk_features()
    pelvis = features_to_joints(clean_features(shifted(real, JOINT_VEL, [0.0, 0.0, -0.003])))[:, 0]
    assert float(np.abs(pelvis[:, 2] - features_to_joints(real)[:, 0, 2]).max()) < 0.02


def test_cleaned_feet_stay_planted_when_the_pelvis_velocity_channels_overstate_travel():
    """Pelvis velocity channels that say 1.5 cm per frame more travel than the positions give (the
    positions of pelvis and feet agree with each other): led by the velocities over 100 frames, the
    body glides 1.4 m past its planted feet; anchored by the positions beyond about 22 frames, the
    cleaned walk slides and floats its feet like the real one."""
    real = walk_features()
    overstated = np.zeros((22, 3))
    overstated[0, 1] = 0.015
    cleaned, data = features_to_joints(clean_features(shifted(real, JOINT_VEL, overstated))), features_to_joints(real)
    assert metrics.foot_sliding(cleaned) <= 1.25 * metrics.foot_sliding(data)
    assert metrics.foot_floating(cleaned) <= 1.25 * metrics.foot_floating(data)


def test_cleaned_run_travels_as_its_velocity_channels_say_where_its_positions_lag():
    """Position channels that carry a fifth of a real run's travel beside exact velocity channels
    (a generated run's positions went 2.4 m where its velocities, like the real run, went 12.7 m):
    every joint's path is led by its velocities over about 22 frames, so the cleaned run covers over
    half the distance; anchored after about 5 frames it covered 28%."""
    real = load_builtin_clip("run", min_frames=101).motion.features().numpy()[:100]
    joints = features_to_joints(real)
    travel = joints[:, 0, :2] - joints[:1, 0, :2]  # (T, 2)
    behind = np.zeros((len(real), 1, 3))
    behind[:, 0, :2] = -0.8 * travel
    cleaned = features_to_joints(clean_features(shifted(real, JOINT_POS, behind)))
    share = np.linalg.norm(cleaned[-1, 0, :2] - cleaned[0, 0, :2]) / np.linalg.norm(travel[-1])
    assert share > 0.5


def test_cleaned_body_does_not_shiver_where_its_positions_do():
    """Body positions that shiver by 1.5 cm per frame around a real walk, beside its velocity
    channels: the cleaned walk is as smooth as the real one (velocities over a few frames)."""
    real = walk_features()
    shiver = np.random.default_rng(0).normal(0.0, 0.015, (len(real), 22, 3))
    shiver[:, 0] = 0.0  # the pelvis keeps its path
    cleaned, data = features_to_joints(clean_features(shifted(real, JOINT_POS, shiver))), features_to_joints(real)
    assert metrics.jitter_degree(cleaned) <= 1.1 * metrics.jitter_degree(data)


def test_cleaned_feet_never_go_below_the_floor():
    into_floor = np.zeros((22, 3))
    into_floor[[7, 8, 10, 11], 2] = -0.05  # feet and ankles 5 cm into the floor
    sunk = shifted(walk_features(), JOINT_POS, into_floor)
    assert metrics.ground_penetration(features_to_joints(sunk)) > 0.01
    cleaned = features_to_joints(clean_features(sunk))
    assert cleaned[:, [7, 8, 10, 11], 2].min() >= 0.0
    assert metrics.ground_penetration(cleaned) == 0.0


def test_cleanup_keeps_every_real_clips_body_at_its_height():
    """Lying, crawling, kicking and tiptoeing bodies rest with their lowest joint centimetres above
    the floor: a clean-up that stood every low frame's lowest joint on the floor would sink them
    (it moved the real cartwheel's pelvis by 12 cm)."""
    for clip in load_builtin_clips(min_frames=101):
        feats = clip.motion.features().numpy()[:100]
        pelvis_height = features_to_joints(feats)[:, 0, 2]
        assert np.abs(features_to_joints(clean_features(feats))[:, 0, 2] - pelvis_height).max() < 0.01, clip.name
