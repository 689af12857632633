"""Schedules and sensors: weekly retraining, and curation requested when new raw files arrive in a
watched folder or S3 prefix (the cursor remembers what was seen, so nothing is processed twice)."""

import hashlib
import json
import os
from pathlib import Path

from dagster import (
    AssetSelection, ConfigurableResource, RunRequest, ScheduleDefinition, SensorEvaluationContext, SkipReason,
    define_asset_job, sensor,
)

from orchestration.resources import ProjectPaths

RAW_SUFFIXES = (".npz", ".pt", ".json", ".txt", ".npy", ".bvh")

retrain_job = define_asset_job("weekly_retrain", selection=AssetSelection.all(),
                               description="curation -> training -> benchmark -> promotion")
curation_job = define_asset_job("curate_new_data", selection=AssetSelection.groups("sources", "curation"),
                                description="re-curate after new raw data arrived")
weekly_retrain_schedule = ScheduleDefinition(name="weekly_retrain_schedule", job=retrain_job,
                                             cron_schedule="0 3 * * 1", execution_timezone="UTC",
                                             description="Mondays 03:00 UTC: the whole graph, ending in promotion")


class RawDataWatch(ConfigurableResource):
    """Where new raw data lands: the state folder's `raw_inbox/` always, and an S3 prefix when a
    bucket is set (VIMOGEN_RAW_S3_BUCKET / _PREFIX; endpoint from AWS_ENDPOINT_URL)."""

    s3_bucket: str = os.environ.get("VIMOGEN_RAW_S3_BUCKET", "")
    s3_prefix: str = os.environ.get("VIMOGEN_RAW_S3_PREFIX", "raw/")
    s3_endpoint_url: str = os.environ.get("AWS_ENDPOINT_URL", "")

    def storage(self):
        from vimogen_core.curation.storage import S3Storage

        return S3Storage(bucket=self.s3_bucket, endpoint_url=self.s3_endpoint_url or None)


def new_folder_files(folder: Path, seen: set[str]) -> list[str]:
    """Raw files in `folder` (recursively) not in `seen`, as sorted relative paths. Files still being
    written (temporary names starting with '.') are left for the next tick."""
    if not folder.is_dir():
        return []
    found = (p.relative_to(folder).as_posix() for p in folder.rglob("*")
             if p.is_file() and p.suffix in RAW_SUFFIXES and not p.name.startswith("."))
    return sorted(name for name in found if name not in seen)


def batch_key(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


@sensor(job=curation_job, minimum_interval_seconds=60, description="Watches the raw-data inbox folder and, when "
        "configured, an S3 prefix; one curation run per new batch of files.")
def raw_data_sensor(context: SensorEvaluationContext, paths: ProjectPaths, raw_data_watch: RawDataWatch):
    cursor = json.loads(context.cursor) if context.cursor else {"folder": [], "s3": None}
    new_files = new_folder_files(paths.raw_inbox, set(cursor["folder"]))
    cursor["folder"] = sorted(set(cursor["folder"]) | set(new_files))
    new = [f"folder:{name}" for name in new_files]
    if raw_data_watch.s3_bucket:
        objects, cursor["s3"] = raw_data_watch.storage().list_new_objects(raw_data_watch.s3_prefix, cursor["s3"])
        new += [f"s3://{raw_data_watch.s3_bucket}/{o.key}" for o in objects]
    context.update_cursor(json.dumps(cursor))
    if not new:
        return SkipReason("no new raw files")
    context.log.info(f"{len(new)} new raw files: {new[:5]}")
    return RunRequest(run_key=batch_key(new), tags={"vimogen/new_files": str(len(new))})
