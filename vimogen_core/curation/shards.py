"""Packed shard files + one Parquet manifest.

A shard is a `.npy` file holding one float32 blob (rows, 276): the feature frames of ~2,000 samples
back to back. The manifest row of a sample says which shard, at which row offset, how many frames,
and the SHA-256 of its bytes; the shard file's own SHA-256 is in every row of its samples. Shards
are written under a hidden temporary name and renamed into place when complete, so a killed run
never leaves a partial shard under a shard name. Reads memory-map the shard and verify checksums.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vimogen_core.curation.records import CuratedSample, Rejection
from vimogen_core.errors import MotionDataError
from vimogen_core.files import atomic_path, replace_durably, temporary_sibling
from vimogen_core.motion.representation import FEATURE_DIM

MANIFEST_NAME = "manifest.parquet"
QUARANTINE_NAME = "quarantine.parquet"
SHARD_SUFFIX = ".npy"
_HEADER_BYTES = 128  # fixed .npy header so the row count can be filled in after streaming the data
STAT_NAMES = (
    "jitter",
    "mean_joint_speed",
    "max_joint_speed",
    "root_travel",
    "min_height",
    "max_height",
    "max_bone_deviation",
    "femur_length",
    "feature_abs_max",
)

MANIFEST_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("group_id", pa.string()),
        ("source", pa.string()),
        ("subset", pa.string()),
        ("split", pa.string()),
        ("origin", pa.string()),
        ("shard", pa.string()),
        ("offset", pa.int64()),
        ("n_frames", pa.int32()),
        ("motion_text", pa.list_(pa.string())),
        ("video_text", pa.string()),
        ("mirrored", pa.bool_()),
        ("window_start", pa.int32()),
        *[(f"stat_{name}", pa.float64()) for name in STAT_NAMES],
        ("checksum", pa.string()),
        ("shard_sha256", pa.string()),
        ("annotation_json", pa.string()),
        ("camera_extrinsic", pa.list_(pa.float32())),
        ("camera_intrinsic", pa.list_(pa.float32())),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("subset", pa.string()),
        ("origin", pa.string()),
        ("gates", pa.list_(pa.string())),
        ("reasons", pa.list_(pa.string())),
        ("stats_json", pa.string()),
    ]
)


def sha256_bytes(buffer) -> str:
    return hashlib.sha256(memoryview(buffer).cast("B")).hexdigest()


def sha256_file(path: Path, chunk_bytes: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _npy_header(rows: int) -> bytes:
    """A version 1.0 .npy header for a (rows, FEATURE_DIM) little-endian float32 C array, padded to
    exactly _HEADER_BYTES so it can be written first as a placeholder and rewritten at the end."""
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, FEATURE_DIM)
    body_bytes = _HEADER_BYTES - 10  # magic (6) + version (2) + header length (2)
    text = text.ljust(body_bytes - 1) + "\n"
    if len(text) != body_bytes:
        raise ValueError(f"shard with {rows} rows does not fit the fixed header")
    return b"\x93NUMPY\x01\x00" + body_bytes.to_bytes(2, "little") + text.encode("latin1")


def atomic_write_parquet(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


class ShardWriter:
    """Streams samples into one shard file; `close` makes it visible under its final name."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp_path = temporary_sibling(self.path)
        self._handle = open(self.tmp_path, "wb")
        self._handle.write(_npy_header(0))
        self._digest = hashlib.sha256()  # of the data region (the header is checked byte-for-byte instead)
        self.rows = 0
        self.n_samples = 0

    def append(self, features: np.ndarray, checksum: str | None = None) -> tuple[int, str]:
        """Write one sample's (T, 276) frames; returns (row offset, sample checksum). A known checksum
        (a sample re-packed from a verified shard) is carried over instead of recomputed."""
        block = np.ascontiguousarray(features, dtype="<f4")
        if block.ndim != 2 or block.shape[1] != FEATURE_DIM:
            raise ValueError(f"{self.path}: sample of shape {block.shape}, expected (T, {FEATURE_DIM})")
        offset = self.rows
        self._handle.write(block.data)
        self._digest.update(block.data)
        self.rows += block.shape[0]
        self.n_samples += 1
        return offset, checksum or sha256_bytes(block.data)

    def close(self) -> str:
        """Finish the file, rename it into place; returns the shard checksum (SHA-256 of the data region)."""
        self._handle.seek(0)
        self._handle.write(_npy_header(self.rows))
        self._handle.close()
        replace_durably(self.tmp_path, self.path)
        return self._digest.hexdigest()

    def abort(self) -> None:
        if not self._handle.closed:
            self._handle.close()
        self.tmp_path.unlink(missing_ok=True)


