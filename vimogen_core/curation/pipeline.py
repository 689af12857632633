"""Streaming curation: raw takes -> resampled, canonicalised, windowed, mirrored, gated samples.

Takes flow through one at a time, so memory stays bounded however many takes there are; accepted
samples stream into chunk shards (written on a second thread), rejected ones into the quarantine
manifest with their reasons. With several workers, each process curates its own share of the takes
from a TakeSource into its own chunks.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import queue
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import pyarrow.parquet as pq
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
    atomic_write_parquet,
    quarantine_table,
)
from vimogen_core.files import TEMP_MARKER, atomic_write_bytes, remove_stale_temporaries
from vimogen_core.motion.motion import canonicalize_arrays, mirror_joints, resample
from vimogen_core.errors import MotionDataError
from vimogen_core.motion.representation import FEATURE_DIM, JOINT_POS, encode_features, mirror_features
from vimogen_core.motion.skeleton import FPS, NUM_JOINTS

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


MIN_TAKE_FRAMES = 3  # the gates' joint statistics include second differences (jitter)


def _check_arrays(raw: RawSample) -> None:
    """Raise MotionDataError naming the take's file when its arrays cannot be curated at all (wrong
    shapes, too few frames); bad values are left to the gates, which reject with their own reasons."""
    if raw.features is not None:
        shape = np.shape(raw.features)
        if len(shape) != 2 or shape[1] != FEATURE_DIM:
            raise MotionDataError(raw.origin, f"expected features of shape (T, {FEATURE_DIM}), got {shape}")
        n_frames = shape[0]
    else:
        if raw.motion is None:
            raise MotionDataError(raw.origin, "take has neither motion nor features")
        joints, local = tuple(raw.motion.joints.shape), tuple(raw.motion.local_rotmats.shape)
        if len(joints) != 3 or joints[1:] != (NUM_JOINTS, 3) or local != (*joints[:2], 3, 3):
            raise MotionDataError(raw.origin, f"expected joints (T, {NUM_JOINTS}, 3) and local_rotmats (T, {NUM_JOINTS}, 3, 3), "
                                              f"got {joints} and {local}")
        n_frames = joints[0]
    if n_frames < MIN_TAKE_FRAMES:
        raise MotionDataError(raw.origin, f"{n_frames} frame(s); at least {MIN_TAKE_FRAMES} are needed")


def curate_take(raw: RawSample, config: CurationConfig = CurationConfig(), judge: CaptionJudge | None = None) -> list[CuratedSample | Rejection]:
    """All samples (windows x {original, mirror}) of one take, each curated or rejected with reasons.
    Raises MotionDataError, naming the take's file, for a take whose arrays cannot be curated."""
    _check_arrays(raw)
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
    if motion.n_frames < MIN_TAKE_FRAMES:
        raise MotionDataError(raw.origin, f"{raw.motion.n_frames} frames at {raw.motion.fps:g} fps are {motion.n_frames} at "
                                          f"{config.fps:g} fps; at least {MIN_TAKE_FRAMES} are needed")
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


def _curate_or_quarantine(raw: RawSample, config: CurationConfig, judge: CaptionJudge | None) -> list[CuratedSample | Rejection]:
    try:
        return curate_take(raw, config, judge)
    except MotionDataError as err:  # one take's bad data must not stop the run; any other error is a bug and does
        return [_reject(raw, raw.id, [("data", str(err))], {})]


@runtime_checkable
class TakeSource(Protocol):
    """A stream of takes that a worker process can open by itself (the object is pickled, the takes
    are not): `take_loaders` yields one cheap loader per take, always in the same order, and only the
    loaders a worker calls read their take. Loading failures come back as Rejections."""

    def take_loaders(self) -> Iterator[Callable[[], RawSample | Rejection]]: ...


_COUNT_KEYS = ("source", "subset", "split", "gate", "rejected_source")
_PROGRESS_EVERY = 8  # takes between a worker's progress messages


@dataclass
class _PartResult:
    """What curating one share of the takes produced (chunk names, counts, rejections)."""

    shard_names: list[str] = field(default_factory=list)
    n_takes: int = 0
    n_accepted: int = 0
    n_frames: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    counts: dict[str, Counter] = field(default_factory=lambda: {key: Counter() for key in _COUNT_KEYS})


