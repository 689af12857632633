"""The shard stage: curated chunks (arrival order) -> final shards grouped by split + manifest.

Grouping by split lets a training job fetch only the training shards; the pass is a single stream
over the chunks (each verified on read) with one open writer per split.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vimogen_core.curation.records import SPLITS
from vimogen_core.curation.shards import (
    MANIFEST_NAME,
    SHARD_SUFFIX,
    ManifestWriter,
    ShardSetWriter,
    atomic_write_bytes,
    iter_shard_samples,
    remove_stale_temporaries,
    sha256_file,
)

if TYPE_CHECKING:
    from vimogen_core.sinks import MetricSink


@dataclass
class ShardResult:
    out_dir: str
    manifest_path: str
    manifest_sha256: str
    n_samples: int
    n_shards: int
    n_frames: int
    n_bytes: int
    by_split: dict[str, int] = field(default_factory=dict)
    shards_by_split: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_metadata(self) -> dict:
        return asdict(self)


def write_shards(curated_manifest: str | Path, out_dir: str | Path, samples_per_shard: int = 2000,
                 sink: "MetricSink | None" = None, progress: bool = False) -> ShardResult:
    """Re-pack a curated set into `<split>-NNNNN.npy` shards of `samples_per_shard` samples each."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    manifest_path = out_dir / MANIFEST_NAME
    manifest_path.unlink(missing_ok=True)  # no manifest may point at shards this run is about to replace
    manifest = ManifestWriter(manifest_path)  # rows stream out shard by shard, in the order shards close
    writers = {split: ShardSetWriter(out_dir, split, manifest, samples_per_shard) for split in SPLITS}
    stream = iter_shard_samples(Path(curated_manifest))
    if progress:
        from tqdm import tqdm

        stream = tqdm(stream, desc="shard", unit="sample")
    try:
        for count, (row, features) in enumerate(stream, start=1):
            if row["split"] not in writers:
                raise ValueError(f"{curated_manifest}: sample {row['id']} has unknown split {row['split']!r}")
            writers[row["split"]].add_row(row, features)
            if sink is not None and count % 10000 == 0:
                sink.log_metrics({"shard/samples": count}, count)
        summaries = {split: writer.close() for split, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        manifest.abort()
        raise

    written = {name for summary in summaries.values() for name in summary.shard_names}
    for stale in out_dir.glob(f"*{SHARD_SUFFIX}"):
        if stale.name not in written:
            stale.unlink()
    manifest.close()  # last: its presence marks a complete shard set
    result = ShardResult(
        out_dir=str(out_dir),
        manifest_path=str(manifest_path),
        manifest_sha256=sha256_file(manifest_path),
        n_samples=manifest.n_rows,
        n_shards=len(written),
        n_frames=sum(s.n_frames for s in summaries.values()),
        n_bytes=sum(s.n_bytes for s in summaries.values()),
        by_split={split: s.n_samples for split, s in summaries.items()},
        shards_by_split={split: len(s.shard_names) for split, s in summaries.items()},
        seconds=time.perf_counter() - started,
    )
    atomic_write_bytes(out_dir / "summary.json", json.dumps({k: v for k, v in asdict(result).items() if k not in ("seconds", "out_dir", "manifest_path")}, indent=2, sort_keys=True).encode())
    if sink is not None:
        sink.log_text(f"wrote {result.n_samples} samples into {result.n_shards} shards ({result.by_split})")
    return result
