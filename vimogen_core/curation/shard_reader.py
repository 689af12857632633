"""Reading shard sets (the format: `curation.shards`): the manifest, each shard verified once per
process against its digest, samples read from memory-mapped shards with their own checksums, and
batches of random reads kept in flight by a thread pool so the disk's queue stays full."""
from __future__ import annotations

import hashlib
import mmap
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vimogen_core.curation.shards import HEADER_BYTES, npy_header, sha256_bytes
from vimogen_core.errors import MotionDataError
from vimogen_core.motion.representation import FEATURE_DIM


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
        handle.seek(HEADER_BYTES)
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
    return sum(path.stat().st_size - HEADER_BYTES for path, _ in todo)


# Sample reads in flight per process (ShardReader.read_async). The 215 KB reads of a shuffled batch
# reach the disk together; the virtual disk answers random reads faster the more it holds (cold
# 49 GB set, direct reads, 2 processes: 3,776 samples/s with 1 in flight each, 4,594 with 32, 5,305
# with 64; benchmarks/data_loading.py). Verified reads in one process (ShardDataset.read_into, 4 batches ahead),
# per 5 s over 20-30 s: 4,257-4,454 samples/s with 32 threads, 4,696-5,626 with 64, 4,364-4,683 with
# 128. The threads wait in os.preadv and hash in hashlib, both without the GIL.
READ_THREADS = 64
_read_pool: ThreadPoolExecutor | None = None

# Asynchronous reads bypass the page cache (O_DIRECT) where the file system allows it: a shuffled
# pass over a set larger than memory never hits the cache, and filling it cost more CPU than the
# checksum (cold 8.6 GB set, one process, 32 threads: 0.44 ms of CPU per verified 215 KB sample
# through the cache, 0.25 ms direct). Direct reads need block-aligned offsets, sizes and memory, so
# each reader thread reads the aligned span around a sample into its own page-aligned buffer.
DIRECT_ALIGN = 4096
_direct_buffers = threading.local()


