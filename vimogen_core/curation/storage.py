"""S3 storage for shard sets (any S3-compatible endpoint), through boto3 imported lazily.

Uploads carry each file's SHA-256 in the object metadata; downloads verify it (and, for shards,
the manifest's shard checksum), retrying a corrupted transfer before giving up with an error that
names the object. Large files go up and down in multipart transfers. `list_new_objects` pages
through a prefix from a cursor, for a sensor that reacts to newly arrived raw files.
Credentials come from the environment (the usual AWS variables or profile), never from files here.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vimogen_core.curation.shards import MANIFEST_NAME, sha256_file
from vimogen_core.curation.shard_reader import ShardReader, read_manifest
from vimogen_core.errors import MotionDataError
from vimogen_core.files import atomic_path

_CHECKSUM_KEY = "sha256"  # x-amz-meta-sha256


@dataclass
class TransferResult:
    prefix: str
    local_dir: str
    n_files: int
    n_bytes: int
    keys: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_metadata(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "keys"}


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: str  # ISO 8601, UTC


def _join(prefix: str, name: str) -> str:
    return f"{prefix.rstrip('/')}/{name}" if prefix else name


class S3Storage:
    def __init__(self, bucket: str, endpoint_url: str | None = None, region: str | None = None, max_attempts: int = 5,
                 multipart_threshold: int = 64 << 20, multipart_chunksize: int = 16 << 20, client=None):
        self.bucket = bucket
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        self.region = region or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
        self.max_attempts = max_attempts
        self.multipart_threshold = multipart_threshold
        self.multipart_chunksize = multipart_chunksize
        self._client = client

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                retries={"max_attempts": self.max_attempts, "mode": "standard"},  # throttling, 5xx, connection errors
                s3={"addressing_style": "path"} if self.endpoint_url else {},
            )
            self._client = boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config)
        return self._client

    def _transfer_config(self):
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=self.multipart_threshold, multipart_chunksize=self.multipart_chunksize)

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def upload_file(self, path: str | Path, key: str) -> int:
        """Upload one file with its SHA-256 in the metadata; verify the stored size. Returns bytes."""
        path = Path(path)
        digest = sha256_file(path)
        size = path.stat().st_size
        for attempt in range(1, self.max_attempts + 1):
            self.client.upload_file(str(path), self.bucket, key, ExtraArgs={"Metadata": {_CHECKSUM_KEY: digest}}, Config=self._transfer_config())
            head = self.client.head_object(Bucket=self.bucket, Key=key)
            if head["ContentLength"] == size and head.get("Metadata", {}).get(_CHECKSUM_KEY) == digest:
                return size
            time.sleep(min(2.0, 0.1 * 2**attempt))
        raise MotionDataError(f"s3://{self.bucket}/{key}", f"upload of {path} did not verify after {self.max_attempts} attempts")

    def download_file(self, key: str, path: str | Path, expected_sha256: str | None = None) -> int:
        """Download to a temporary name, verify the checksum (metadata or `expected_sha256`), rename."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"s3://{self.bucket}/{key}"
        expected = expected_sha256 or self.client.head_object(Bucket=self.bucket, Key=key).get("Metadata", {}).get(_CHECKSUM_KEY)
        actual = None
        with atomic_path(path) as tmp:
            for attempt in range(1, self.max_attempts + 1):
                self.client.download_file(self.bucket, key, str(tmp), Config=self._transfer_config())
                actual = sha256_file(tmp)
                if expected is None or actual == expected:
                    break
                time.sleep(min(2.0, 0.1 * 2**attempt))
            else:
                raise MotionDataError(url, f"checksum mismatch after {self.max_attempts} attempts (expected {expected}, got {actual})")
        return path.stat().st_size

    def upload_shard_set(self, local_dir: str | Path, prefix: str) -> TransferResult:
        """Upload shards, then summary files, then the manifest last: a reader that finds the
        manifest finds every shard it names."""
        started = time.perf_counter()
        local_dir = Path(local_dir)
        manifest = local_dir / MANIFEST_NAME
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest}: not a shard set (no manifest)")
        files = sorted(p for p in local_dir.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST_NAME)
        keys, n_bytes = [], 0
        for path in [*files, manifest]:
            key = _join(prefix, path.name)
            n_bytes += self.upload_file(path, key)
            keys.append(key)
        return TransferResult(prefix, str(local_dir), len(keys), n_bytes, keys, time.perf_counter() - started)

    def download_shard_set(self, prefix: str, local_dir: str | Path) -> TransferResult:
        """Download a shard set; every shard is verified against the manifest's shard checksum."""
        started = time.perf_counter()
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        manifest_key = _join(prefix, MANIFEST_NAME)
        n_bytes = self.download_file(manifest_key, local_dir / MANIFEST_NAME)
        manifest = read_manifest(local_dir / MANIFEST_NAME, columns=["shard", "shard_sha256"])
        shard_sha = dict(zip(manifest["shard"].to_pylist(), manifest["shard_sha256"].to_pylist()))
        keys = [manifest_key]
        for info in self.list_objects(prefix):
            name = info.key[len(prefix.rstrip("/")) + 1 :] if prefix else info.key
            if name == MANIFEST_NAME or "/" in name:
                continue
            # The object's whole-file checksum (upload metadata) guards the transfer; the manifest's
            # shard checksum covers the shard's data region, which the reader verifies.
            n_bytes += self.download_file(info.key, local_dir / name)
            if name in shard_sha:
                ShardReader(local_dir / name, expected_sha256=shard_sha[name], mmap=False)
            keys.append(info.key)
        missing = sorted(set(shard_sha) - {Path(k).name for k in keys})
        if missing:
            raise MotionDataError(f"s3://{self.bucket}/{prefix}", f"shards named by the manifest are missing: {missing[:5]}")
        return TransferResult(prefix, str(local_dir), len(keys), n_bytes, keys, time.perf_counter() - started)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        out = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix.rstrip("/") + "/" if prefix else ""):
            for item in page.get("Contents", []):
                out.append(ObjectInfo(item["Key"], int(item["Size"]), item["ETag"].strip('"'), item["LastModified"].isoformat()))
        return out

    def list_new_objects(self, prefix: str, since_cursor: str | None = None) -> tuple[list[ObjectInfo], str]:
        """Objects under `prefix` that arrived after `since_cursor` (oldest first), and the new cursor.

        The cursor is an opaque string (JSON: the latest modification time seen and the keys seen at
        that time, since several objects can share a timestamp). Pass None the first time.
        """
        seen_time, seen_keys = "", set()
        if since_cursor:
            try:
                state = json.loads(since_cursor)
                seen_time, seen_keys = state["time"], set(state["keys"])
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"invalid cursor {since_cursor!r}: {err}") from err
        objects = sorted(self.list_objects(prefix), key=lambda o: (o.last_modified, o.key))
        new = [o for o in objects if o.last_modified > seen_time or (o.last_modified == seen_time and o.key not in seen_keys)]
        if new:
            latest = new[-1].last_modified
            keys = {o.key for o in objects if o.last_modified == latest} | (seen_keys if latest == seen_time else set())
            cursor = json.dumps({"time": latest, "keys": sorted(keys)})
        else:
            cursor = since_cursor or json.dumps({"time": "", "keys": []})
        return new, cursor