class _SampleWriterThread:
    """Writes accepted samples into their split's chunk stream on a second thread: hashing, writing
    and fsync release the GIL, so they overlap with the curation of the next takes. The queue is
    bounded (memory stays flat); samples are written in the order they were added."""

    def __init__(self, writers: dict[str, ShardSetWriter], max_pending: int = 64):
        self._writers = writers
        self._queue: queue.Queue[CuratedSample | None] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="curation-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (sample := self._queue.get()) is not None:
            if self._error is None:  # after a failure keep draining, so `add` never blocks forever
                try:
                    self._writers[sample.split].add(sample)
                except BaseException as err:
                    self._error = err

    def add(self, sample: CuratedSample) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(sample)

    def finish(self) -> None:
        """Wait until every added sample is written; re-raises the writer's error, if any."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def _curate_stream(takes: Iterable[RawSample | Rejection], out_dir: Path, chunk_tag: str, manifest: ManifestWriter,
                   config: CurationConfig, judge: CaptionJudge | None, on_take: Callable[[int], None]) -> _PartResult:
    """Curate takes in order into `chunk-<split><chunk_tag>-NNNNN.npy` chunk streams (one per split: a
    full chunk is then already a final shard, which the shard stage adopts by hard link) whose rows go
    to `manifest`; `on_take(n_takes_so_far)` is called after every take."""
    writers = {split: ShardSetWriter(out_dir, f"{CHUNK_PREFIX}-{split}{chunk_tag}", manifest, config.samples_per_chunk)
               for split in SPLITS}
    sample_writer = _SampleWriterThread(writers)
    part = _PartResult()
    try:
        for take in takes:
            for result in [take] if isinstance(take, Rejection) else _curate_or_quarantine(take, config, judge):
                if isinstance(result, Rejection):
                    part.rejections.append(result)
                    part.counts["gate"].update(set(result.gates))
                    part.counts["rejected_source"][result.source] += 1
                else:
                    sample_writer.add(result)
                    for key in ("source", "subset", "split"):
                        part.counts[key][getattr(result, key)] += 1
            part.n_takes += 1
            on_take(part.n_takes)
        sample_writer.finish()
        summaries = [writer.close() for writer in writers.values()]
    except BaseException:
        try:
            sample_writer.finish()
        except BaseException:
            pass  # the error that stopped the run is the one to report
        for writer in writers.values():
            writer.abort()
        raise
    part.shard_names = [name for summary in summaries for name in summary.shard_names]
    part.n_accepted = sum(summary.n_samples for summary in summaries)
    part.n_frames = sum(summary.n_frames for summary in summaries)
    return part


def _part_manifest_path(out_dir: Path, part: int) -> Path:
    # A hidden temporary name: a killed run's leftovers are removed by `remove_stale_temporaries`.
    return out_dir / f".{MANIFEST_NAME}{TEMP_MARKER}part{part}"


def _share(source: TakeSource, part: int, n_parts: int) -> Iterator[RawSample | Rejection]:
    """Takes part, part + n_parts, part + 2 n_parts, ... of the source, the others never loaded."""
    for index, load in enumerate(source.take_loaders()):
        if index % n_parts == part:
            yield load()


def _curate_part_process(source: TakeSource, part: int, n_parts: int, out_dir: Path, config: CurationConfig,
                         judge: CaptionJudge | None, messages, driver_pid: int) -> None:
    """Worker process: curate its share into its own chunk streams and part manifest; report progress,
    the result or the error through `messages`. Stops when the driver process is gone."""
    torch.set_num_threads(1)  # parallelism comes from processes; torch threads on tiny tensors only contend

    def on_take(n_takes: int) -> None:
        if n_takes % _PROGRESS_EVERY == 0:
            messages.put(("takes", part, _PROGRESS_EVERY))
            if os.getppid() != driver_pid:
                raise RuntimeError("the curation driver process is gone")

    try:
        manifest = ManifestWriter(_part_manifest_path(out_dir, part))
        try:
            result = _curate_stream(_share(source, part, n_parts), out_dir, f"-p{part}", manifest, config, judge, on_take)
        except BaseException:
            manifest.abort()
            raise
        manifest.close()
        messages.put(("takes", part, result.n_takes % _PROGRESS_EVERY))
        messages.put(("done", part, result))
    except BaseException as err:
        messages.put(("error", part, f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))


def _curate_in_processes(source: TakeSource, out_dir: Path, manifest: ManifestWriter, config: CurationConfig,
                         judge: CaptionJudge | None, workers: int, on_takes: Callable[[int], None]) -> list[_PartResult]:
    """Each of `workers` processes curates every workers-th take, loading it itself and writing its own
    chunks, so no motion data crosses processes; their part manifests are appended to `manifest` in
    part order (the result depends on the number of workers, not on timing)."""
    context = multiprocessing.get_context("spawn")  # fork after torch/OpenMP start-up can deadlock
    messages = context.Queue()
    processes = [context.Process(target=_curate_part_process, name=f"curate-part{part}", daemon=True,
                                 args=(source, part, workers, out_dir, config, judge, messages, os.getpid()))
                 for part in range(workers)]
    results: dict[int, _PartResult] = {}
    try:
        for process in processes:
            process.start()
        while len(results) < workers:
            try:
                kind, part, payload = messages.get(timeout=5.0)
            except queue.Empty:
                dead = [p.name for i, p in enumerate(processes) if i not in results and p.exitcode is not None]
                if dead:
                    raise RuntimeError(f"curation worker(s) {dead} exited without a result (killed?)") from None
                continue
            if kind == "takes":
                on_takes(payload)
            elif kind == "done":
                results[part] = payload
            else:
                raise RuntimeError(f"curation worker {part} failed: {payload}")
        for process in processes:
            process.join()
        for part in range(workers):
            part_path = _part_manifest_path(out_dir, part)
            for batch in pq.ParquetFile(part_path).iter_batches(batch_size=config.samples_per_chunk):  # bounded memory
                manifest.write(batch.to_pydict())
            part_path.unlink()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
    return [results[part] for part in range(workers)]


def curate_samples(
    takes: Iterable[RawSample | Rejection] | TakeSource,
    out_dir: str | Path,
    config: CurationConfig = CurationConfig(),
    judge: CaptionJudge | None = None,
    workers: int = 1,
    sink: "MetricSink | None" = None,
    progress: bool = False,
) -> CurationResult:
    """Curate a stream of takes into chunk shards + manifest + quarantine under `out_dir`.

    `takes` may contain Rejections (takes that could not even be loaded); they go to quarantine.
    With workers > 1, `takes` must be a TakeSource (each worker process opens it and loads its own
    share). The previous manifest is removed first, so a killed run never leaves a manifest that
    points at shards of a different run; shard files appear only when complete (temporary name + rename).
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    for name in (MANIFEST_NAME, QUARANTINE_NAME, SUMMARY_NAME):
        (out_dir / name).unlink(missing_ok=True)
    if workers > 1 and not isinstance(takes, TakeSource):
        raise ValueError(f"curating with {workers} worker processes needs a TakeSource (takes each worker can load "
                         f"itself), got {type(takes).__name__}; use workers=1 for a plain iterable")

    manifest = ManifestWriter(out_dir / MANIFEST_NAME)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="curate", unit="take")
    n_takes = 0

    def on_takes(n_new: int) -> None:
        nonlocal n_takes
        before, n_takes = n_takes, n_takes + n_new
        if bar is not None:
            bar.update(n_new)
        if sink is not None and n_takes // 500 > before // 500:
            sink.log_metrics({"curation/takes": n_takes}, n_takes)

    try:
        if workers > 1:
            parts = _curate_in_processes(takes, out_dir, manifest, config, judge, workers, on_takes)
        else:
            stream = (load() for load in takes.take_loaders()) if isinstance(takes, TakeSource) else takes
            parts = [_curate_stream(stream, out_dir, "", manifest, config, judge, lambda _: on_takes(1))]
    except BaseException:
        manifest.abort()
        raise
    finally:
        if bar is not None:
            bar.close()

    chunk_names = {name for part in parts for name in part.shard_names}
    for stale in out_dir.glob(f"{CHUNK_PREFIX}-*{SHARD_SUFFIX}"):
        if stale.name not in chunk_names:
            stale.unlink()
    rejections = [rejection for part in parts for rejection in part.rejections]
    counts = {key: sum((part.counts[key] for part in parts), Counter()) for key in _COUNT_KEYS}
    atomic_write_parquet(quarantine_table(rejections), out_dir / QUARANTINE_NAME)
    result = CurationResult(
        out_dir=str(out_dir),
        manifest_path=str(out_dir / MANIFEST_NAME),
        quarantine_path=str(out_dir / QUARANTINE_NAME),
        n_takes=sum(part.n_takes for part in parts),
        n_accepted=sum(part.n_accepted for part in parts),
        n_rejected=len(rejections),
        n_chunks=len(chunk_names),
        n_frames=sum(part.n_frames for part in parts),
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
        sink.log_metrics({"curation/accepted": result.n_accepted, "curation/rejected": result.n_rejected}, result.n_takes)
        sink.log_text(f"curated {result.n_accepted} samples from {result.n_takes} takes; quarantined {result.n_rejected}: {result.rejected_by_gate}")
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
    from vimogen_core.curation.raw_sources import SourceIndex

    return curate_samples(SourceIndex(str(sources_dir)), out_dir, config, judge, workers, sink, progress)
