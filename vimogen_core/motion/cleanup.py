"""Generated features made into one consistent motion; applied after sampling for every consumer
(CLI, served model, MBench), and named in the MBench report.

The network writes joint positions, their velocities, the rotations and the root separately, and
nothing in sampling makes them agree: the pelvis read from the position channels wanders frame to
frame while the velocity channels integrate to a smooth path that drifts, and a planted foot
shivers by a few centimetres. `clean_features`:
1. fuses each joint's position channels with its velocity channels by least squares
   (`fuse_positions`): the velocities shape the path over short times, the positions anchor it
   over long ones (x and y over about 22 frames, heights over a few), separately for the pelvis
   (whose positions wander by decimetres) and for the body relative to it;
2. canonicalises like the data: frame 0 faces +Y (by the root orientation) with the pelvis at
   x = y = 0;
3. holds each foot still while it is planted (low and slow for at least a few frames), with the
   hold eased in and out over the neighbouring frames and the knee moved by inverse kinematics so
   the leg keeps its bone lengths, and keeps feet and ankles above the floor;
4. re-encodes, so velocities are the differences of the cleaned positions and the root channels the
   pelvis's: reading positions and integrating velocities give the same joints.
Rotations are the network's, smoothed over time (`rotation_sigma`) and turned with the root by the
canonicalisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vimogen_core.motion import rotations as rot
from vimogen_core.motion.representation import (JOINT_VEL, POSE6D, ROOT_ROT6D, encode_features, facing_turn_angle,
                                                 features_to_joints, features_to_rotations)
from vimogen_core.motion.skeleton import NUM_JOINTS

LEFT_HIP, RIGHT_HIP, LEFT_KNEE, RIGHT_KNEE = 1, 2, 4, 5
LEFT_ANKLE, RIGHT_ANKLE, LEFT_FOOT, RIGHT_FOOT = 7, 8, 10, 11
FEET = ((LEFT_FOOT, LEFT_ANKLE), (RIGHT_FOOT, RIGHT_ANKLE))  # (foot, the ankle moved with it)
LEGS = ((LEFT_HIP, LEFT_KNEE), (RIGHT_HIP, RIGHT_KNEE))  # the hip and knee above each of FEET


@dataclass(frozen=True)
class CleanupConfig:
    # A planted foot: below this height (m) and slower than this (m per frame, horizontal, over a
    # 3-frame average) for at least `min_contact_frames`.
    contact_height: float = 0.06
    contact_speed: float = 0.03
    min_contact_frames: int = 3
    ease_sigma: float = 1.0  # frames: how softly a hold starts and ends
    # How far the velocity channels decide the path over the position channels (fuse_positions):
    # sqrt of it is the time scale in frames. Pelvis and body (relative to it) alike over about 22
    # frames, so every joint's horizontal path is its own positions fused with its own velocities
    # (the fusion is linear): a network trained on windows that start like clips writes velocity
    # channels that travel as the data does (a run's: 12.7 m in 4 s, the real run 13.2 m) and
    # position channels that lag (2.4 m). Foot_Floating / Foot_Sliding against the real clips' on
    # three such training runs (the demo champion; seeds 0 and 1 trained on one thread):
    # over 5 frames (w = 30) 1.68x / 0.98x, 1.71x / 0.99x, 1.76x / 0.91x; over 22 (w = 500)
    # 1.01x / 1.19x, 1.36x / 1.12x, 1.22x / 0.98x; over 32 (w = 1000) 0.89x / 1.28x, 1.27x / 1.22x,
    # 1.15x / 1.06x. Led by the velocities for the pelvis alone (w = 1e4, body 300) 2.19x / 1.42x on
    # seed 0: the body then does not step with the path.
    root_velocity_weight: float = 500.0
    body_velocity_weight: float = 500.0
    # Heights, unlike x and y, are absolute in every frame's positions, while the velocity channels
    # carry a bias of millimetres per frame that integrates to decimetres: led by them over 100
    # frames (w = 1e4), a generated run sank 25 cm and dragged its feet along the floor; with the
    # body's height led over 100 frames too, the feet sank onto the floor (lowest joint at 0.0 m, the
    # real clips' at 3.4 cm). The body's height follows its velocities over about 5 frames.
    root_height_velocity_weight: float = 3.0
    body_height_velocity_weight: float = 30.0
    # Off under motion control: constraints are stated in the motion's own frame, which
    # re-canonicalising would move away from them.
    canonical: bool = True
    # Frames of Gaussian smoothing of the rotation channels (0: as sampled). BVH and glTF exports
    # animate the rotations, and the network's jitter: on the demo champion (built-in prompts x 3
    # seeds) the joints an export animated had 4.3x the real clips' Jitter_Degree and 5.6x their
    # Foot_Sliding; over 1 / 1.5 / 2 / 3 frames 2.4x / 1.7x / 1.2x / 0.75x and 4.6x / 3.2x / 2.9x /
    # 2.4x, and over 2 frames MBench's Body_Penetration 0.0152 -> 0.0026 and Pose_Quality 11.66 ->
    # 10.70. 2 is where the jitter comes near the data's; it turns the real clips' rotations by a
    # median 0.7 degrees (at most 51, in the backflip's and the spin kick's fastest frames).
    rotation_sigma: float = 2.0

    @property
    def name(self) -> str:
        return (f"clean-up: positions fused with velocities (pelvis w={self.root_velocity_weight:g}, "
                f"height w={self.root_height_velocity_weight:g}, body "
                f"w={self.body_velocity_weight:g}, body height w={self.body_height_velocity_weight:g}), {'frame 0 canonical, ' if self.canonical else ''}planted feet held "
                f"by leg IK (below {self.contact_height:g} m, under {self.contact_speed:g} m/frame, {self.min_contact_frames}+ frames), "
                f"feet above the floor, rotations smoothed over {self.rotation_sigma:g} frames")


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T,) bool -> starts, ends (exclusive) of its runs of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(T, C) along time, edges replicated."""
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights = (weights / weights.sum()).view(1, 1, -1)
    flat = F.pad(x.T[:, None], (radius, radius), mode="replicate")  # (C, 1, T + 2r)
    return F.conv1d(flat, weights)[:, 0].T