class ManifestWriter:
    """Streams manifest rows into a Parquet file, one row group per closed shard, so memory does not
    grow with the number of samples; the file appears under its final name only at `close`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp_path = temporary_sibling(self.path)
        self._writer = pq.ParquetWriter(self.tmp_path, MANIFEST_SCHEMA, compression="zstd")
        self.n_rows = 0

    def write(self, rows: dict[str, list]) -> None:
        table = pa.Table.from_pydict(rows, schema=MANIFEST_SCHEMA)
        self._writer.write_table(table)
        self.n_rows += table.num_rows

    def close(self) -> None:
        self._writer.close()
        replace_durably(self.tmp_path, self.path)

    def abort(self) -> None:
        self._writer.close()
        self.tmp_path.unlink(missing_ok=True)


@dataclass
class ShardSetSummary:
    shard_names: list[str]
    n_samples: int
    n_frames: int
    n_bytes: int


class ShardSetWriter:
    """Writes samples into shards named `<prefix>-00000.npy`, `<prefix>-00001.npy`, ..., rolling over
    every `samples_per_shard`; each closed shard's rows go to the manifest writer."""

    def __init__(self, directory: Path, prefix: str, manifest: ManifestWriter, samples_per_shard: int = 2000):
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.manifest = manifest
        self.samples_per_shard = samples_per_shard
        self._pending: dict[str, list] = {field.name: [] for field in MANIFEST_SCHEMA}  # rows of the open shard
        self.shard_names: list[str] = []
        self._writer: ShardWriter | None = None
        self.n_samples = 0
        self.n_frames = 0
        self.n_bytes = 0

    def _open_writer(self) -> ShardWriter:
        if self._writer is None:
            self._writer = ShardWriter(self.directory / f"{self.prefix}-{len(self.shard_names):05d}{SHARD_SUFFIX}")
        return self._writer

    def _append_row(self, row: dict) -> None:
        for key, values in self._pending.items():
            values.append(row[key])
        self.n_samples += 1
        self.n_frames += row["n_frames"]
        if self._writer.n_samples >= self.samples_per_shard:
            self._finish_shard()

    def add(self, sample: CuratedSample) -> None:
        writer = self._open_writer()
        offset, checksum = writer.append(sample.features)
        self._append_row(manifest_row(sample, shard=writer.path.name, offset=offset, checksum=checksum))

    def add_row(self, row: dict, features: np.ndarray) -> None:
        """Re-pack an existing manifest row (from another, verified shard) with its frames."""
        writer = self._open_writer()
        offset, _ = writer.append(features, checksum=row["checksum"])
        self._append_row({**row, "shard": writer.path.name, "offset": offset})

    @property
    def at_shard_boundary(self) -> bool:
        return self._writer is None

    def adopt_shard(self, source: Path, rows: list[dict], digest: str) -> None:
        """Take a complete, verified shard file (`rows` in its order, data-region checksum `digest`)
        as this set's next shard: a hard link (a copy across file systems), so its frames are not
        rewritten. Only at a shard boundary, so the result equals adding the rows one by one."""
        if not self.at_shard_boundary:
            raise ValueError(f"{self.prefix}: a shard is being written; adopt {source} only between shards")
        target = self.directory / f"{self.prefix}-{len(self.shard_names):05d}{SHARD_SUFFIX}"
        with atomic_path(target) as tmp:
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
        self.shard_names.append(target.name)
        self.n_samples += len(rows)
        self.n_frames += sum(row["n_frames"] for row in rows)
        self.n_bytes += target.stat().st_size
        self.manifest.write({key: [digest if key == "shard_sha256" else target.name if key == "shard" else row[key]
                                   for row in rows] for key in self._pending})

    def _finish_shard(self) -> None:
        assert self._writer is not None
        self.n_bytes += _HEADER_BYTES + self._writer.rows * FEATURE_DIM * 4
        digest = self._writer.close()
        self.shard_names.append(self._writer.path.name)
        self._pending["shard_sha256"] = [digest] * len(self._pending["id"])
        self.manifest.write(self._pending)
        self._pending = {key: [] for key in self._pending}
        self._writer = None

    def close(self) -> ShardSetSummary:
        if self._writer is not None:
            self._finish_shard()
        return ShardSetSummary(list(self.shard_names), self.n_samples, self.n_frames, self.n_bytes)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None


