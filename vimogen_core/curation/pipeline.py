"""Streaming curation: raw takes -> resampled, canonicalised, windowed, mirrored, gated samples.

Takes flow through one at a time (or through a small pool of worker processes, at most a few takes
in flight), so memory stays bounded however many takes there are; accepted samples stream into
chunk shards, rejected ones into the quarantine manifest with their reasons.
"""
from __future__ import annotations

import json
import multiprocessing
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from vimogen_core.curation.captions import clean_captions, mirror_caption
from vimogen_core.curation.gates import (
    GATE_PRESETS,
    CaptionJudge,
    GateConfig,
    check_finite,
    evaluate_gates,
    motion_statistics,
    motion_statistics_batch,
)
from vimogen_core.curation.records import SOURCES, SPLITS, VIDEO_SOURCES, CuratedSample, RawSample, Rejection, assign_split
from vimogen_core.curation.shards import (
    MANIFEST_NAME,
    QUARANTINE_NAME,
    SHARD_SUFFIX,
    ManifestWriter,
    ShardSetWriter,
    atomic_write_bytes,
    atomic_write_parquet,
    quarantine_table,
    remove_stale_temporaries,
)
from vimogen_core.motion.motion import canonicalize_arrays, mirror_joints, resample
from vimogen_core.motion.representation import JOINT_POS, encode_features, mirror_features
from vimogen_core.motion.skeleton import FPS

if TYPE_CHECKING:
    from vimogen_core.sinks import MetricSink

CHUNK_PREFIX = "chunk"
_SPLIT_SYNONYMS = {"training": "train", "validation": "val", "valid": "val", "dev": "val", "testing": "test"}
SUMMARY_NAME = "summary.json"


@dataclass(frozen=True)
class CurationConfig:
    """How takes become samples. Frame counts are feature frames (N motion frames -> N-1 features)."""

    fps: float = FPS
    window_stride: int = 100  # start-to-start distance of windows cut from takes longer than max_frames
    mirror: bool = True
    split_fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)
    split_salt: str = ""
    gates: GateConfig = GateConfig()
    samples_per_chunk: int = 2000


CURATION_PRESETS = {
    "default": CurationConfig(),
    # Released ViMoGen-228K samples are already windowed; keep them as released (no mirrors).
    "released": CurationConfig(mirror=False, gates=GATE_PRESETS["released"]),
}


@dataclass
class CurationResult:
    out_dir: str
    manifest_path: str
    quarantine_path: str
    n_takes: int
    n_accepted: int
    n_rejected: int
    n_chunks: int
    n_frames: int
    by_source: dict[str, int] = field(default_factory=dict)
    by_subset: dict[str, int] = field(default_factory=dict)
    by_split: dict[str, int] = field(default_factory=dict)
    rejected_by_gate: dict[str, int] = field(default_factory=dict)
    rejected_by_source: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def samples_per_second(self) -> float:
        return (self.n_accepted + self.n_rejected) / max(self.seconds, 1e-9)

    def to_metadata(self) -> dict:
        return {**asdict(self), "samples_per_second": self.samples_per_second}


def window_starts(n_frames: int, window: int, stride: int) -> list[int]:
    """Starts of `window`-frame windows covering an `n_frames` take; the last one ends at the take's end."""
    if n_frames <= window:
        return [0]
    starts = list(range(0, n_frames - window + 1, stride))
    if starts[-1] != n_frames - window:
        starts.append(n_frames - window)
    return starts


def _reject(raw: RawSample, sample_id: str, failures: list[tuple[str, str]], stats: dict[str, float]) -> Rejection:
    return Rejection(
        id=sample_id,
        source=raw.source,
        subset=raw.subset,
        origin=raw.origin,
        gates=tuple(g for g, _ in failures),
        reasons=tuple(r for _, r in failures),
        stats=stats,
    )