def _aligned_buffer(nbytes: int) -> memoryview:
    """This thread's page-aligned scratch buffer (anonymous mmap), at least `nbytes` long."""
    buffer = getattr(_direct_buffers, "buffer", None)
    if buffer is None or len(buffer) < nbytes:
        buffer = _direct_buffers.buffer = mmap.mmap(-1, -(-nbytes // (64 << 10)) * (64 << 10))
    return memoryview(buffer)[:nbytes]


def _sample_block(n_frames: int, out: np.ndarray | None) -> np.ndarray:
    """Where a sample's (n_frames, 276) float32 frames land: `out`, checked, or a new array."""
    block = np.empty((n_frames, FEATURE_DIM), "<f4") if out is None else out
    if block.shape != (n_frames, FEATURE_DIM) or block.dtype != np.dtype("<f4"):
        raise ValueError(f"out must be ({n_frames}, {FEATURE_DIM}) float32, got {block.dtype} {block.shape}")
    return block


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


# Reads in flight per process in `read_all_now`. Fewer threads contend less for the GIL, and with
# the reader processes of curation.batch_reader (3 on 2 cores) 48 in flight keep the disk busy:
# verified random reads of the cold 49 GB set, 10 s slices beside the disk's raw random reads,
# ratio to the disk's rate in slices without CPU steal 0.76-1.17 with 16, 0.78-0.86 with 32.
BATCH_READS_IN_FLIGHT = 16


def _drain(reads: Iterator[tuple]) -> None:
    for reader, *read in reads:  # a list iterator hands each item to exactly one thread
        reader.read_now(*read)


def read_all_now(reads: list[tuple]) -> None:
    """Run these (ShardReader, offset, n_frames, checksum, sample_id, out) reads in this process's
    reader threads, all in flight together, and return when every one is done (raising the first
    error). BATCH_READS_IN_FLIGHT threads each take the next read from one shared list, so a batch
    costs that many tasks rather than a Future per sample: 216-233 us of user CPU per verified
    215 KB sample instead of 256-307 with a Future each (cold 49 GB set, one process, 64-sample
    batches)."""
    pending = iter(reads)
    for task in [_reads().submit(_drain, pending) for _ in range(min(BATCH_READS_IN_FLIGHT, len(reads)))]:
        task.result()


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
        rows, remainder = divmod(self.path.stat().st_size - HEADER_BYTES, FEATURE_DIM * 4)
        if rows < 0 or remainder:
            raise MotionDataError(self.path, "shard size is not a whole number of frames: truncated or padded")
        if expected_sha256:
            with open(self.path, "rb") as handle:
                if handle.read(HEADER_BYTES) != npy_header(rows):
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
        self._direct_fd = None  # O_DIRECT descriptor for read_async; -1 where the file system refuses it
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
        for fd in (getattr(self, "_fd", None), getattr(self, "_direct_fd", None)):
            if fd is not None and fd >= 0:
                os.close(fd)

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def read_async(self, offset: int, n_frames: int, checksum: str | None = None, sample_id: str = "",
                   out: np.ndarray | None = None) -> Future:
        """Start reading one sample now in this process's reader threads (READ_THREADS): a Future of
        what `read` returns, verified the same way, so a batch's reads are in flight together
        instead of one page fault at a time. With `out` ((n_frames, 276) float32) the bytes land
        there and the Future's array is `out`. Reads go straight to the disk (O_DIRECT) where the
        file system allows it, through the page cache otherwise."""
        return _reads().submit(self.read_now, offset, n_frames, checksum, sample_id, out)

    def read_now(self, offset: int, n_frames: int, checksum: str | None = None, sample_id: str = "",
                 out: np.ndarray | None = None) -> np.ndarray:
        """What `read_async`'s reader thread does, in the calling thread: one verified read, direct
        where the file system allows it."""
        if self._direct_fd is None:
            try:
                self._direct_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT)
            except OSError:  # e.g. tmpfs: buffered reads instead
                self._direct_fd = -1
        if self._direct_fd >= 0:
            return self._pread_direct_verified(offset, n_frames, checksum, sample_id, out)
        return self._pread_verified(self._file(), offset, n_frames, checksum, sample_id, out)

    def _pread_direct_verified(self, offset: int, n_frames: int, checksum: str | None, sample_id: str,
                               out: np.ndarray | None = None) -> np.ndarray:
        block = _sample_block(n_frames, out)
        first = HEADER_BYTES + offset * FEATURE_DIM * 4
        span_start = first - first % DIRECT_ALIGN
        skip = first - span_start
        span = _aligned_buffer(-(-(skip + block.nbytes) // DIRECT_ALIGN) * DIRECT_ALIGN)
        try:
            got = os.preadv(self._direct_fd, [span], span_start)
        except OSError:  # the file system opened O_DIRECT but refuses this read: buffered from now on
            # (the refused descriptor stays open: other reader threads may be inside a read on it)
            self._direct_fd = -1
            return self._pread_verified(self._file(), offset, n_frames, checksum, sample_id, out)
        if got < skip + block.nbytes:  # the end of the file comes back short; a cut file shorter still
            raise MotionDataError(self.path, f"sample {sample_id} at rows {offset}:{offset + n_frames} is truncated")
        block.reshape(-1).view(np.uint8)[:] = np.frombuffer(span, np.uint8, block.nbytes, skip)
        return self._verified(block, offset, n_frames, checksum, sample_id)

    def _pread_verified(self, fd: int, offset: int, n_frames: int, checksum: str | None, sample_id: str,
                        out: np.ndarray | None = None) -> np.ndarray:
        block = _sample_block(n_frames, out)
        if os.preadv(fd, [block], HEADER_BYTES + offset * FEATURE_DIM * 4) != block.nbytes:
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
