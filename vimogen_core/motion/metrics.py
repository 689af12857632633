"""MBench motion-quality metrics over joint positions (DESIGN.md section 8), vectorised. They sit
in the lowest layer because curation's jitter gate and the benchmark score motions with the same
functions.

Every function takes joints (T, 22, 3) in metres, Z up, 20 fps (or a list of such arrays, then it
returns one value per motion). Internally a batch is packed into one long (N, 22, 3) array with
segment boundaries, so 450 motions are scored with a handful of numpy calls instead of a Python
loop over motions or frames.

Height conventions (`height_axis`):
- "true" (default): height is z, horizontal is (x, y) - what the formulas mean.
- "released_yup_index2": the released evaluation script's literal behaviour. It first converts
  the Z-up joints to Y-up with the script's COORD_CONVERSION (matrices in DESIGN.md section 8),
  (x, y, z) -> (-x, z, y), and then still reads index 2 as height and indices 0:2 as the ground
  plane, so "height" is the forward axis and "horizontal" contains the true vertical. Use it only
  to reproduce published numbers.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vimogen_core.errors import MotionDataError

NUM_JOINTS = 22
ROOT = 0
LEFT_FOOT, RIGHT_FOOT = 10, 11
FEET = (LEFT_FOOT, RIGHT_FOOT)
MIN_FRAMES = 3  # second differences need three frames

HEIGHT_TRUE = "true"
HEIGHT_RELEASED_COMPAT = "released_yup_index2"
HEIGHT_MODES = (HEIGHT_TRUE, HEIGHT_RELEASED_COMPAT)

MOTION_QUALITY_DIMENSIONS = (
    "Jitter_Degree",
    "Dynamic_Degree",
    "Ground_Penetration",
    "Foot_Sliding",
    "Foot_Floating",
)

# Thresholds of the published formulas (metres, per 20 fps frame).
CONTACT_STEP = 0.01
CONTACT_HEIGHT = 0.02
PENETRATION_DEPTH = 0.005
STILL_ROOT_STEP = 1e-3
RATE_EPS = 1e-6
FLOAT_STEP = 1.2e-4
RATE_LOW, RATE_HIGH = 0.6, 1.75
FLOAT_RATE = 0.4
MIN_RUN = 4
MAX_ANGLE_PEAKS = 2


def validate_joints(joints, source: str | Path | None = None) -> np.ndarray:
    """Check one motion and return it as float64 (T, 22, 3); MotionDataError names `source`."""
    array = np.asarray(joints)
    if array.ndim != 3 or array.shape[1:] != (NUM_JOINTS, 3):
        raise MotionDataError(source, f"expected joints of shape (T, 22, 3), got {tuple(array.shape)}")
    if not np.issubdtype(array.dtype, np.number):
        raise MotionDataError(source, f"joints must be numeric, got dtype {array.dtype}")
    if array.shape[0] < MIN_FRAMES:
        raise MotionDataError(source, f"motion has {array.shape[0]} frames; at least {MIN_FRAMES} are needed")
    if not np.isfinite(array).all():
        raise MotionDataError(source, "joints contain NaN or infinite values")
    return array.astype(np.float64, copy=False)


def to_height_frame(joints: np.ndarray, height_axis: str = HEIGHT_TRUE) -> np.ndarray:
    """Express Z-up joints so that index 2 is what the metric treats as height (see module doc)."""
    if height_axis == HEIGHT_TRUE:
        return joints
    if height_axis == HEIGHT_RELEASED_COMPAT:
        # COORD_CONVERSION @ p for p = (x, y, z), written out: (-x, z, y).
        return np.stack([-joints[..., 0], joints[..., 2], joints[..., 1]], axis=-1)
    raise ValueError(f"unknown height_axis {height_axis!r}; choose one of {HEIGHT_MODES}")


@dataclass
class _Packed:
    """A batch of motions concatenated along time: joints (N, 22, 3) plus segment bookkeeping."""

    joints: np.ndarray  # (N, 22, 3)
    starts: np.ndarray  # (B,) first frame of each motion
    lengths: np.ndarray  # (B,)
    segment: np.ndarray  # (N,) motion index of every frame

    @classmethod
    def build(cls, motions: Sequence[np.ndarray], height_axis: str) -> _Packed:
        lengths = np.array([len(m) for m in motions], dtype=np.int64)
        if (lengths < MIN_FRAMES).any():
            raise ValueError(f"every motion needs at least {MIN_FRAMES} frames")
        joints = to_height_frame(np.concatenate(motions, axis=0).astype(np.float64, copy=False), height_axis)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        segment = np.repeat(np.arange(len(motions)), lengths)
        return cls(joints, starts, lengths, segment)

    @property
    def ends(self) -> np.ndarray:
        return self.starts + self.lengths  # exclusive

    def padded_diff(self, x: np.ndarray) -> np.ndarray:
        """x[t+1] - x[t] within each motion; the last frame repeats the previous difference."""
        diff = np.empty_like(x)
        diff[:-1] = x[1:] - x[:-1]
        last = self.ends - 1
        diff[last] = diff[last - 1]  # overwrites the cross-motion difference too
        return diff

    def frames_before_end(self, k: int) -> np.ndarray:
        """(N,) True where frame t has k more frames in its motion (t + k < end)."""
        position = np.arange(len(self.segment)) - self.starts[self.segment]
        return position < (self.lengths[self.segment] - k)


def _as_batch(joints) -> tuple[list[np.ndarray], bool]:
    if isinstance(joints, np.ndarray) and joints.ndim == 3:
        return [joints], True
    return list(joints), False


def _unbatch(values: np.ndarray, single: bool):
    return float(values[0]) if single else values


def _norm(x: np.ndarray) -> np.ndarray:
    """Euclidean norm over the last axis (einsum: several times faster than np.linalg.norm here)."""
    return np.sqrt(np.einsum("...i,...i->...", x, x))


def _difference_degree(packed: _Packed, order: int) -> np.ndarray:
    """Mean norm of `order`-th differences, plus the same for root-relative joints."""
    d = packed.joints
    for _ in range(order):
        d = d[1:] - d[:-1]  # (N - order, 22, 3); differences of root-relative joints follow by subtraction
    absolute = _norm(d).sum(1)  # (N - order,)
    relative = _norm(d - d[:, ROOT : ROOT + 1]).sum(1)  # the root's own zero row stays in the average
    per_frame = np.zeros(len(packed.joints))
    per_frame[: len(d)] = (absolute + relative) / NUM_JOINTS
    valid = packed.frames_before_end(order)
    b = len(packed.lengths)
    return np.bincount(packed.segment, weights=per_frame * valid, minlength=b) / np.bincount(packed.segment, weights=valid, minlength=b)


def _foot_contact(packed: _Packed) -> np.ndarray:
    feet = packed.joints[:, FEET]  # (N, 2, 3)
    step = _norm(packed.padded_diff(feet))  # (N, 2)
    return (step < CONTACT_STEP) | (feet[..., 2] < CONTACT_HEIGHT)


def _ground_penetration(packed: _Packed) -> np.ndarray:
    height = packed.joints[:, FEET, 2]  # (N, 2)
    below = height < -PENETRATION_DEPTH
    depth_sum = np.bincount(packed.segment, weights=(np.abs(height) * below).sum(1), minlength=len(packed.lengths))
    count = np.bincount(packed.segment, weights=below.sum(1), minlength=len(packed.lengths))
    return np.divide(depth_sum, count, out=np.zeros_like(depth_sum), where=count > 0)


def _foot_sliding(packed: _Packed, contact: np.ndarray) -> np.ndarray:
    horizontal = packed.joints[:, FEET, :2]  # (N, 2, 2)
    step = _norm(packed.padded_diff(horizontal))  # (N, 2)
    b = len(packed.lengths)
    per_foot = []
    for k in range(2):
        slide = np.bincount(packed.segment, weights=step[:, k] * contact[:, k], minlength=b)
        n_contact = np.bincount(packed.segment, weights=contact[:, k].astype(np.float64), minlength=b)
        per_foot.append(slide / (n_contact + 1e-6))
    return 0.5 * (per_foot[0] + per_foot[1])


def _runs(mask: np.ndarray, packed: _Packed) -> tuple[np.ndarray, np.ndarray]:
    """Maximal runs of True in `mask` (N,) that do not cross motion boundaries: (starts, ends incl.)."""
    boundary = np.zeros(len(mask), dtype=bool)
    boundary[packed.starts] = True
    previous = np.concatenate([[False], mask[:-1]])
    run_start = mask & (boundary | ~previous)
    following = np.concatenate([mask[1:], [False]])
    next_boundary = np.concatenate([boundary[1:], [True]])
    run_end = mask & (next_boundary | ~following)
    return np.flatnonzero(run_start), np.flatnonzero(run_end)


def _foot_floating_terms(packed: _Packed, contact: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three counts of Foot_Floating, each (B,): N_frame, S and M (DESIGN.md section 8)."""
    joints = packed.joints
    b = len(packed.lengths)
    root = joints[:, ROOT]  # (N, 3)
    feet = joints[:, FEET]  # (N, 2, 3)
    root_step = _norm(packed.padded_diff(root))  # (N,)
    foot_step = _norm(packed.padded_diff(feet))  # (N, 2)
    relative_step = _norm(packed.padded_diff(feet - root[:, None]))  # (N, 2)
    rate = relative_step / (root_step[:, None] + RATE_EPS)  # (N, 2)

    # N_frame: frames where a foot in contact moves inconsistently with the body.
    moving = root_step >= STILL_ROOT_STEP
    stepping = foot_step > FLOAT_STEP
    invalid = (rate < RATE_LOW) & stepping | (rate > RATE_HIGH) & stepping & (root_step[:, None] > FLOAT_STEP)
    n_contact = contact.sum(1)
    flagged = moving & (
        ((n_contact == 2) & invalid.all(1)) | ((n_contact == 1) & (invalid & contact).any(1))
    )
    n_frame = np.bincount(packed.segment, weights=flagged.astype(np.float64), minlength=b)

    # S: half the frames with a low rate inside long airborne runs of each foot.
    still = ~moving
    s_term = np.zeros(b)
    cumulative_still = np.concatenate([[0], np.cumsum(still)])
    for k in range(2):
        starts, ends = _runs(~contact[:, k], packed)
        length = ends - starts + 1
        n_still = cumulative_still[ends + 1] - cumulative_still[starts]
        keep = (length >= MIN_RUN) & (n_still <= length / 2)
        low = np.concatenate([[0], np.cumsum(rate[:, k] < FLOAT_RATE)])
        n_low = (low[ends + 1] - low[starts])[keep]
        s_term += 0.5 * np.bincount(packed.segment[starts[keep]], weights=n_low, minlength=b)

    # M: both feet airborne for >= 4 frames while the left foot's path wiggles (> 2 angle peaks).
    m_term = np.zeros(b)
    starts, ends = _runs(~contact.any(1), packed)
    keep = (ends - starts + 1) >= MIN_RUN
    starts, ends = starts[keep], ends[keep]
    if len(starts):
        # Imported here: scipy.signal costs about a second to import, which every curation worker
        # (that uses this module only for Jitter_Degree) would pay at start.
        from scipy.signal import find_peaks

        # Angles for f = s+1..e of every overlap at once, then peaks per overlap.
        lengths = ends - starts  # frames per angle series
        frame = np.concatenate([np.arange(s + 1, e + 1) for s, e in zip(starts, ends, strict=True)])
        left = feet[:, 0]
        path = left[frame] - left[np.repeat(starts, lengths)]  # (sum, 3)
        chord = np.repeat(left[ends] - left[starts], lengths, axis=0)  # (sum, 3)
        cosine = np.einsum("ij,ij->i", path, chord) / (_norm(path) * _norm(chord) + 1e-8)
        angle = np.arccos(np.clip(cosine, -1.0, 1.0))
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        for k, (s, e) in enumerate(zip(starts, ends, strict=True)):
            if len(find_peaks(angle[bounds[k] : bounds[k + 1]])[0]) > MAX_ANGLE_PEAKS:
                m_term[packed.segment[s]] += e - s + 1
    return n_frame, s_term, m_term