def _gate_and_build(raw: RawSample, sample_id: str, joints: np.ndarray, features: np.ndarray, captions: tuple[str, ...],
                    video_caption: str, mirrored: bool, window_start: int, split: str, config: CurationConfig,
                    judge: CaptionJudge | None, keep_extrinsic: bool = True,
                    joint_stats: dict[str, float] | None = None) -> CuratedSample | Rejection:
    """joints (T, 22, 3), features (T-1, 276) or (T, 276) for released samples. The take's camera
    extrinsic is kept only where it still describes the sample's world frame (`keep_extrinsic`).
    `joint_stats` may carry the joint statistics when already known (a mirror's equal the original's)."""
    problem = check_finite(joints, features)
    if problem:
        return _reject(raw, sample_id, [("non_finite", problem)], {})
    stats = dict(joint_stats) if joint_stats is not None else motion_statistics(joints, config.fps)
    stats["feature_abs_max"] = float(np.abs(features).max())
    failures = evaluate_gates(stats, features.shape[0], captions, video_caption, raw.source, joints, config.fps, config.gates, judge)
    if failures:
        return _reject(raw, sample_id, failures, stats)
    return CuratedSample(
        id=sample_id,
        group_id=raw.split_group,
        source=raw.source,
        subset=raw.subset,
        split=split,
        origin=raw.origin,
        features=np.ascontiguousarray(features, dtype=np.float32),
        motion_captions=captions,
        video_caption=video_caption,
        mirrored=mirrored,
        window_start=window_start,
        stats=stats,
        annotation_json=json.dumps(raw.annotation, sort_keys=True) if raw.annotation is not None else "",
        camera_extrinsic=raw.camera_extrinsic if keep_extrinsic else None,
        camera_intrinsic=raw.camera_intrinsic,
    )


def curate_take(raw: RawSample, config: CurationConfig = CurationConfig(), judge: CaptionJudge | None = None) -> list[CuratedSample | Rejection]:
    """All samples (windows x {original, mirror}) of one take, each curated or rejected with reasons."""
    if raw.source not in SOURCES:
        return [_reject(raw, raw.id, [("source", f"unknown source {raw.source!r}; expected one of {SOURCES}")], {})]
    split = _SPLIT_SYNONYMS.get(str(raw.split).lower(), raw.split) if raw.split else assign_split(raw.split_group, config.split_fractions, config.split_salt)
    if split not in SPLITS:
        return [_reject(raw, raw.id, [("split", f"unknown split {raw.split!r}; expected one of {SPLITS}")], {})]
    captions = clean_captions(raw.motion_captions)
    video_caption = raw.video_caption.strip() if isinstance(raw.video_caption, str) else ""

    if raw.features is not None:  # already-encoded released sample: kept as released
        features = np.asarray(raw.features, dtype=np.float32)  # (T, 276)
        joints = features[:, JOINT_POS].reshape(-1, 22, 3)  # (T, 22, 3)
        return [_gate_and_build(raw, raw.id, joints, features, captions, video_caption, False, 0, split, config, judge)]

    motion = raw.motion
    problem = check_finite(motion.joints.numpy(), motion.local_rotmats.numpy())
    if problem:
        return [_reject(raw, raw.id, [("non_finite", problem)], {})]
    motion = resample(motion, config.fps)
    set_floor = raw.source in VIDEO_SOURCES  # recovered heights are not trustworthy; the floor is re-found
    length = config.gates.max_frames + 1
    starts = window_starts(motion.n_frames, length, config.window_stride)
    # All windows of the take at once: they share one length (a take no longer than a window is its only one).
    frames = torch.arange(min(length, motion.n_frames))[None, :] + torch.tensor(starts)[:, None]  # (W, L)
    local, joints = canonicalize_arrays(motion.local_rotmats[frames], motion.joints[frames], set_floor)  # (W, L, 22, ...)
    features = encode_features(local, joints).float().numpy()  # (W, L-1, 276)
    joints_np = joints.numpy()  # (W, L, 22, 3)
    finite = np.isfinite(joints_np).all(axis=(1, 2, 3))  # (W,)
    # Every joint statistic (speeds, jitter, bone lengths, heights, travel) is invariant under
    # reflection plus the left/right swap, so the mirror reuses the original's; its joints and
    # features are exact sign flips and permutations of the original's (no FK, no re-encoding).
    finite_stats = iter(motion_statistics_batch(joints_np[finite], config.fps))
    joint_stats = [next(finite_stats) if ok else None for ok in finite]
    variants = [(joints_np, features, False, captions, video_caption)]
    if config.mirror:
        variants.append((mirror_joints(joints).numpy(), mirror_features(features), True,
                         tuple(mirror_caption(c) for c in captions), mirror_caption(video_caption)))
    # a camera pose stays valid only for the whole, unmirrored take
    whole_take = len(starts) == 1 and frames.shape[1] == motion.n_frames
    out: list[CuratedSample | Rejection] = []
    for w, start in enumerate(starts):
        window_id = raw.id if len(starts) == 1 else f"{raw.id}@{start}"
        for variant_joints, variant_features, mirrored, variant_captions, variant_video_caption in variants:
            out.append(
                _gate_and_build(
                    raw,
                    f"{window_id}~mirror" if mirrored else window_id,
                    variant_joints[w],
                    variant_features[w],
                    variant_captions,
                    variant_video_caption,
                    mirrored,
                    start,
                    split,
                    config,
                    judge,
                    keep_extrinsic=whole_take and not mirrored,
                    joint_stats=joint_stats[w],
                )
            )
    return out


