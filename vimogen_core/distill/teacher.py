"""Teacher samples: the full model performs the expanded prompts, into a shard set like curated data.

Each prompt is sampled in text mode with the teacher's guidance and step count. What a shard holds
is the teacher's sample as drawn (de-normalised, before smoothing and clean-up): the target a
student learns to reach from the same noise, whose seed the manifest row keeps
(`annotation_json`). What the gates judge is the motion a user would get from the teacher (smoothed
and cleaned up), with the curation gates and judge; rejected samples go to the quarantine with
their reasons. The set is validated by the curation expectation suite plus frame checks (feature
width, non-finite values), which a student's training requires to pass.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from vimogen_core.curation.expectations import ValidationConfig, ValidationResult, validate_manifest
from vimogen_core.curation.gates import CaptionJudge, GateConfig, LocomotionJudge, check_finite, evaluate_gates, motion_statistics_batch
from vimogen_core.curation.records import CuratedSample, Rejection
from vimogen_core.curation.shards import (
    MANIFEST_NAME,
    QUARANTINE_NAME,
    ManifestWriter,
    ShardSetWriter,
    atomic_write_parquet,
    quarantine_table,
)
from vimogen_core.errors import MotionDataError
from vimogen_core.motion.representation import features_to_joints
from vimogen_core.motion.skeleton import FPS

TEACHER_SOURCE = "teacher_generated"
MAX_BONE_DEVIATION = 8.0  # see TeacherSamplingConfig.gates
TEACHER_VALIDATION = ValidationConfig(
    allowed_sources=(TEACHER_SOURCE,), required_splits=(), train_fraction_range=(0.0, 1.0), frame_checks=True,
    stat_ranges=tuple((name, (0.0, MAX_BONE_DEVIATION) if name == "stat_max_bone_deviation" else limits)
                      for name, limits in ValidationConfig().stat_ranges))


@dataclass(frozen=True)
class TeacherSamplingConfig:
    steps: int = 50
    cfg_scale: float | None = None  # None: the teacher's training preset's guidance
    frame_choices: tuple[int, ...] = (60, 80, 100, 120, 160)  # each prompt's length, drawn by seed
    seed: int = 0
    batch_size: int = 32
    samples_per_shard: int = 2000
    # The curation gates; the jitter gate (for video-recovered motion) is off as for optical data.
    # Generated joints do not keep their bone lengths as captured ones do (the tiny champion's
    # range over a motion: median 430% on 64 expanded prompts, 0% on the clips), so the bone gate
    # only catches broken skeletons here.
    gates: GateConfig = GateConfig(jitter_gated_sources=(), max_bone_deviation=MAX_BONE_DEVIATION)


@dataclass
class TeacherSampleResult:
    out_dir: str
    manifest_path: str
    quarantine_path: str
    teacher: str
    teacher_step: int
    n_prompts: int
    n_accepted: int
    n_rejected: int
    rejected_by_gate: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_metadata(self) -> dict:
        return asdict(self)


def prompt_lengths(n: int, config: TeacherSamplingConfig) -> list[int]:
    rng = np.random.default_rng((config.seed, 7))
    return [int(config.frame_choices[i]) for i in rng.integers(0, len(config.frame_choices), n)]


def gate_teacher_sample(sample_id: str, prompt: str, raw: np.ndarray, cleaned: np.ndarray, stats: dict | None,
                        origin: str, annotation: dict, gates: GateConfig,
                        judge: CaptionJudge | None) -> CuratedSample | Rejection:
    """raw (T, 276) as sampled (stored), cleaned (T, 276) as a user gets it (judged)."""
    joints = features_to_joints(cleaned)  # (T, 22, 3)
    problem = check_finite(raw, cleaned)
    if problem or stats is None:
        return Rejection(sample_id, TEACHER_SOURCE, "teacher", origin, ("non_finite",), (problem or "non-finite joints",))
    stats = {**stats, "feature_abs_max": float(np.abs(raw).max())}
    failures = evaluate_gates(stats, len(raw), (prompt,), "", TEACHER_SOURCE, joints, FPS, gates, judge)
    # Captured data meets the suite's plausible ranges by construction; generated motion may not
    # (the tiny champion sinks 1% of its motions over 0.8 m below the floor), so they gate too.
    failures += [("plausible_range", f"{name[5:]} {stats[name[5:]]:.3g} outside [{low:g}, {high:g}]")
                 for name, (low, high) in TEACHER_VALIDATION.stat_ranges
                 if name.startswith("stat_") and not low <= stats[name[5:]] <= high]
    if failures:
        return Rejection(sample_id, TEACHER_SOURCE, "teacher", origin, tuple(g for g, _ in failures),
                         tuple(r for _, r in failures), stats)
    return CuratedSample(id=sample_id, group_id=sample_id, source=TEACHER_SOURCE, subset="teacher", split="train",
                         origin=origin, features=np.ascontiguousarray(raw, np.float32), motion_captions=(prompt,),
                         video_caption="", mirrored=False, window_start=0, stats=stats,
                         annotation_json=json.dumps(annotation, sort_keys=True))


def sample_teacher(generator, prompts: Sequence[str], out_dir: str | Path,
                   config: TeacherSamplingConfig = TeacherSamplingConfig(),
                   judge: CaptionJudge | None = LocomotionJudge(), sink=None) -> TeacherSampleResult:
    """Sample `prompts` with a teacher `Generator` (train/generate.py) into `out_dir` (shards,
    manifest.parquet, quarantine.parquet)."""
    if not generator.model_config.reference_branch:
        raise MotionDataError(generator.checkpoint, "is a ViMoGen-light student; a teacher must be a full ViMoGen "
                                                    "checkpoint")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_scale = generator.train_config.guidance_scale if config.cfg_scale is None else config.cfg_scale
    lengths = prompt_lengths(len(prompts), config)
    manifest = ManifestWriter(out_dir / MANIFEST_NAME)
    shards = ShardSetWriter(out_dir, "teacher", manifest, config.samples_per_shard)
    rejections: list[Rejection] = []
    origin = str(generator.checkpoint)
    # Prompts in order of length, so a batch has no padding; position k in that order draws its
    # noise with seed `config.seed + k` (Generator.sample seeds row r of a call with seed + r).
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    try:
        for first in range(0, len(order), config.batch_size):
            batch = order[first: first + config.batch_size]
            sample_lengths = [lengths[i] for i in batch]
            sample = generator.sample([prompts[i] for i in batch], sample_lengths, [None] * len(batch), config.steps,
                                      cfg_scale, config.seed + first)  # (B, T_max, 276) normalised
            cleaned = generator.finish(sample, sample_lengths, True, generator.cleanup)
            for r, (i, n) in enumerate(zip(batch, sample_lengths)):
                raw = generator.normalizer.denormalize(sample[r, :n]).numpy().astype(np.float32)  # (T, 276)
                joints = features_to_joints(cleaned[r])  # (T, 22, 3)
                stats = motion_statistics_batch(joints[None], FPS)[0] if np.isfinite(joints).all() else None
                annotation = {"prompt": prompts[i], "noise_seed": config.seed + first + r, "teacher": origin,
                              "teacher_step": generator.step, "steps": config.steps, "cfg_scale": cfg_scale}
                result = gate_teacher_sample(f"teacher-{i:06d}", prompts[i], raw, cleaned[r], stats, origin,
                                             annotation, config.gates, judge)
                if isinstance(result, Rejection):
                    rejections.append(result)
                else:
                    shards.add(result)
            if sink is not None:
                done = shards.n_samples + len(rejections)
                sink.log_metrics({"teacher/samples": done}, done)
        summary = shards.close()
    except BaseException:
        shards.abort()
        manifest.abort()
        raise
    manifest.close()
    atomic_write_parquet(quarantine_table(rejections), out_dir / QUARANTINE_NAME)
    by_gate: dict[str, int] = {}
    for rejection in rejections:
        for gate in set(rejection.gates):
            by_gate[gate] = by_gate.get(gate, 0) + 1
    return TeacherSampleResult(str(out_dir), str(out_dir / MANIFEST_NAME), str(out_dir / QUARANTINE_NAME), origin,
                               generator.step, len(prompts), summary.n_samples, len(rejections), by_gate,
                               time.perf_counter() - started)


def validate_teacher_samples(manifest_path: str | Path, report_path: str | Path | None = None) -> ValidationResult:
    """The curation suite with frame checks, over a teacher-sample manifest."""
    return validate_manifest(manifest_path, TEACHER_VALIDATION, report_path)