def _foot_floating(packed: _Packed, contact: np.ndarray) -> np.ndarray:
    return sum(_foot_floating_terms(packed, contact)) / packed.lengths


def foot_contact(joints: np.ndarray, height_axis: str = HEIGHT_TRUE) -> np.ndarray:
    """(T, 2) bool contact of the left/right foot: step < 1 cm or height < 2 cm (padded)."""
    return _foot_contact(_Packed.build([joints], height_axis))


def jitter_degree(joints):
    """Mean |second difference| over frames x joints, plus the same for root-relative joints."""
    batch, single = _as_batch(joints)
    return _unbatch(_difference_degree(_Packed.build(batch, HEIGHT_TRUE), 2), single)


def dynamic_degree(joints):
    """Mean |first difference| over frames x joints, plus the same for root-relative joints."""
    batch, single = _as_batch(joints)
    return _unbatch(_difference_degree(_Packed.build(batch, HEIGHT_TRUE), 1), single)


def ground_penetration(joints, height_axis: str = HEIGHT_TRUE):
    """Mean depth of foot samples more than 5 mm below the floor (0 if none)."""
    batch, single = _as_batch(joints)
    return _unbatch(_ground_penetration(_Packed.build(batch, height_axis)), single)


def foot_sliding(joints, height_axis: str = HEIGHT_TRUE):
    """Mean horizontal foot step while in contact, averaged over both feet."""
    batch, single = _as_batch(joints)
    packed = _Packed.build(batch, height_axis)
    return _unbatch(_foot_sliding(packed, _foot_contact(packed)), single)