def manifest_row(sample: CuratedSample, shard: str, offset: int, checksum: str) -> dict:
    stats = dict(sample.stats)
    return {
        "id": sample.id,
        "group_id": sample.group_id,
        "source": sample.source,
        "subset": sample.subset,
        "split": sample.split,
        "origin": sample.origin,
        "shard": shard,
        "offset": offset,
        "n_frames": int(sample.features.shape[0]),
        "motion_text": list(sample.motion_captions),
        "video_text": sample.video_caption,
        "mirrored": sample.mirrored,
        "window_start": sample.window_start,
        **{f"stat_{name}": float(stats.get(name, float("nan"))) for name in STAT_NAMES},
        "checksum": checksum,
        "shard_sha256": "",  # filled in when the shard is closed
        "annotation_json": sample.annotation_json,
        "camera_extrinsic": None if sample.camera_extrinsic is None else sample.camera_extrinsic.reshape(-1).tolist(),
        "camera_intrinsic": None if sample.camera_intrinsic is None else sample.camera_intrinsic.reshape(-1).tolist(),
    }


def quarantine_table(rejections: Iterable[Rejection]) -> pa.Table:
    rows: dict[str, list] = {field.name: [] for field in QUARANTINE_SCHEMA}
    for rejection in rejections:
        rows["id"].append(rejection.id)
        rows["source"].append(rejection.source)
        rows["subset"].append(rejection.subset)
        rows["origin"].append(rejection.origin)
        rows["gates"].append(list(rejection.gates))
        rows["reasons"].append(list(rejection.reasons))
        rows["stats_json"].append(json.dumps(rejection.stats, sort_keys=True, allow_nan=True))
    return pa.Table.from_pydict(rows, schema=QUARANTINE_SCHEMA)


def read_manifest(path: Path, columns: list[str] | None = None) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as err:
        raise MotionDataError(path, f"unreadable manifest: {err}") from err


# Shards whose data region this process has hashed to the expected digest: (path, size, mtime_ns,
# digest). A shard is hashed once per process, not once per reader; loader workers forked after
# `verify_shard_files` inherit the set, so N workers do not each re-read the whole shard set.
_VERIFIED: set[tuple[str, int, int, str]] = set()


def _verified_key(path: Path, expected_sha256: str) -> tuple[str, int, int, str]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, expected_sha256)


def _data_region_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        handle.seek(_HEADER_BYTES)
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_shard_files(expected: dict[Path, str], processes: int = 1) -> int:
    """Hash every shard's data region (`processes` at a time) and check it against its expected
    SHA-256, so that readers opened afterwards in this process, or in workers forked from it,
    skip the whole-file hash; per-sample checksums are still verified on every read. Returns the
    bytes hashed. Raises MotionDataError naming the first damaged shard."""
    from concurrent.futures import ProcessPoolExecutor

    todo = [(Path(path), sha) for path, sha in expected.items() if _verified_key(Path(path), sha) not in _VERIFIED]
    if processes > 1 and len(todo) > 1:
        with ProcessPoolExecutor(processes) as pool:
            digests = list(pool.map(_data_region_sha256, [path for path, _ in todo]))
    else:
        digests = [_data_region_sha256(path) for path, _ in todo]
    for (path, sha), digest in zip(todo, digests):
        ShardReader(path, sha, mmap=False, _digest=digest)  # checks the header and the digest, registers it
    return sum(path.stat().st_size - _HEADER_BYTES for path, _ in todo)


# Sample reads in flight per process (ShardReader.read_async). The 215 KB reads of a shuffled batch
# reach the disk together; the virtual disk answers random reads faster the more it holds (cold
# cache, 49 GB set, 2 processes: 3,465 samples/s with 1 in flight each, 4,901 with 8, 5,411 with 32;
# benchmarks/data_loading.py). The threads wait in os.preadv and hash in hashlib, both without the GIL.
READ_THREADS = 32
_read_pool: ThreadPoolExecutor | None = None


def _reads() -> ThreadPoolExecutor:
    """This process's reader threads, started on first use (a forked loader worker starts its own)."""
    global _read_pool
    if _read_pool is None:
        _read_pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="shard-read")
    return _read_pool


def _forget_read_pool() -> None:
    global _read_pool
    _read_pool = None  # the parent's threads do not exist in a forked child


os.register_at_fork(after_in_child=_forget_read_pool)


