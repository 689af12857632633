"""The boto3 storage layer against a real S3-compatible server (moto in server mode on 127.0.0.1)."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vimogen_core.curation.config import CurationConfig
from vimogen_core.curation.pipeline import curate_samples
from vimogen_core.curation.records import RawSample
from vimogen_core.curation.sharding import write_shards
from vimogen_core.curation.storage import S3Storage
from vimogen_core.errors import MotionDataError
from vimogen_core.sources.deepmimic import load_builtin_clip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto_server() -> tuple[subprocess.Popen, str]:
    """moto's S3 server on a free 127.0.0.1 port; the caller stops it by PID."""
    port = _free_port()
    server = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("moto server did not start")


@pytest.fixture(scope="module")
def s3_endpoint():
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    process, endpoint = start_moto_server()
    yield endpoint
    os.kill(process.pid, 15)
    process.wait(timeout=10)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    takes = []
    for name in ("walk", "punch", "crawl"):
        clip = load_builtin_clip(name, min_frames=121)
        takes.append(RawSample(id=f"deepmimic/{name}", source="optical_mocap", subset="deepmimic", origin=name,
                               motion=clip.motion, motion_captions=tuple(clip.captions), video_caption=clip.video_caption))
    curated = curate_samples(takes, root / "curated", CurationConfig(samples_per_chunk=2))
    return Path(write_shards(curated.manifest_path, root / "shards", samples_per_shard=2).out_dir)


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def test_shard_set_round_trip_through_s3(s3_endpoint, shard_dir, tmp_path):
    storage = S3Storage("shards", endpoint_url=s3_endpoint)
    storage.ensure_bucket()
    up = storage.upload_shard_set(shard_dir, "v1/shards")
    assert up.keys[-1] == "v1/shards/manifest.parquet"  # the manifest goes last
    down = storage.download_shard_set("v1/shards", tmp_path / "back")
    assert down.n_files == up.n_files and down.n_bytes == up.n_bytes
    assert _digests(tmp_path / "back") == _digests(shard_dir)


def test_large_files_go_multipart_and_come_back_identical(s3_endpoint, tmp_path):
    storage = S3Storage("big", endpoint_url=s3_endpoint, multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    storage.ensure_bucket()
    path = tmp_path / "blob.bin"
    path.write_bytes(np.random.default_rng(0).bytes(12 << 20))
    storage.upload_file(path, "blob.bin")
    etag = storage.client.head_object(Bucket="big", Key="blob.bin")["ETag"].strip('"')
    assert etag.endswith("-3")  # three parts of 5, 5 and 2 MiB
    storage.download_file("blob.bin", tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == path.read_bytes()


def test_corrupted_object_is_refused_after_retries(s3_endpoint, shard_dir, tmp_path):
    storage = S3Storage("corrupt", endpoint_url=s3_endpoint, max_attempts=2)
    storage.ensure_bucket()
    storage.upload_shard_set(shard_dir, "set")
    shard = sorted(p.name for p in shard_dir.glob("*.npy"))[0]
    original = (shard_dir / shard).read_bytes()
    damaged = bytearray(original)
    damaged[1000] ^= 0xFF
    head = storage.client.head_object(Bucket="corrupt", Key=f"set/{shard}")
    storage.client.put_object(Bucket="corrupt", Key=f"set/{shard}", Body=bytes(damaged), Metadata=head["Metadata"])
    with pytest.raises(MotionDataError, match=rf"s3://corrupt/set/{shard}.*checksum mismatch"):
        storage.download_shard_set("set", tmp_path / "back")
    assert not (tmp_path / "back" / shard).exists()  # nothing unverified is left under the real name


def test_list_new_objects_pages_forward_with_a_cursor(s3_endpoint):
    storage = S3Storage("raw", endpoint_url=s3_endpoint)
    storage.ensure_bucket()
    for name in ("a.npz", "b.npz"):
        storage.client.put_object(Bucket="raw", Key=f"incoming/{name}", Body=b"x")
    storage.client.put_object(Bucket="raw", Key="elsewhere/z.npz", Body=b"x")
    first, cursor = storage.list_new_objects("incoming")
    assert [o.key for o in first] == ["incoming/a.npz", "incoming/b.npz"]
    again, same_cursor = storage.list_new_objects("incoming", cursor)
    assert again == [] and same_cursor == cursor
    time.sleep(1.1)  # S3 timestamps have one-second resolution
    storage.client.put_object(Bucket="raw", Key="incoming/c.npz", Body=b"x")
    new, cursor = storage.list_new_objects("incoming", cursor)
    assert [o.key for o in new] == ["incoming/c.npz"]
    assert storage.list_new_objects("incoming", cursor)[0] == []
    with pytest.raises(ValueError, match="invalid cursor"):
        storage.list_new_objects("incoming", "not-json")
