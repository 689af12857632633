"""Schedules and sensors: weekly retraining, and curation requested when new raw files arrive in a
watched folder or S3 prefix (the cursor remembers what was seen, so nothing is processed twice)."""

import hashlib
import json
import os
from pathlib import Path

from dagster import AssetSelection, RunRequest, ScheduleDefinition, SensorEvaluationContext, SkipReason, define_asset_job, sensor

from orchestration.resources import ProjectPaths

RAW_SUFFIXES = (".npz", ".pt", ".json", ".txt", ".npy")

retrain_job = define_asset_job("weekly_retrain", selection=AssetSelection.all(),
                               description="curation -> training -> benchmark -> promotion")
curation_job = define_asset_job("curate_new_data", selection=AssetSelection.groups("sources", "curation"),
                                description="re-curate after new raw data arrived")
weekly_retrain_schedule = ScheduleDefinition(name="weekly_retrain_schedule", job=retrain_job,
                                             cron_schedule="0 3 * * 1", execution_timezone="UTC")


def new_folder_files(folder: Path, seen: set[str]) -> list[str]:
    """Raw files in `folder` (recursively) not in `seen`, as sorted relative paths."""
    if not folder.is_dir():
        return []
    found = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.suffix in RAW_SUFFIXES)
    return sorted(name for name in found if name not in seen)


def batch_key(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


@sensor(job=curation_job, minimum_interval_seconds=60, description="Watches the raw-data inbox folder and, when "
        "VIMOGEN_RAW_S3_BUCKET is set, an S3 prefix; one curation run per new batch.")
def raw_data_sensor(context: SensorEvaluationContext, paths: ProjectPaths):
    cursor = json.loads(context.cursor) if context.cursor else {"folder": [], "s3": None}
    new = [f"folder:{n}" for n in new_folder_files(paths.raw_inbox, set(cursor["folder"]))]
    cursor["folder"] = sorted(set(cursor["folder"]) | {n.split(":", 1)[1] for n in new})
    bucket = os.environ.get("VIMOGEN_RAW_S3_BUCKET")
    if bucket:
        from vimogen_core.curation.storage import S3Storage

        storage = S3Storage(bucket=bucket, endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
        objects, cursor["s3"] = storage.list_new_objects(os.environ.get("VIMOGEN_RAW_S3_PREFIX", "raw/"), cursor["s3"])
        new += [f"s3://{bucket}/{o.key}" for o in objects]
    context.update_cursor(json.dumps(cursor))
    if not new:
        return SkipReason("no new raw files")
    return RunRequest(run_key=batch_key(new), tags={"vimogen/new_files": str(len(new))})