class ShardReader:
    """Memory-mapped read access to one shard, with its checksums verified.

    On open the header must be exactly the canonical header for the file's size and the data
    region must hash to `expected_sha256` (once per process: see verify_shard_files); each
    sample's bytes are checked against its own checksum when read.
    """

    def __init__(self, path: Path, expected_sha256: str | None = None, expected_rows: int | None = None, mmap: bool = True,
                 _digest: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: shard not found")
        rows, remainder = divmod(self.path.stat().st_size - _HEADER_BYTES, FEATURE_DIM * 4)
        if rows < 0 or remainder:
            raise MotionDataError(self.path, "shard size is not a whole number of frames: truncated or padded")
        if expected_sha256:
            with open(self.path, "rb") as handle:
                if handle.read(_HEADER_BYTES) != _npy_header(rows):
                    raise MotionDataError(self.path, "shard header checksum mismatch (damaged header)")
            key = _verified_key(self.path, expected_sha256)
            if key not in _VERIFIED:
                digest = _digest or _data_region_sha256(self.path)
                if digest != expected_sha256:
                    raise MotionDataError(self.path, f"shard checksum mismatch (expected {expected_sha256[:16]}..., got {digest[:16]}...)")
                _VERIFIED.add(key)
        if expected_rows is not None and rows < expected_rows:
            raise MotionDataError(self.path, f"shard has {rows} rows, the manifest needs {expected_rows}")
        self.rows = rows
        self.array = None  # (rows, 276) memory map for random access; streaming reads use pread instead
        self._fd = None
        if mmap:
            try:
                self.array = np.load(self.path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as err:
                raise MotionDataError(self.path, f"unreadable shard: {err}") from err
            if self.array.dtype != np.float32 or self.array.shape != (rows, FEATURE_DIM):
                raise MotionDataError(self.path, f"shard holds {self.array.dtype} {self.array.shape}, expected float32 ({rows}, {FEATURE_DIM})")
        else:
            self._fd = os.open(self.path, os.O_RDONLY)

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def read_async(self, offset: int, n_frames: int, checksum: str | None = None, sample_id: str = "",
                   out: np.ndarray | None = None) -> Future:
        """Start reading one sample now in this process's reader threads (READ_THREADS): a Future of
        what `read` returns, verified the same way, so a batch's reads are in flight together
        instead of one page fault at a time. With `out` ((n_frames, 276) float32) the bytes land
        there, without a copy, and the Future's array is `out`."""
        return _reads().submit(self._pread_verified, self._file(), offset, n_frames, checksum, sample_id, out)

    def _pread_verified(self, fd: int, offset: int, n_frames: int, checksum: str | None, sample_id: str,
                        out: np.ndarray | None = None) -> np.ndarray:
        block = np.empty((n_frames, FEATURE_DIM), "<f4") if out is None else out
        if block.shape != (n_frames, FEATURE_DIM) or block.dtype != np.dtype("<f4"):
            raise ValueError(f"out must be ({n_frames}, {FEATURE_DIM}) float32, got {block.dtype} {block.shape}")
        if os.preadv(fd, [block], _HEADER_BYTES + offset * FEATURE_DIM * 4) != block.nbytes:
            raise MotionDataError(self.path, f"sample {sample_id} at rows {offset}:{offset + n_frames} is truncated")
        return self._verified(block, offset, n_frames, checksum, sample_id)

    def read(self, offset: int, n_frames: int, checksum: str | None = None, sample_id: str = "") -> np.ndarray:
        if self.array is None:
            return self._pread_verified(self._file(), offset, n_frames, checksum, sample_id)
        block = np.array(self.array[offset : offset + n_frames])  # (T, 276) copy out of the map
        return self._verified(block, offset, n_frames, checksum, sample_id)

    def _verified(self, block: np.ndarray, offset: int, n_frames: int, checksum: str | None, sample_id: str) -> np.ndarray:
        if block.shape[0] != n_frames:
            raise MotionDataError(self.path, f"sample {sample_id} at rows {offset}:{offset + n_frames} is truncated")
        if checksum and sha256_bytes(block.data) != checksum:
            raise MotionDataError(self.path, f"checksum mismatch for sample {sample_id} at rows {offset}:{offset + n_frames}")
        return block


def iter_shard_samples(manifest_path: Path, split: str | None = None, verify: bool = True) -> Iterator[tuple[dict, np.ndarray]]:
    """Stream (manifest row, (T, 276) features) in manifest order, one shard open at a time."""
    manifest_path = Path(manifest_path)
    table = read_manifest(manifest_path)
    if split is not None:
        table = table.filter(pc.equal(table["split"], split))
    reader: ShardReader | None = None
    for row in table.to_pylist():
        if reader is None or reader.path.name != row["shard"]:
            reader = ShardReader(manifest_path.parent / row["shard"], row["shard_sha256"] if verify else None, mmap=False)
        # the whole shard was verified when opened: no per-sample re-hash needed while streaming
        yield row, reader.read(row["offset"], row["n_frames"], None, row["id"])