def two_bone_ik(hip: torch.Tensor, knee: torch.Tensor, thigh: torch.Tensor, shin: torch.Tensor,
                ankle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-bone inverse kinematics, frame by frame: a leg with hip and knee (T, 3), thigh and shin
    lengths (T, 1), whose ankle is wanted at `ankle` (T, 3) -> (knee, ankle) with both bones at their
    lengths and the knee bent toward where it was. An ankle out of the leg's reach is brought to the
    nearest point it reaches (the leg straight, or folded)."""
    to_ankle = ankle - hip
    distance = to_ankle.norm(dim=-1, keepdim=True).clamp(min=1e-6)  # (T, 1)
    axis = to_ankle / distance
    reach = distance.clamp(min=(thigh - shin).abs() + 1e-4, max=thigh + shin - 1e-4)
    bend = (knee - hip) - ((knee - hip) * axis).sum(-1, keepdim=True) * axis  # the knee off the hip-ankle line
    bend = bend / bend.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    along = (thigh**2 - shin**2 + reach**2) / (2 * reach)  # hip -> the knee's foot on the line
    across = (thigh**2 - along**2).clamp(min=0.0).sqrt()
    return hip + along * axis + across * bend, hip + reach * axis


def foot_hold(joints: torch.Tensor, config: CleanupConfig = CleanupConfig()) -> torch.Tensor:
    """joints (T, 22, 3) -> the same with each planted foot held at the foot's mean position over
    the contact, at least at floor height (z = 0): the ankle moves with the foot and the knee
    follows by inverse kinematics, so the leg keeps its bone lengths; where a hold is out of the
    leg's reach the foot goes as far as the straight leg takes it."""
    out = joints.clone()
    t = len(joints)
    if t < 3:
        return out
    for (foot, ankle), (hip, knee) in zip(FEET, LEGS):
        path = joints[:, foot]  # (T, 3)
        step = torch.zeros(t, dtype=joints.dtype)
        step[1:] = (path[1:, :2] - path[:-1, :2]).norm(dim=-1)
        speed = F.avg_pool1d(F.pad(step[None, None], (1, 1), mode="replicate"), 3, stride=1)[0, 0]  # (T,)
        planted = ((path[:, 2] < config.contact_height) & (speed < config.contact_speed)).numpy()
        starts, ends = _runs(planted)
        keep = ends - starts >= config.min_contact_frames
        run_id = np.full(t, -1)
        for k, (s, e) in enumerate(zip(starts[keep], ends[keep])):  # a few runs per motion
            run_id[s:e] = k
        inside = torch.from_numpy(run_id >= 0)
        if not bool(inside.any()):
            continue
        ids = torch.from_numpy(np.maximum(run_id, 0))
        n_runs = int(keep.sum())
        counts = torch.bincount(ids[inside], minlength=n_runs).to(joints.dtype)  # (R,)
        target = torch.zeros(n_runs, 3, dtype=joints.dtype).index_add_(0, ids[inside], path[inside]) / counts[:, None]
        target[:, 2] = target[:, 2].clamp(min=0.0)
        correction = torch.where(inside[:, None], target[ids] - path, torch.zeros_like(path))  # (T, 3)
        # Outside the holds the correction fades (smoothed); inside it is exact.
        correction = torch.where(inside[:, None], correction, gaussian_smooth(correction, config.ease_sigma))
        thigh = (joints[:, knee] - joints[:, hip]).norm(dim=-1, keepdim=True)  # (T, 1)
        shin = (joints[:, ankle] - joints[:, knee]).norm(dim=-1, keepdim=True)
        out[:, knee], reached = two_bone_ik(joints[:, hip], joints[:, knee], thigh, shin, joints[:, ankle] + correction)
        out[:, foot] += reached - joints[:, ankle]
        out[:, ankle] = reached
    return out


def fuse_positions(positions: torch.Tensor, velocities: torch.Tensor, velocity_weight: float,
                   position_weight: np.ndarray | None = None) -> torch.Tensor:
    """The path x (T, C) closest to both per-frame positions p (T, C) and forward differences v
    (T, C; the last row unused): argmin sum a_t |x_t - p_t|^2 + w sum |x_{t+1} - x_t - v_t|^2, solved
    exactly as banded systems. sqrt(w) is the time scale in frames below which the velocities decide
    the shape and above which the positions anchor it. a (T, C) is 1 unless `position_weight` says
    otherwise (motion control pins positions with a large weight: the path goes through them and the
    velocities shape it in between); columns with the same weights share one system."""
    from scipy.linalg import solveh_banded

    t = len(positions)
    p, v = positions.numpy(), velocities[:-1].numpy()  # (T, C), (T - 1, C)
    weight = np.ones_like(p) if position_weight is None else np.asarray(position_weight, dtype=np.float64)
    rhs = weight * p
    rhs[:-1] -= velocity_weight * v
    rhs[1:] += velocity_weight * v
    out = np.empty_like(p)
    if position_weight is None:  # one system for all columns (np.unique over columns costs milliseconds)
        patterns, column_pattern = weight[:, :1].T, np.zeros(weight.shape[1], dtype=int)
    else:
        patterns, column_pattern = np.unique(weight.T, axis=0, return_inverse=True)
    for k, a in enumerate(patterns):  # one system per distinct column of weights (usually one)
        banded = np.zeros((2, t))  # upper form: (diag(a) + w D^T D)
        banded[0, 1:] = -velocity_weight
        banded[1] = a + 2.0 * velocity_weight
        banded[1, [0, -1]] = a[[0, -1]] + velocity_weight
        columns = np.flatnonzero(column_pattern.reshape(-1) == k)
        out[:, columns] = solveh_banded(banded, rhs[:, columns])
    return torch.from_numpy(out)


def fuse_by_axis(positions: torch.Tensor, velocities: torch.Tensor, horizontal_weight: float, height_weight: float,
                 position_weight: np.ndarray | None = None) -> torch.Tensor:
    """Joint paths (T, J, 3) from their positions and velocities (T, J, 3) by `fuse_positions`, x and
    y with `horizontal_weight`, the height with `height_weight`; `position_weight` (T, J, 3) or None."""
    t, j = positions.shape[:2]
    out = torch.empty_like(positions)
    for axes, weight in ((slice(0, 2), horizontal_weight), (slice(2, 3), height_weight)):
        fused = fuse_positions(positions[:, :, axes].reshape(t, -1), velocities[:, :, axes].reshape(t, -1), weight,
                               None if position_weight is None else position_weight[:, :, axes].reshape(t, -1))
        out[:, :, axes] = fused.reshape(t, j, -1)
    return out


def canonical_frame_zero(local: torch.Tensor, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """local (T, 22, 3, 3), joints (T, 22, 3) turned and moved so that frame 0 faces +Y with the
    pelvis at x = y = 0, as curation canonicalises the data. The heading is read from the root
    orientation rather than from frame 0's hips (what curation uses on clean data): a generated
    frame-0 hip axis is off by up to 60 degrees where the root orientation is within 15."""
    turn = rot.rotation_about_z(facing_turn_angle(local[0, 0])).to(joints.dtype)
    joints = joints @ turn.T
    joints = joints - torch.cat([joints[0, 0, :2], joints.new_zeros(1)])
    local = local.clone()
    local[:, 0] = turn @ local[:, 0]
    return local, joints


def above_floor(joints: torch.Tensor) -> torch.Tensor:
    """joints (T, 22, 3) with every foot and ankle at or above the floor (z = 0), where the data's
    are: the generated ones dip below it by centimetres (MBench Ground_Penetration)."""
    out = joints.clone()
    feet = [joint for pair in FEET for joint in pair]
    out[:, feet, 2] = out[:, feet, 2].clamp(min=0.0)
    return out


def extend_one_frame(local: torch.Tensor, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One more frame at constant velocity (positions) and constant angular velocity (root), so
    that T frames of features can be encoded from T + 1 frames."""
    next_joints = 2 * joints[-1:] - joints[-2:-1]
    root = local[:, 0]
    next_root = root[-1:] @ root[-2:-1].transpose(-1, -2) @ root[-1:]
    next_local = local[-1:].clone()
    next_local[:, 0] = next_root
    return torch.cat([local, next_local]), torch.cat([joints, next_joints])


PIN_WEIGHT = 1e8  # a pinned position against the unit weight of a generated one


def clean_features(feats: np.ndarray, config: CleanupConfig = CleanupConfig(),
                   pinned: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """(T, 276) de-normalised generated features -> (T, 276) features of one consistent motion.
    `pinned` (mask (T, 22, 3) bool, positions (T, 22, 3)): joint coordinates the fused paths must
    go through (motion control); a pinned joint other than the pelvis is pinned relative to the
    fused pelvis."""
    f = torch.from_numpy(np.asarray(feats, dtype=np.float64))
    if len(f) < 2:
        return np.asarray(feats, dtype=np.float32)
    t = len(f)
    rotations = f.clone()
    if config.rotation_sigma > 0:
        for channels in (POSE6D, ROOT_ROT6D):
            rotations[:, channels] = gaussian_smooth(f[:, channels], config.rotation_sigma)
    local, _ = features_to_rotations(rotations)  # (T, 22, 3, 3), orthonormalised by Gram-Schmidt
    positions = features_to_joints(f)  # (T, 22, 3)
    velocities = f[:, JOINT_VEL].reshape(t, NUM_JOINTS, 3)
    relative = positions - positions[:, :1]
    if pinned is None:
        pelvis = fuse_by_axis(positions[:, :1], velocities[:, :1], config.root_velocity_weight,
                              config.root_height_velocity_weight)[:, 0]  # (T, 3)
        body_weight = None
    else:
        mask, values = np.asarray(pinned[0]), torch.from_numpy(np.asarray(pinned[1], dtype=np.float64))
        body_weight = np.where(mask, PIN_WEIGHT, 1.0)  # (T, 22, 3)
        pelvis = fuse_by_axis(torch.where(torch.from_numpy(mask[:, :1]), values[:, :1], positions[:, :1]),
                              velocities[:, :1], config.root_velocity_weight, config.root_height_velocity_weight,
                              body_weight[:, :1])[:, 0]
        relative = torch.where(torch.from_numpy(mask), values - pelvis[:, None], relative)
        relative[:, 0] = 0.0
    body = fuse_by_axis(relative, velocities - velocities[:, :1], config.body_velocity_weight,
                        config.body_height_velocity_weight, body_weight)  # (T, 22, 3) relative to the pelvis
    joints = body + pelvis[:, None]
    if config.canonical:
        local, joints = canonical_frame_zero(local, joints)
    joints = above_floor(foot_hold(joints, config))
    return encode_features(*extend_one_frame(local, joints)).float().numpy()