def _worker_init() -> None:
    torch.set_num_threads(1)  # parallelism comes from processes; torch threads on tiny tensors only contend


def _curate_in_worker(args: tuple[RawSample, CurationConfig, CaptionJudge | None]) -> list[CuratedSample | Rejection]:
    raw, config, judge = args
    try:
        return curate_take(raw, config, judge)
    except Exception as err:  # one bad take must not stop the run: quarantine it with the reason
        return [_reject(raw, raw.id, [("error", f"{type(err).__name__}: {err}")], {})]


def _ordered_results(items: Iterable[RawSample | Rejection], config: CurationConfig, judge: CaptionJudge | None,
                     workers: int) -> Iterator[list[CuratedSample | Rejection]]:
    """Curate takes in input order; with workers > 1 a process pool, with a bounded number in flight."""
    if workers <= 1:
        for item in items:
            yield [item] if isinstance(item, Rejection) else _curate_in_worker((item, config, judge))
        return
    context = multiprocessing.get_context("spawn")  # fork after torch/OpenMP start-up can deadlock
    with context.Pool(workers, initializer=_worker_init) as pool:
        pending: deque = deque()
        for item in items:
            if isinstance(item, Rejection):
                pending.append([item])
            else:
                pending.append(pool.apply_async(_curate_in_worker, ((item, config, judge),)))
            while len(pending) > 4 * workers:
                head = pending.popleft()
                yield head if isinstance(head, list) else head.get()
        while pending:
            head = pending.popleft()
            yield head if isinstance(head, list) else head.get()