def foot_floating(joints, height_axis: str = HEIGHT_TRUE):
    """(N_frame + S + M) / T of DESIGN.md section 8."""
    batch, single = _as_batch(joints)
    packed = _Packed.build(batch, height_axis)
    return _unbatch(_foot_floating(packed, _foot_contact(packed)), single)


def foot_floating_terms(joints, height_axis: str = HEIGHT_TRUE) -> dict[str, np.ndarray]:
    """Foot_Floating's three parts, each divided by the motion's length (they sum to it): contact
    feet moving unlike the body (N_frame), airborne feet carried with the body (S), both feet
    airborne along a wiggling path (M); (B,) arrays for a batch of motions."""
    packed = _Packed.build(_as_batch(joints)[0], height_axis)
    terms = _foot_floating_terms(packed, _foot_contact(packed))
    return {name: term / packed.lengths for name, term in zip(("N_frame", "S", "M"), terms, strict=True)}


def motion_quality_scores(
    motions: Sequence[np.ndarray],
    dimensions: Sequence[str] = MOTION_QUALITY_DIMENSIONS,
    height_axis: str = HEIGHT_TRUE,
) -> dict[str, np.ndarray]:
    """Score a batch of validated motions on the requested dimensions: {dimension: (B,) values}."""
    unknown = set(dimensions) - set(MOTION_QUALITY_DIMENSIONS)
    if unknown:
        raise ValueError(f"not motion-quality dimensions: {sorted(unknown)}")
    if not motions:
        return {name: np.zeros(0) for name in dimensions}
    packed = _Packed.build(motions, height_axis)
    contact = _foot_contact(packed) if {"Foot_Sliding", "Foot_Floating"} & set(dimensions) else None
    compute = {
        "Jitter_Degree": lambda: _difference_degree(packed, 2),
        "Dynamic_Degree": lambda: _difference_degree(packed, 1),
        "Ground_Penetration": lambda: _ground_penetration(packed),
        "Foot_Sliding": lambda: _foot_sliding(packed, contact),
        "Foot_Floating": lambda: _foot_floating(packed, contact),
    }
    return {name: compute[name]() for name in dimensions}
