"""Quality gates: every check says which gate failed and why, so the quarantine is actionable."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from vimogen_core.motion.metrics import jitter_degree
from vimogen_core.sources import VIDEO_SOURCES
from vimogen_core.motion.skeleton import PARENTS

_PARENT_INDEX = np.asarray(PARENTS[1:])  # parents of joints 1..21


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the generic and video-specific gates (feature frames are counted, at 20 fps)."""

    min_frames: int = 40
    max_frames: int = 200
    # Fast limbs in kicks and flips reach ~10 m/s; beyond this a joint teleported.
    max_joint_speed: float = 15.0
    # A rigid skeleton keeps its bone lengths; recovered or retargeted motion whose bone lengths range
    # over more than this fraction of their mean is broken.
    max_bone_deviation: float = 0.1
    # Plausible femur (hip-knee) length: catches unit mix-ups (cm, mm) and degenerate skeletons.
    femur_length_range: tuple[float, float] = (0.2, 0.7)
    max_jitter_degree: float = 0.04  # DESIGN.md section 6, video-recovered motion only
    jitter_gated_sources: tuple[str, ...] = VIDEO_SOURCES


GATE_PRESETS = {
    "default": GateConfig(),
    # Released data were curated already; keep their gates but never drop a sample for jitter twice.
    "released": GateConfig(jitter_gated_sources=()),
}


@dataclass(frozen=True)
class JudgeVerdict:
    matches: bool
    score: float
    reason: str = ""


@runtime_checkable
class CaptionJudge(Protocol):
    """Says whether a motion matches its caption (a VLM on a rendered video, a retrieval model, ...)."""

    name: str

    def judge(self, joints: np.ndarray, caption: str, fps: float) -> JudgeVerdict:  # joints (T, 22, 3)
        ...


_LOCOMOTION = re.compile(r"\b(walk|walks|walking|run|runs|running|jog|jogs|jogging|sprint\w*|crawl\w*|march\w*)\b", re.I)
_IN_PLACE = re.compile(r"\b(in place|on the spot|on the treadmill|stationary)\b", re.I)
_STILL = re.compile(r"\b(stands still|standing still|stays still|motionless|sits still)\b", re.I)


@dataclass(frozen=True)
class LocomotionJudge:
    """A cheap, explainable judge: a caption that says the person travels (walks, runs, crawls) needs
    the pelvis to get somewhere, and one that says they stay still needs it not to. Distance is the
    farthest the pelvis gets from where it started (swaying in place covers path but no ground).
    It cannot judge anything else and then abstains (matches)."""

    min_travel_m: float = 0.5
    max_still_travel_m: float = 0.3
    name: str = "locomotion-heuristic"

    def judge(self, joints: np.ndarray, caption: str, fps: float) -> JudgeVerdict:
        pelvis_xy = joints[:, 0, :2]  # (T, 2)
        reach = float(np.linalg.norm(pelvis_xy - pelvis_xy[0], axis=-1).max())
        if _LOCOMOTION.search(caption) and not _IN_PLACE.search(caption) and reach < self.min_travel_m:
            return JudgeVerdict(False, reach, f"caption describes locomotion but the pelvis gets only {reach:.2f} m from its start")
        if _STILL.search(caption) and reach > self.max_still_travel_m:
            return JudgeVerdict(False, reach, f"caption says still but the pelvis moves {reach:.2f} m from its start")
        return JudgeVerdict(True, reach)


def motion_statistics(joints: np.ndarray, fps: float) -> dict[str, float]:
    """Per-sample statistics recorded in the manifest and checked by the expectation suite; joints (T, 22, 3)."""
    return motion_statistics_batch(np.asarray(joints)[None], fps)[0]


def motion_statistics_batch(joints: np.ndarray, fps: float) -> list[dict[str, float]]:
    """`motion_statistics` of each of B equally long motions at once; joints (B, T, 22, 3)."""
    joints = np.asarray(joints, dtype=np.float64)
    step = np.diff(joints, axis=1)  # (B, T-1, 22, 3)
    speed = np.sqrt(np.einsum("btjc,btjc->btj", step, step)) * fps  # (B, T-1, 22) m/s
    bone_vectors = joints[:, :, 1:] - joints[:, :, _PARENT_INDEX]  # (B, T, 21, 3)
    bones = np.sqrt(np.einsum("btjc,btjc->btj", bone_vectors, bone_vectors))  # (B, T, 21)
    mean_bone = bones.mean(axis=1)  # (B, 21)
    bone_deviation = (bones.max(axis=1) - bones.min(axis=1)) / np.maximum(mean_bone, 1e-6)  # (B, 21) relative range
    height = joints[..., 2]  # (B, T, 22)
    columns = {
        "jitter": np.asarray(jitter_degree(list(joints))),  # the MBench implementation (DESIGN.md section 8)
        "mean_joint_speed": speed.mean(axis=(1, 2)),
        "max_joint_speed": speed.max(axis=(1, 2)),
        "root_travel": np.sqrt(np.einsum("btc,btc->bt", step[:, :, 0, :2], step[:, :, 0, :2])).sum(axis=1),
        "min_height": height.min(axis=(1, 2)),
        "max_height": height.max(axis=(1, 2)),
        "max_bone_deviation": bone_deviation.max(axis=1),
        "femur_length": 0.5 * (mean_bone[:, 3] + mean_bone[:, 4]),  # bones to joints 4, 5 = left/right knee
    }
    return [{name: float(values[b]) for name, values in columns.items()} for b in range(len(joints))]


def check_finite(*arrays: np.ndarray | None) -> str | None:
    for array in arrays:
        if array is not None and not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).sum())
            return f"{bad} non-finite values"
    return None


def evaluate_gates(
    stats: dict[str, float],
    n_frames: int,
    captions: tuple[str, ...],
    video_caption: str,
    source: str,
    joints: np.ndarray,
    fps: float,
    config: GateConfig,
    judge: CaptionJudge | None = None,
) -> list[tuple[str, str]]:
    """All gates a finite sample fails, as (gate, reason) pairs; empty when it passes."""
    failures: list[tuple[str, str]] = []
    if not config.min_frames <= n_frames <= config.max_frames:
        failures.append(("length", f"{n_frames} frames outside [{config.min_frames}, {config.max_frames}]"))
    if not captions and not video_caption.strip():
        failures.append(("caption", "no non-empty caption"))
    if stats["max_joint_speed"] > config.max_joint_speed:
        failures.append(("joint_speed", f"joint speed {stats['max_joint_speed']:.1f} m/s > {config.max_joint_speed}"))
    if stats["max_bone_deviation"] > config.max_bone_deviation:
        failures.append(
            ("bone_length", f"bone length varies by {stats['max_bone_deviation']:.0%} > {config.max_bone_deviation:.0%}")
        )
    low, high = config.femur_length_range
    if not low <= stats["femur_length"] <= high:
        failures.append(("bone_length", f"femur length {stats['femur_length']:.3f} m outside [{low}, {high}]"))
    if source in config.jitter_gated_sources and stats["jitter"] >= config.max_jitter_degree:
        failures.append(("jitter", f"Jitter_Degree {stats['jitter']:.4f} >= {config.max_jitter_degree}"))
    if judge is not None:
        for caption in captions or (video_caption,):
            verdict = judge.judge(joints, caption, fps)
            if not verdict.matches:
                failures.append(("caption_match", f"{judge.name}: {verdict.reason} ({caption!r})"))
                break
    return failures