def curate_samples(
    takes: Iterable[RawSample | Rejection],
    out_dir: str | Path,
    config: CurationConfig = CurationConfig(),
    judge: CaptionJudge | None = None,
    workers: int = 1,
    sink: "MetricSink | None" = None,
    progress: bool = False,
) -> CurationResult:
    """Curate a stream of takes into chunk shards + manifest + quarantine under `out_dir`.

    `takes` may contain Rejections (takes that could not even be loaded); they go to quarantine.
    The previous manifest is removed first, so a killed run never leaves a manifest that points at
    shards of a different run; shard files appear only when complete (temporary name + rename).
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    for name in (MANIFEST_NAME, QUARANTINE_NAME, SUMMARY_NAME):
        (out_dir / name).unlink(missing_ok=True)

    manifest = ManifestWriter(out_dir / MANIFEST_NAME)
    # One chunk stream per split: a full chunk is then already a final shard, which the shard stage
    # adopts by hard link instead of copying its frames again.
    writers = {split: ShardSetWriter(out_dir, f"{CHUNK_PREFIX}-{split}", manifest, config.samples_per_chunk)
               for split in SPLITS}
    rejections: list[Rejection] = []
    counts = {key: Counter() for key in ("source", "subset", "split", "gate", "rejected_source")}
    n_takes = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="curate", unit="take")
    try:
        for results in _ordered_results(takes, config, judge, workers):
            n_takes += 1
            for result in results:
                if isinstance(result, Rejection):
                    rejections.append(result)
                    counts["gate"].update(set(result.gates))
                    counts["rejected_source"][result.source] += 1
                else:
                    writers[result.split].add(result)
                    counts["source"][result.source] += 1
                    counts["subset"][result.subset] += 1
                    counts["split"][result.split] += 1
            if bar is not None:
                bar.update(1)
            if sink is not None and n_takes % 500 == 0:
                accepted = sum(writer.n_samples for writer in writers.values())
                sink.log_metrics({"curation/accepted": accepted, "curation/rejected": len(rejections)}, n_takes)
        summaries = [writer.close() for writer in writers.values()]
    except BaseException:
        for writer in writers.values():
            writer.abort()
        manifest.abort()
        raise
    finally:
        if bar is not None:
            bar.close()

    chunk_names = {name for summary in summaries for name in summary.shard_names}
    for stale in out_dir.glob(f"{CHUNK_PREFIX}-*{SHARD_SUFFIX}"):
        if stale.name not in chunk_names:
            stale.unlink()
    atomic_write_parquet(quarantine_table(rejections), out_dir / QUARANTINE_NAME)
    result = CurationResult(
        out_dir=str(out_dir),
        manifest_path=str(out_dir / MANIFEST_NAME),
        quarantine_path=str(out_dir / QUARANTINE_NAME),
        n_takes=n_takes,
        n_accepted=sum(summary.n_samples for summary in summaries),
        n_rejected=len(rejections),
        n_chunks=len(chunk_names),
        n_frames=sum(summary.n_frames for summary in summaries),
        by_source=dict(sorted(counts["source"].items())),
        by_subset=dict(sorted(counts["subset"].items())),
        by_split=dict(sorted(counts["split"].items())),
        rejected_by_gate=dict(sorted(counts["gate"].items())),
        rejected_by_source=dict(sorted(counts["rejected_source"].items())),
        seconds=time.perf_counter() - started,
    )
    summary_json = {k: v for k, v in result.to_metadata().items() if k not in ("seconds", "samples_per_second", "out_dir", "manifest_path", "quarantine_path")}
    atomic_write_bytes(out_dir / SUMMARY_NAME, json.dumps(summary_json, indent=2, sort_keys=True).encode())
    manifest.close()  # last: its presence marks a complete run
    if sink is not None:
        sink.log_metrics({"curation/accepted": result.n_accepted, "curation/rejected": result.n_rejected}, n_takes)
        sink.log_text(f"curated {result.n_accepted} samples from {n_takes} takes; quarantined {result.n_rejected}: {result.rejected_by_gate}")
    return result


def curate_sources(
    sources_dir: str | Path,
    out_dir: str | Path,
    config: CurationConfig = CurationConfig(),
    judge: CaptionJudge | None = None,
    workers: int = 1,
    sink: "MetricSink | None" = None,
    progress: bool = False,
) -> CurationResult:
    """Curate every take listed in a sources folder (`vimogen data sources` output)."""
    from vimogen_core.curation.raw_sources import iter_source_index

    return curate_samples(iter_source_index(sources_dir), out_dir, config, judge, workers, sink, progress)
