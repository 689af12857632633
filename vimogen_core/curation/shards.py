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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vimogen_core.curation.records import CuratedSample, Rejection
from vimogen_core.files import atomic_path, replace_durably, temporary_sibling
from vimogen_core.motion.representation import FEATURE_DIM

MANIFEST_NAME = "manifest.parquet"
QUARANTINE_NAME = "quarantine.parquet"
SHARD_SUFFIX = ".npy"
HEADER_BYTES = 128  # fixed .npy header so the row count can be filled in after streaming the data
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


def npy_header(rows: int) -> bytes:
    """A version 1.0 .npy header for a (rows, FEATURE_DIM) little-endian float32 C array, padded to
    exactly HEADER_BYTES so it can be written first as a placeholder and rewritten at the end."""
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, FEATURE_DIM)
    body_bytes = HEADER_BYTES - 10  # magic (6) + version (2) + header length (2)
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
        self._handle.write(npy_header(0))
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
        self._handle.write(npy_header(self.rows))
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
        self.n_bytes += HEADER_BYTES + self._writer.rows * FEATURE_DIM * 4
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
