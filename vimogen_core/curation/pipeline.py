"""Streaming curation: raw takes -> resampled, canonicalised, windowed, mirrored, gated samples.

Takes flow through one at a time (each curated by `take.curate_or_quarantine`), so memory stays
bounded however many takes there are; accepted samples stream into chunk shards (written on a
second thread), rejected ones into the quarantine manifest with their reasons. With several
workers, each process curates its own share of the takes from a TakeSource into its own chunks.
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

import pyarrow.parquet as pq
import torch

from vimogen_core.curation.config import CurationConfig
from vimogen_core.curation.gates import CaptionJudge
from vimogen_core.curation.records import SPLITS, CuratedSample, RawSample, Rejection
from vimogen_core.curation.shards import (
    MANIFEST_NAME,
    QUARANTINE_NAME,
    SHARD_SUFFIX,
    ManifestWriter,
    ShardSetWriter,
    atomic_write_parquet,
    quarantine_table,
)
from vimogen_core.curation.take import curate_or_quarantine
from vimogen_core.files import TEMP_MARKER, atomic_write_bytes, remove_stale_temporaries

if TYPE_CHECKING:
    from vimogen_core.sinks import MetricSink

CHUNK_PREFIX = "chunk"
SUMMARY_NAME = "summary.json"


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
            for result in [take] if isinstance(take, Rejection) else curate_or_quarantine(take, config, judge):
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
    """Curate a stream of takes into chunk shards + manifest + quarantine under `out_dir`; a sources
    folder (`vimogen data sources` output) is curated as `SourceIndex(folder)`.

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
