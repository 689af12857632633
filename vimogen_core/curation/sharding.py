"""The shard stage: curated chunks (arrival order) -> final shards grouped by split + manifest.

Grouping by split lets a training job fetch only the training shards; the pass is a single stream
over the chunks (each verified on read) with one open writer per split. Curation writes one chunk
stream per split (per worker), so with equal chunk and shard sizes every full chunk is adopted whole
as a shard (a hard link) and no frame is copied; the partial chunks of several workers and other
layouts are re-packed sample by sample.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vimogen_core.curation.records import SPLITS
from vimogen_core.curation.shards import MANIFEST_NAME, SHARD_SUFFIX, ManifestWriter, ShardSetWriter, sha256_file
from vimogen_core.curation.shard_reader import ShardReader, read_manifest
from vimogen_core.files import atomic_write_bytes, remove_stale_temporaries

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
    curated_manifest = Path(curated_manifest)
    table = read_manifest(curated_manifest)
    chunks = _chunk_rows(table)  # chunk name -> its row indices, in manifest order
    # Full chunks first: with several curation workers each leaves a partial chunk per split, and a
    # partial one re-packed between full ones would force every later chunk of its split to be copied.
    chunks = dict(sorted(chunks.items(), key=lambda item: len(item[1]) != samples_per_shard))
    splits_of = table.column("split").to_pylist()
    last_chunk = {splits_of[i]: name for name, indices in chunks.items() for i in indices}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=table.num_rows, desc="shard", unit="sample")
    count = 0
    # Chunks are verified (read and hashed whole) two at a time, ahead of their turn: hashing and reads
    # release the GIL, and adopting a chunk by hard link leaves nothing else to wait for.
    shard_sha256 = table.column("shard_sha256").to_pylist()
    verifier = ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify-chunk")
    readers = verifier.map(lambda name: ShardReader(curated_manifest.parent / name, shard_sha256[chunks[name][0]], mmap=False),
                           list(chunks))
    try:
        for (name, indices), reader in zip(chunks.items(), readers):
            rows = table.take(indices).to_pylist()  # one chunk's rows at a time
            splits = {row["split"] for row in rows}
            unknown = sorted(splits - set(writers))
            if unknown:
                raise ValueError(f"{curated_manifest}: chunk {name} has unknown split(s) {unknown}")
            path = curated_manifest.parent / name
            split = next(iter(splits))
            writer = writers[split]
            # A single-split chunk that would fill exactly one shard (or end its split) is that shard.
            if (len(splits) == 1 and writer.at_shard_boundary
                    and (len(rows) == samples_per_shard or (last_chunk[split] == name and len(rows) < samples_per_shard))):
                writer.adopt_shard(path, rows, rows[0]["shard_sha256"])
            else:
                for row in rows:
                    writers[row["split"]].add_row(row, reader.read(row["offset"], row["n_frames"], None, row["id"]))
            count += len(rows)
            if bar is not None:
                bar.update(len(rows))
            if sink is not None:
                sink.log_metrics({"shard/samples": count}, count)
        summaries = {split: writer.close() for split, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        manifest.abort()
        raise
    finally:
        verifier.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()

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


def _chunk_rows(table) -> dict[str, list[int]]:
    """Row indices of each shard file named in a manifest, in order of first appearance."""
    chunks: dict[str, list[int]] = {}
    for index, name in enumerate(table.column("shard").to_pylist()):
        chunks.setdefault(name, []).append(index)
    return chunks
