"""What flows through curation: raw samples in, curated samples or rejections out."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from vimogen_core.motion.motion import Motion

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class RawSample:
    """One take from a source, before windowing, mirroring and gating.

    Exactly one of `motion` (world-frame motion from our own readers) or `features` (already-encoded
    (T, 276) features, as in the released ViMoGen-228K files) is set.
    """

    id: str
    source: str
    subset: str
    origin: str  # the file it came from, so a quarantine entry can be traced back
    motion: "Motion | None" = None
    features: np.ndarray | None = None  # (T, 276) float32
    motion_captions: tuple[str, ...] = ()
    video_caption: str = ""
    group_id: str | None = None  # takes of the same performance share it, and therefore share a split
    split: str | None = None  # a split fixed by the source (released data); else assigned by hash
    annotation: dict[str, Any] | None = None  # released annotation entry, kept verbatim
    camera_extrinsic: np.ndarray | None = None  # (T, 9) released video samples
    camera_intrinsic: np.ndarray | None = None  # (3, 3)

    @property
    def split_group(self) -> str:
        return self.group_id or self.id


@dataclass
class CuratedSample:
    """A sample that passed every gate: features plus everything the manifest records about it."""

    id: str
    group_id: str
    source: str
    subset: str
    split: str
    origin: str
    features: np.ndarray  # (T, 276) float32, T in [min_frames, max_frames]
    motion_captions: tuple[str, ...]
    video_caption: str
    mirrored: bool
    window_start: int  # first frame of the window in the 20 fps take
    stats: dict[str, float] = field(default_factory=dict)
    annotation_json: str = ""
    camera_extrinsic: np.ndarray | None = None
    camera_intrinsic: np.ndarray | None = None


@dataclass(frozen=True)
class Rejection:
    """A quarantined sample: which gates it failed and why, in words a curator can act on."""

    id: str
    source: str
    subset: str
    origin: str
    gates: tuple[str, ...]
    reasons: tuple[str, ...]
    stats: dict[str, float] = field(default_factory=dict)


def assign_split(group_id: str, fractions: tuple[float, float, float] = (0.9, 0.05, 0.05), salt: str = "") -> str:
    """Deterministic split from a hash of the group id: the same take always lands in the same split,
    on every machine and run, and its windows, mirrors and re-captures never leak across splits.
    A different `salt` draws a different (equally deterministic) split."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    digest = hashlib.sha256(f"{salt}{group_id}".encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1)
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "val"
    return "test"
