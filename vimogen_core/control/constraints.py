"""What a user pins when generating: keyframes, a root path, kept joints of a source motion, a
prefix. Each constraint becomes `Targets` for a motion of T frames: which of the 276 feature
channels are known and their values (de-normalised), and which joint coordinates are pinned in
metres (what enforcement makes exact and what the checks measure).

Constraints are stated in the motion's own frame: Z up, metres, 20 fps, and (like every curated
clip and every generated motion) frame 0 facing +Y with the pelvis at x = y = 0 unless the
constraints place it elsewhere. Every check runs before any sampling, so bad input costs nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from vimogen_core.motion import rotations as rot
from vimogen_core.motion.representation import (FEATURE_DIM, JOINT_POS, JOINT_VEL, POSE6D, ROOT_ANGVEL, ROOT_ROT6D,
                                                ROOT_TRANS, ROOT_VEL, facing_turn_angle)
from vimogen_core.motion.skeleton import FPS, JOINT_NAMES, NUM_JOINTS

JOINT_GROUPS = {
    "upper": tuple(JOINT_NAMES.index(n) for n in (
        "spine1", "spine2", "spine3", "neck", "head", "left_collar", "right_collar", "left_shoulder",
        "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist")),
    "lower": tuple(JOINT_NAMES.index(n) for n in (
        "pelvis", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_foot",
        "right_foot")),
}
MAX_ROOT_SPEED = 12.0  # m/s: faster than a sprinter, so a path asking for more is a mistake
AGREEMENT = 1e-4  # two constraints on one channel must agree to this (metres or rot6d units)


class ConstraintError(ValueError):
    """Constraints that cannot be met as given; raised before any sampling."""


@dataclass
class Targets:
    """Known channels of a T-frame motion. mask/values (T, 276); joint_mask/joint_values (T, 22, 3):
    the pinned joint coordinates; `rotation_channels` (T, 276) bool: the rotation channels set
    exactly at the end (kept joints, full-body keyframes). `sources` names each constraint for errors.
    relative_joints/relative_positions ((J,), (T, 22, 3), NaN where free): joints that follow a
    source's pose relative to the pelvis in its heading frame (body-part editing without the
    pelvis), placed at the end on the generated pelvis, turned to its heading."""

    mask: np.ndarray
    values: np.ndarray
    joint_mask: np.ndarray
    joint_values: np.ndarray
    rotation_channels: np.ndarray
    sources: tuple[str, ...]
    relative_joints: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    relative_positions: np.ndarray | None = None
    heading: np.ndarray | None = None  # (T,) radians the body faces (0: +Y), NaN where free

    @classmethod
    def empty(cls, n_frames: int) -> "Targets":
        return cls(np.zeros((n_frames, FEATURE_DIM), bool), np.zeros((n_frames, FEATURE_DIM), np.float32),
                   np.zeros((n_frames, NUM_JOINTS, 3), bool), np.zeros((n_frames, NUM_JOINTS, 3), np.float32),
                   np.zeros((n_frames, FEATURE_DIM), bool), ())

    @property
    def n_frames(self) -> int:
        return len(self.mask)

    def pin_joints(self, frames: np.ndarray, joints: np.ndarray, positions: np.ndarray, axes=(0, 1, 2)) -> None:
        """Pin joint positions (len(frames), len(joints), len(axes)) and, where the next frame is pinned
        too, the velocity channels between them; the pelvis also pins the root translation channels."""
        frames, joints, axes = np.asarray(frames), np.asarray(joints), np.asarray(axes)
        index = np.ix_(frames, joints, axes)
        self.joint_mask[index] = True
        self.joint_values[index] = positions
        position = self.joint_values.reshape(self.n_frames, -1)
        pinned = self.joint_mask.reshape(self.n_frames, -1)
        self.mask[:, JOINT_POS] |= pinned
        self.values[:, JOINT_POS] = np.where(pinned, position, self.values[:, JOINT_POS])
        both = pinned[:-1] & pinned[1:]
        self.mask[:-1, JOINT_VEL] |= both
        self.values[:-1, JOINT_VEL] = np.where(both, position[1:] - position[:-1], self.values[:-1, JOINT_VEL])
        self.mask[:, ROOT_TRANS] = self.mask[:, JOINT_POS][:, :3]
        self.values[:, ROOT_TRANS] = self.values[:, JOINT_POS][:, :3]
        self.mask[:, ROOT_VEL] = self.mask[:, JOINT_VEL][:, :3]
        self.values[:, ROOT_VEL] = self.values[:, JOINT_VEL][:, :3]

    def pin_channels(self, frames: np.ndarray, channels: np.ndarray, values: np.ndarray) -> None:
        """Pin raw feature channels (rotations) at frames: values (len(frames), len(channels))."""
        index = np.ix_(np.asarray(frames), np.asarray(channels))
        self.mask[index] = True
        self.values[index] = values
        self.rotation_channels[index] = True

    def merged(self, other: "Targets") -> "Targets":
        """Both sets of targets; a channel both pin must get the same value from each."""
        if other.n_frames != self.n_frames:
            raise ConstraintError(f"constraints for {self.n_frames} and {other.n_frames} frames cannot be combined")
        clash = self.mask & other.mask & (np.abs(self.values - other.values) > AGREEMENT)
        if clash.any():
            frame, channel = (int(i) for i in np.argwhere(clash)[0])
            raise ConstraintError(
                f"contradictory constraints: {', '.join(self.sources)} and {', '.join(other.sources)} pin feature "
                f"channel {channel} at frame {frame} to {self.values[frame, channel]:.4g} and "
                f"{other.values[frame, channel]:.4g}")
        if len(self.relative_joints) and len(other.relative_joints):
            raise ConstraintError("contradictory constraints: joints of two source motions kept relative to the pelvis")
        relative = self if len(self.relative_joints) else other
        absolute = other if relative is self else self
        if len(relative.relative_joints) and absolute.joint_mask[:, relative.relative_joints].any():
            raise ConstraintError(f"contradictory constraints: {', '.join(absolute.sources)} pins joints that "
                                  f"{', '.join(relative.sources)} keeps from its source")
        if self.heading is not None and other.heading is not None:
            raise ConstraintError("contradictory constraints: two trajectories give a heading")
        if (self.heading is not None or other.heading is not None) and (self.rotation_channels[:, ROOT_ROT6D].any()
                                                                      or other.rotation_channels[:, ROOT_ROT6D].any()):
            raise ConstraintError("contradictory constraints: a heading and a pinned root orientation")
        return Targets(self.mask | other.mask, np.where(other.mask, other.values, self.values),
                       self.joint_mask | other.joint_mask,
                       np.where(other.joint_mask, other.joint_values, self.joint_values),
                       self.rotation_channels | other.rotation_channels, self.sources + other.sources,
                       relative.relative_joints, relative.relative_positions,
                       self.heading if self.heading is not None else other.heading)


def pose_in_heading_frame(feats: np.ndarray) -> np.ndarray:
    """(T, 276) -> (T, 22, 3) joints relative to the pelvis, turned per frame so the root faces +Y:
    what body-part editing keeps of a source when the pelvis is not kept."""
    feats = np.asarray(feats, dtype=np.float64)
    root = rot.rot6d_to_matrix(torch.from_numpy(feats[:, ROOT_ROT6D]))
    turn = rot.rotation_about_z(facing_turn_angle(root)).numpy()  # (T, 3, 3)
    positions = feats[:, JOINT_POS].reshape(len(feats), NUM_JOINTS, 3)
    return np.einsum("tij,tkj->tki", turn, positions - positions[:, :1])


def _finite(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ConstraintError(f"{name}: values must be finite (found NaN or Inf)")
    return array


def _source_features(name: str, feats: np.ndarray) -> np.ndarray:
    feats = _finite(name, feats)
    if feats.ndim != 2 or feats.shape[1] != FEATURE_DIM:
        raise ConstraintError(f"{name}: expected features of shape (T, {FEATURE_DIM}), got {feats.shape}")
    return feats


def _joint_indices(name: str, joints) -> np.ndarray:
    if isinstance(joints, str):
        if joints not in JOINT_GROUPS:
            raise ConstraintError(f"{name}: unknown joint group {joints!r}; use {' or '.join(JOINT_GROUPS)} or a list")
        return np.array(JOINT_GROUPS[joints])
    out = []
    for joint in joints:
        if isinstance(joint, str):
            if joint not in JOINT_NAMES:
                raise ConstraintError(f"{name}: unknown joint {joint!r}; joints are {', '.join(JOINT_NAMES)}")
            joint = JOINT_NAMES.index(joint)
        if not 0 <= int(joint) < NUM_JOINTS:
            raise ConstraintError(f"{name}: joint index {joint} outside 0..{NUM_JOINTS - 1}")
        out.append(int(joint))
    if not out or len(set(out)) != len(out):
        raise ConstraintError(f"{name}: joints must be a non-empty list without repeats, got {list(joints)}")
    return np.array(out)


def _rotation_channels(joints: np.ndarray) -> np.ndarray:
    """Feature channels of the joints' rotations: the body's rot6d, and the root's orientation and
    its per-frame change for the pelvis."""
    channels = [np.arange(POSE6D.start + 6 * (j - 1), POSE6D.start + 6 * j) for j in joints if j > 0]
    if 0 in joints:
        channels += [np.arange(ROOT_ROT6D.start, ROOT_ROT6D.stop), np.arange(ROOT_ANGVEL.start, ROOT_ANGVEL.stop)]
    return np.concatenate(channels)


@dataclass(frozen=True)
class Keyframes:
    """Joint positions at frames: `positions` (K, J, 3) metres for `joints` (names, indices or a
    group; default all 22), or full-body poses `poses` (K, 276) features (every rotation and
    position of the pose is pinned)."""

    frames: tuple[int, ...]
    positions: np.ndarray | None = None
    joints: tuple | str | None = None
    poses: np.ndarray | None = None

    def targets(self, n_frames: int) -> Targets:
        name = "keyframes"
        frames = np.asarray(self.frames)
        if frames.ndim != 1 or len(frames) == 0:
            raise ConstraintError(f"{name}: give at least one frame")
        if frames.min() < 0 or frames.max() >= n_frames:
            raise ConstraintError(f"{name}: frame {int(frames.max() if frames.max() >= n_frames else frames.min())} "
                                  f"outside the motion's 0..{n_frames - 1}")
        if len(set(frames.tolist())) != len(frames):
            raise ConstraintError(f"{name}: a frame is given twice: {frames.tolist()}")
        if (self.positions is None) == (self.poses is None):
            raise ConstraintError(f"{name}: give either joint positions or full-body poses")
        targets = Targets.empty(n_frames)
        if self.poses is not None:
            poses = _source_features(f"{name} poses", self.poses)
            if len(poses) != len(frames):
                raise ConstraintError(f"{name}: {len(frames)} frames but {len(poses)} poses")
            everyone = np.arange(NUM_JOINTS)
            targets.pin_joints(frames, everyone, poses[:, JOINT_POS].reshape(-1, NUM_JOINTS, 3))
            rotations = np.r_[POSE6D.start:POSE6D.stop, ROOT_ROT6D.start:ROOT_ROT6D.stop]
            targets.pin_channels(frames, rotations, poses[:, rotations])
        else:
            joints = _joint_indices(name, range(NUM_JOINTS) if self.joints is None else self.joints)
            positions = _finite(f"{name} positions", self.positions)
            if positions.shape != (len(frames), len(joints), 3):
                raise ConstraintError(f"{name}: positions must be ({len(frames)}, {len(joints)}, 3) for "
                                      f"{len(frames)} frames of {len(joints)} joints, got {positions.shape}")
            targets.pin_joints(frames, joints, positions)
        targets.sources = (name,)
        return targets


@dataclass(frozen=True)
class RootTrajectory:
    """The pelvis's ground path: `xy` (T, 2) per frame, or `waypoints` (N, 2) reached at `times`
    (N,) seconds and joined by straight lines at constant speed between them (the pelvis is free
    before the first and after the last). `heading_deg` (one per xy row or waypoint, optional):
    the way the body faces, degrees counter-clockwise from +Y (90 = facing -X)."""

    xy: np.ndarray | None = None
    waypoints: np.ndarray | None = None
    times: np.ndarray | None = None
    heading_deg: np.ndarray | None = None

    def headings(self, n_frames: int, frames: np.ndarray) -> np.ndarray | None:
        """(F,) radians at the path's frames (waypoint headings interpolated the short way round)."""
        if self.heading_deg is None:
            return None
        degrees = _finite("trajectory heading_deg", self.heading_deg)
        rows = len(self.xy) if self.xy is not None else len(self.waypoints)
        if degrees.shape != (rows,):
            raise ConstraintError(f"trajectory: heading_deg needs one value per {'xy row' if self.xy is not None else 'waypoint'} "
                                  f"({rows}), got shape {degrees.shape}")
        radians = np.unwrap(np.radians(degrees.astype(np.float64)))
        if self.xy is not None:
            return radians
        return np.interp(frames / FPS, np.asarray(self.times, dtype=np.float64), radians)

    def path(self, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """(frames (F,), xy (F, 2)) of the pinned pelvis positions."""
        name = "trajectory"
        if (self.xy is None) == (self.waypoints is None):
            raise ConstraintError(f"{name}: give either per-frame xy or waypoints with times")
        if self.xy is not None:
            xy = _finite(f"{name} xy", self.xy)
            if xy.ndim != 2 or xy.shape[1] != 2 or not 2 <= len(xy) <= n_frames:
                raise ConstraintError(f"{name}: xy must be (T, 2) with 2 <= T <= {n_frames} frames, got {xy.shape}")
            frames = np.arange(len(xy))
        else:
            points = _finite(f"{name} waypoints", self.waypoints)
            times = _finite(f"{name} times", np.zeros(0) if self.times is None else self.times)
            if points.ndim != 2 or points.shape[1] != 2 or len(points) < 2 or times.shape != (len(points),):
                raise ConstraintError(f"{name}: waypoints must be (N >= 2, 2) with N times, got {points.shape} "
                                      f"and {times.shape}")
            if (np.diff(times) <= 0).any() or times[0] < 0:
                raise ConstraintError(f"{name}: waypoint times must start at >= 0 s and increase, got {times.tolist()}")
            start, stop = int(np.ceil(times[0] * FPS)), int(np.floor(times[-1] * FPS))
            if stop >= n_frames:
                raise ConstraintError(f"{name}: the last waypoint at {times[-1]:g} s is after the motion's "
                                      f"{(n_frames - 1) / FPS:g} s")
            frames = np.arange(start, stop + 1)
            xy = np.stack([np.interp(frames / FPS, times, points[:, k]) for k in range(2)], axis=1)
        speed = np.linalg.norm(np.diff(xy, axis=0), axis=1).max(initial=0.0) * FPS
        if speed > MAX_ROOT_SPEED:
            raise ConstraintError(f"{name}: the path moves at up to {speed:.1f} m/s; at most {MAX_ROOT_SPEED:g} m/s")
        return frames, xy.astype(np.float32)

    def targets(self, n_frames: int) -> Targets:
        frames, xy = self.path(n_frames)
        targets = Targets.empty(n_frames)
        targets.pin_joints(frames, np.array([0]), xy[:, None, :], axes=(0, 1))
        heading = self.headings(n_frames, frames)
        if heading is not None:
            targets.heading = np.full(n_frames, np.nan)
            targets.heading[frames] = heading
        targets.sources = ("trajectory",)
        return targets


@dataclass(frozen=True)
class KeepJoints:
    """Body-part editing: the listed joints (or "upper"/"lower") follow `source` (T_s, 276) over
    the source's frames, their rotations exactly; the rest is generated. With the pelvis among them
    their positions are kept where they are; without it, relative to the generated pelvis (turned
    with its heading), so the kick's upper body can ride on a walk."""

    source: np.ndarray
    joints: tuple | str

    def targets(self, n_frames: int) -> Targets:
        source = _source_features("kept-joints source", self.source)
        joints = _joint_indices("kept joints", self.joints)
        frames = np.arange(min(len(source), n_frames))
        targets = Targets.empty(n_frames)
        positions = source[frames][:, JOINT_POS].reshape(len(frames), NUM_JOINTS, 3)
        if 0 in joints:
            targets.pin_joints(frames, joints, positions[:, joints])
        else:
            targets.relative_joints = joints
            targets.relative_positions = np.full((n_frames, NUM_JOINTS, 3), np.nan, np.float32)  # NaN: free
            targets.relative_positions[frames] = pose_in_heading_frame(source[frames])
        channels = _rotation_channels(joints)
        targets.pin_channels(frames, channels, source[frames][:, channels])
        targets.sources = ("kept joints",)
        return targets


@dataclass(frozen=True)
class Prefix:
    """Continue `source` (P, 276): the motion's first P frames are the source, exactly."""

    source: np.ndarray

    def targets(self, n_frames: int) -> Targets:
        source = _source_features("continued motion", self.source)
        if len(source) >= n_frames:
            raise ConstraintError(f"continued motion: {len(source)} frames leave nothing to generate in {n_frames}")
        frames = np.arange(len(source))
        targets = Targets.empty(n_frames)
        targets.pin_joints(frames, np.arange(NUM_JOINTS), source[:, JOINT_POS].reshape(-1, NUM_JOINTS, 3))
        channels = _rotation_channels(np.arange(NUM_JOINTS))
        targets.pin_channels(frames, channels, source[:, channels])
        # Every channel, velocities of the last frame included: they carry the motion on.
        targets.mask[frames] = True
        targets.values[frames] = source
        targets.sources = ("continued motion",)
        return targets


def combine(constraints, n_frames: int) -> Targets:
    """One `Targets` for all constraints on a T-frame motion; contradictions are errors."""
    targets = Targets.empty(n_frames)
    if not constraints:
        raise ConstraintError("no constraints given")
    for constraint in constraints:
        targets = targets.merged(constraint.targets(n_frames))
    return targets
