"""Known values of the MBench motion-quality metrics (DESIGN.md section 8)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vimogen_core.motion import metrics
from vimogen_core.errors import MotionDataError
from vimogen_core.motion.kinematics import rest_joints24

# SMPL body frame (Y up, facing +Z) -> world (Z up, facing +Y): a proper rotation.
BODY_TO_WORLD = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


def standing_pose() -> np.ndarray:
    """(22, 3) rest pose in the world frame with the foot joints on the floor (z = 0)."""
    joints = rest_joints24()[:22] @ BODY_TO_WORLD.T
    joints[:, 2] -= joints[list(metrics.FEET), 2].min()
    return joints


def static_motion(n_frames: int = 60) -> np.ndarray:
    return np.repeat(standing_pose()[None], n_frames, axis=0)


def translated(motion: np.ndarray, step_per_frame) -> np.ndarray:
    """Add a constant per-frame translation to every joint."""
    steps = np.arange(len(motion))[:, None, None] * np.asarray(step_per_frame, dtype=float)
    return motion + steps


def test_static_pose_scores_zero_everywhere():
    scores = metrics.motion_quality_scores([static_motion()])
    for name in metrics.MOTION_QUALITY_DIMENSIONS:
        assert scores[name][0] == pytest.approx(0.0, abs=1e-12), name
    assert metrics.foot_contact(static_motion()).all()


def test_constant_translation_has_no_jitter_and_its_speed_as_dynamic_degree():
    motion = translated(static_motion(), [0.03, 0.04, 0.0])  # 0.05 m per frame
    assert metrics.jitter_degree(motion) == pytest.approx(0.0, abs=1e-12)
    # Root-relative joints do not move, so only the absolute term counts.
    assert metrics.dynamic_degree(motion) == pytest.approx(0.05, rel=1e-9)


def test_centimetre_noise_gives_the_expected_jitter():
    # Noise e_t ~ N(0, s^2 I3): the second difference is N(0, 6 s^2 I3), so its norm averages
    # sqrt(6) s E[chi_3] with E[chi_3] = 2 sqrt(2/pi). Root-relative noise e_j - e_0 has variance
    # 2 s^2, its second difference 12 s^2, and the root's own zero row is 1 of the 22 averaged.
    sigma = 0.01
    mean_chi3 = 2.0 * math.sqrt(2.0 / math.pi)
    expected = math.sqrt(6) * sigma * mean_chi3 + 21 / 22 * math.sqrt(12) * sigma * mean_chi3
    assert expected == pytest.approx(0.092, abs=5e-4)
    rng = np.random.default_rng(0)
    motion = static_motion(3000) + rng.normal(0.0, sigma, size=(3000, 22, 3))
    assert metrics.jitter_degree(motion) == pytest.approx(expected, rel=0.01)


def test_sunk_foot_reports_its_depth_and_ignores_raised_feet():
    motion = static_motion()
    motion[:, :, 2] -= 0.10  # whole pose sunk 10 cm
    assert metrics.ground_penetration(motion) == pytest.approx(0.10, rel=1e-9)
    motion[:, metrics.RIGHT_FOOT, 2] = 0.05  # right foot lifted: only the left foot's samples count
    assert metrics.ground_penetration(motion) == pytest.approx(0.10, rel=1e-9)
    motion[:, :, 2] += 0.097  # 3 mm below the floor is inside the 5 mm tolerance
    assert metrics.ground_penetration(motion) == 0.0


def test_feet_sliding_on_the_floor_score_their_step_length():
    motion = translated(static_motion(), [0.005, 0.0, 0.0])
    assert metrics.foot_sliding(motion) == pytest.approx(0.005, rel=1e-6)
    assert metrics.foot_contact(motion).all()


def test_foot_sliding_ignores_airborne_feet():
    motion = translated(static_motion(), [0.0, 0.03, 0.0])
    motion[:, :, 2] += 0.5  # both feet 50 cm up and moving 3 cm/frame: never in contact
    assert not metrics.foot_contact(motion).any()
    assert metrics.foot_sliding(motion) == 0.0


class TestFootFloating:
    n_frames = 40

    def walking_root(self) -> np.ndarray:
        """Standing pose whose upper body moves 2 cm/frame along +y while the feet stay planted."""
        motion = translated(static_motion(self.n_frames), [0.0, 0.02, 0.0])
        motion[:, list(metrics.FEET)] = standing_pose()[list(metrics.FEET)]
        return motion

    def test_planted_feet_under_a_moving_body_are_valid(self):
        assert metrics.foot_floating(self.walking_root()) == 0.0

    def test_gliding_body_flags_every_frame(self):
        # Feet on the floor but carried along with the root: both feet "in contact" yet moving
        # with rate 0 < 0.6, so every frame is flagged.
        glide = translated(static_motion(self.n_frames), [0.0, 0.02, 0.0])
        assert metrics.foot_floating(glide) == pytest.approx(1.0)

    def test_foot_carried_in_the_air_counts_half_of_its_run(self):
        motion = self.walking_root()
        carried = translated(static_motion(self.n_frames), [0.0, 0.02, 0.0])[:, metrics.LEFT_FOOT]
        motion[:, metrics.LEFT_FOOT] = carried + [0.0, 0.0, 0.10]
        contact = metrics.foot_contact(motion)
        assert not contact[:, 0].any() and contact[:, 1].all()
        # Rate 0 < 0.4 on every frame of a 40-frame airborne run: S = 20, N_frame = 0, M = 0.
        assert metrics.foot_floating(motion) == pytest.approx(0.5)

    def test_wiggling_flight_adds_the_overlap_length(self):
        flight = translated(static_motion(self.n_frames), [0.0, 0.02, 0.0])
        flight[:, :, 2] += 0.3
        # Both feet carried: each foot's 40-frame run has rate 0, S = 2 x 20, no peaks.
        assert metrics.foot_floating(flight) == pytest.approx(1.0)
        zigzag = flight.copy()
        zigzag[:, metrics.LEFT_FOOT, 0] += 0.03 * (-1.0) ** np.arange(self.n_frames)
        # The left foot now moves fast relative to the root (no S from it, S = 20 from the right)
        # and its path angle has many peaks, so the whole 40-frame overlap counts: (20 + 40) / 40.
        assert metrics.foot_floating(zigzag) == pytest.approx(1.5)

    def test_terms_name_which_part_of_the_formula_counts(self):
        glide = translated(static_motion(self.n_frames), [0.0, 0.02, 0.0])
        flight = glide.copy()
        flight[:, :, 2] += 0.3
        zigzag = flight.copy()
        zigzag[:, metrics.LEFT_FOOT, 0] += 0.03 * (-1.0) ** np.arange(self.n_frames)
        terms = metrics.foot_floating_terms([glide, flight, zigzag])
        np.testing.assert_allclose(terms["N_frame"], [1.0, 0.0, 0.0])  # gliding contact feet
        np.testing.assert_allclose(terms["S"], [0.0, 1.0, 0.5])  # feet carried in the air
        np.testing.assert_allclose(terms["M"], [0.0, 0.0, 1.0])  # the wiggling flight
        np.testing.assert_allclose(sum(terms.values()), metrics.foot_floating([glide, flight, zigzag]))

    def test_a_still_root_is_never_flagged(self):
        still = static_motion(self.n_frames)
        still[:, metrics.LEFT_FOOT, 0] += 0.001 * np.arange(self.n_frames)  # slow foot drift
        assert metrics.foot_floating(still) == 0.0


def test_batch_scores_equal_single_motion_scores():
    rng = np.random.default_rng(1)
    motions = []
    for n_frames in (50, 3, 120, 77):
        base = translated(static_motion(n_frames), rng.normal(0, 0.02, size=3))
        motions.append(base + rng.normal(0, 0.01, size=base.shape))
    batch = metrics.motion_quality_scores(motions)
    singles = {
        "Jitter_Degree": metrics.jitter_degree,
        "Dynamic_Degree": metrics.dynamic_degree,
        "Ground_Penetration": metrics.ground_penetration,
        "Foot_Sliding": metrics.foot_sliding,
        "Foot_Floating": metrics.foot_floating,
    }
    for name, function in singles.items():
        expected = [function(m) for m in motions]
        np.testing.assert_allclose(batch[name], expected, rtol=1e-12, atol=1e-15, err_msg=name)
    # The list form of each single metric returns the same per-motion values.
    np.testing.assert_allclose(metrics.jitter_degree(motions), batch["Jitter_Degree"])


# The released evaluation's conversion (scripts/organize_mbench_results.py, DESIGN.md section 8).
RELEASED_BASE = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
RELEASED_FRONT = np.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])
RELEASED_COORD_CONVERSION = RELEASED_FRONT @ RELEASED_BASE


def released_foot_metrics(joints: np.ndarray) -> tuple[float, float]:
    """Ground_Penetration and Foot_Sliding as the released functions compute them: index 2 is
    height, indices 0:2 the ground plane, whatever frame the joints are in."""
    feet = joints[:, list(metrics.FEET)]  # (T, 2, 3)
    height = feet[..., 2]
    sunk = height < -metrics.PENETRATION_DEPTH
    penetration = float(np.abs(height[sunk]).mean()) if sunk.any() else 0.0
    step = np.diff(feet, axis=0)
    step = np.concatenate([step, step[-1:]])  # padded: the last difference repeats
    contact = (np.linalg.norm(step, axis=-1) < metrics.CONTACT_STEP) | (height < metrics.CONTACT_HEIGHT)  # (T, 2)
    slide = np.linalg.norm(step[..., :2], axis=-1)
    sliding = float(np.mean([(slide[:, k] * contact[:, k]).sum() / (contact[:, k].sum() + 1e-6) for k in range(2)]))
    return penetration, sliding


def test_released_compatibility_mode_gives_the_released_conversions_values():
    # Walking forward (+y) from 40 cm behind the origin to 10 cm in front of it, the left foot lifting
    # 5 cm every other half-second and the right foot 1 cm under the floor: forward axis and height
    # differ, and the forward range is asymmetric about 0, so a sign error in the conversion shows.
    n_frames = 60
    motion = translated(static_motion(n_frames), [0.0, 0.5 / (n_frames - 1), 0.0])
    motion[:, :, 1] -= 0.40
    motion[:, metrics.LEFT_FOOT, 2] += 0.05 * np.clip(np.sin(np.arange(n_frames) * np.pi / 10), 0.0, None)
    motion[:, metrics.RIGHT_FOOT, 2] = -0.01
    released_frame = motion @ RELEASED_COORD_CONVERSION.T  # the released script's p -> C p
    penetration, sliding = released_foot_metrics(released_frame)
    assert penetration > 0.1 and sliding > 0.001  # the forward axis is read as height

    compat = metrics.motion_quality_scores([motion], height_axis=metrics.HEIGHT_RELEASED_COMPAT)
    assert compat["Ground_Penetration"][0] == pytest.approx(penetration, rel=1e-12)
    assert compat["Foot_Sliding"][0] == pytest.approx(sliding, rel=1e-12)
    # Every metric in that mode is the formula applied to the released frame as given (index 2 up).
    on_released_frame = metrics.motion_quality_scores([released_frame])
    for name in metrics.MOTION_QUALITY_DIMENSIONS:
        assert compat[name][0] == pytest.approx(on_released_frame[name][0], rel=1e-12, abs=1e-15), name

    # The default mode measures true height (z): only the right foot's 1 cm is under the floor.
    true_height = metrics.motion_quality_scores([motion])
    assert true_height["Ground_Penetration"][0] == pytest.approx(0.01)
    assert (true_height["Ground_Penetration"][0], true_height["Foot_Sliding"][0]) == pytest.approx(
        released_foot_metrics(motion), rel=1e-12)
    with pytest.raises(ValueError, match="height_axis"):
        metrics.ground_penetration(motion, height_axis="y")


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.zeros((10, 21, 3)), "shape"),
        (np.zeros((2, 22, 3)), "at least 3"),
        (np.full((10, 22, 3), np.nan), "NaN"),
        (np.zeros((10, 22)), "shape"),
    ],
)
def test_invalid_joints_raise_errors_that_name_the_file(array, reason):
    with pytest.raises(MotionDataError, match=reason) as info:
        metrics.validate_joints(array, "gen/7.npy")
    assert str(info.value).startswith("gen/7.npy: ")


# --- pose metrics: IK, self-penetration, pose prior ----------------------------------------------

from vimogen_core.bench import ik, penetration, priors  # noqa: E402
from vimogen_core.motion.kinematics import forward_kinematics  # noqa: E402
from vimogen_core.motion.rotations import axis_angle_to_matrix  # noqa: E402
from vimogen_core.sources.deepmimic import load_builtin_clip  # noqa: E402


def rotation(axis_angle) -> np.ndarray:
    import torch

    return axis_angle_to_matrix(torch.tensor(axis_angle, dtype=torch.float64)).numpy()


def test_ik_fit_reproduces_real_motion_joints():
    import torch

    motion = load_builtin_clip("cartwheel").motion
    local = ik.ik_fit(motion.joints.numpy())
    pelvis_offset = torch.as_tensor(motion.offsets[0])
    joints, _ = forward_kinematics(torch.as_tensor(local), motion.joints[:, 0] - pelvis_offset, motion.offsets)
    np.testing.assert_allclose(joints.numpy(), motion.joints.numpy(), atol=1e-8)
    # Rotations are proper (orthonormal, det +1) for every frame and joint.
    np.testing.assert_allclose(local @ local.swapaxes(-1, -2), np.broadcast_to(np.eye(3), local.shape), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(local), 1.0, atol=1e-9)


def test_swing_handles_opposite_directions():
    a = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    b = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    turned = np.einsum("nij,nj->ni", ik.swing_rotation(a, b), a)
    np.testing.assert_allclose(turned, b, atol=1e-12)


def test_triangle_intersection_test():
    flat = np.array([[[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 0.0]]])
    through = np.array([[[0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [0.0, 0.5, 1.0]]])  # pierces `flat`
    above = through + [0.0, 0.0, 2.5]
    assert penetration.triangles_intersect(flat, through)[0]
    assert not penetration.triangles_intersect(flat, above)[0]


@pytest.fixture(scope="module")
def body_mesh() -> penetration.BodyMesh:
    return penetration.BodyMesh.procedural()


def test_body_penetration_is_zero_at_rest_and_positive_for_crossed_legs(body_mesh):
    rest = np.broadcast_to(np.eye(3), (1, 22, 3, 3)).copy()
    assert body_mesh.body_penetration(rest) == 0.0
    crossed = rest.copy()
    crossed[0, 1] = rotation([0.0, 0.0, -np.radians(15)])  # left leg swung across the right one
    crossed_percentage = body_mesh.body_penetration(crossed)
    assert 1.0 < crossed_percentage < 20.0
    # Per frame, then averaged: one crossed frame out of two halves the score.
    assert body_mesh.body_penetration(np.concatenate([rest, crossed])) == pytest.approx(crossed_percentage / 2)


def test_real_motion_does_not_self_penetrate_much(body_mesh):
    walk = load_builtin_clip("walk").motion
    assert body_mesh.body_penetration(walk.local_rotmats.numpy()) == 0.0


@pytest.fixture(scope="module")
def prior_without_walk() -> priors.PosePrior:
    return priors.PosePrior.builtin(exclude=["walk"])


def test_pose_prior_ranks_a_real_unseen_motion_above_corrupted_poses(prior_without_walk):
    import torch

    walk = load_builtin_clip("walk").motion
    local = walk.local_rotmats.numpy()
    real = prior_without_walk.pose_quality(local)
    rng = np.random.default_rng(0)
    noisy = local @ axis_angle_to_matrix(torch.as_tensor(rng.normal(0, 0.4, size=(len(local), 22, 3)))).numpy()
    backward_knees = local.copy()
    backward_knees[:, [4, 5]] = rotation([np.radians(-100), 0.0, 0.0])  # knees bent the wrong way
    assert real < prior_without_walk.pose_quality(noisy)
    assert real < prior_without_walk.pose_quality(backward_knees)
    # Joint-only input goes through IK and the twist-free bank, and ranks the same way.
    from vimogen_core.motion.kinematics import forward_kinematics as fk

    bad_joints, _ = fk(torch.as_tensor(backward_knees), walk.joints[:, 0], walk.offsets)
    real_ik = prior_without_walk.pose_quality(ik.ik_fit(walk.joints.numpy()), swing_only=True)
    bad_ik = prior_without_walk.pose_quality(ik.ik_fit(bad_joints.numpy()), swing_only=True)
    assert real_ik < bad_ik


def test_distance_field_checkpoints_load_with_weights_only(tmp_path, prior_without_walk):
    import pickle

    import torch

    field = priors.fit_distance_field(prior_without_walk, steps=150, batch=128, hidden=(64, 64))
    checkpoint = tmp_path / "nrdf_like.pt"
    torch.save({"state_dict": field.state_dict()}, checkpoint)
    loaded = priors.DistanceFieldPrior.load(checkpoint)
    walk = load_builtin_clip("walk").motion.local_rotmats.numpy()
    rng = np.random.default_rng(1)
    noisy = walk @ axis_angle_to_matrix(torch.as_tensor(rng.normal(0, 0.6, size=(len(walk), 22, 3)))).numpy()
    assert loaded.pose_quality(walk) < loaded.pose_quality(noisy)
    assert "nrdf_like.pt" in loaded.name

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    hostile = tmp_path / "hostile.pt"
    hostile.write_bytes(pickle.dumps({"state_dict": Payload()}, protocol=2))
    with pytest.raises(MotionDataError, match="hostile.pt: refused to load: reading it would need unpickling"):
        priors.DistanceFieldPrior.load(hostile)
    torch.save({"layers.0.weight": torch.zeros(3, 5)}, tmp_path / "wrong.pt")
    with pytest.raises(MotionDataError, match="84 inputs"):
        priors.DistanceFieldPrior.load(tmp_path / "wrong.pt")
