"""The raw-data sensor: new files in the watched folder, and new objects under an S3 prefix on a
real S3-compatible server (moto, 127.0.0.1), each give exactly one run request per new batch."""
from __future__ import annotations

import numpy as np
from dagster import DagsterInstance, RunRequest, SkipReason, build_sensor_context

from orchestration.resources import ProjectPaths
from orchestration.sensors import RawDataWatch, raw_data_sensor
from test_storage import s3_endpoint  # noqa: F401  (module fixture: moto server by PID)


def tick(instance, cursor, paths, watch):
    context = build_sensor_context(instance=instance, cursor=cursor, resources={"paths": paths, "raw_data_watch": watch})
    result = raw_data_sensor(context)
    return result, context.cursor


def drop_npz(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, poses=np.zeros((50, 72), np.float32), trans=np.zeros((50, 3), np.float32))


def test_folder_batches_request_one_run_each(tmp_path):
    paths, watch = ProjectPaths(state_dir=str(tmp_path)), RawDataWatch(s3_bucket="")
    with DagsterInstance.ephemeral() as instance:
        result, cursor = tick(instance, None, paths, watch)
        assert isinstance(result, SkipReason)

        drop_npz(paths.raw_inbox / "optical_mocap" / "batch1" / "a.npz")
        drop_npz(paths.raw_inbox / "optical_mocap" / "batch1" / "b.npz")
        (paths.raw_inbox / "notes.md").write_text("not motion data")
        drop_npz(paths.raw_inbox / "stray.npz")  # not under a source folder: no source to refresh
        (first,), cursor = tick(instance, cursor, paths, watch)
        assert isinstance(first, RunRequest) and first.tags["vimogen/new_files"] == "2"
        assert first.partition_key == "optical_mocap"

        again, cursor = tick(instance, cursor, paths, watch)
        assert isinstance(again, SkipReason), "files already seen must not request another run"

        drop_npz(paths.raw_inbox / "in_the_wild_video" / "batch2" / "c.npz")
        (second,), cursor = tick(instance, cursor, paths, watch)
        assert isinstance(second, RunRequest) and second.tags["vimogen/new_files"] == "1"
        assert second.run_key != first.run_key and second.partition_key == "in_the_wild_video"


def test_s3_prefix_batches_request_one_run_each(tmp_path, s3_endpoint):  # noqa: F811
    watch = RawDataWatch(s3_bucket="vimogen-raw", s3_prefix="raw/", s3_endpoint_url=s3_endpoint)
    storage = watch.storage()
    storage.ensure_bucket()
    paths = ProjectPaths(state_dir=str(tmp_path))
    source = tmp_path / "take.npz"
    drop_npz(source)
    with DagsterInstance.ephemeral() as instance:
        storage.upload_file(source, "raw/in_the_wild_video/2026/take1.npz")
        storage.upload_file(source, "raw/in_the_wild_video/2026/take2.npz")
        storage.upload_file(source, "elsewhere/ignored.npz")
        (first,), cursor = tick(instance, None, paths, watch)
        assert isinstance(first, RunRequest) and first.tags["vimogen/new_files"] == "2"
        assert first.partition_key == "in_the_wild_video"

        again, cursor = tick(instance, cursor, paths, watch)
        assert isinstance(again, SkipReason)

        storage.upload_file(source, "raw/in_the_wild_video/2026/take3.npz")
        (second,), cursor = tick(instance, cursor, paths, watch)
        assert isinstance(second, RunRequest) and second.tags["vimogen/new_files"] == "1"
        assert isinstance(tick(instance, cursor, paths, watch)[0], SkipReason)

        # The run the sensor requests fetches the new objects into the inbox for its source partition.
        fetched = watch.fetch_source("in_the_wild_video", paths.raw_inbox)
        assert sorted(fetched) == [f"raw/in_the_wild_video/2026/take{i}.npz" for i in (1, 2, 3)]
        assert (paths.raw_inbox / "in_the_wild_video" / "2026" / "take3.npz").read_bytes() == source.read_bytes()
        assert watch.fetch_source("in_the_wild_video", paths.raw_inbox) == []
        # ... where the sensor finds them as inbox files: already requested, no second curation.
        assert isinstance(tick(instance, cursor, paths, watch)[0], SkipReason)

        # An object fetched in the tick that first sees it (a run's fetch racing the sensor) counts once.
        storage.upload_file(source, "raw/in_the_wild_video/2026/take4.npz")
        watch.fetch_source("in_the_wild_video", paths.raw_inbox)
        (third,), cursor = tick(instance, cursor, paths, watch)
        assert third.tags["vimogen/new_files"] == "1"
        assert isinstance(tick(instance, cursor, paths, watch)[0], SkipReason)
