"""Schedules and sensors: weekly retraining, and curation requested when new raw files arrive in a
watched folder or S3 prefix (the cursor remembers what was seen, so nothing is processed twice)."""

import hashlib
import json
from pathlib import Path

from dagster import (
    AssetSelection, RunRequest, ScheduleDefinition, SensorEvaluationContext, SkipReason,
    define_asset_job, sensor,
)

from orchestration.resources import ProjectPaths, RawDataWatch
from vimogen_core.sources import SOURCES
from vimogen_core.sources.raw_takes import INBOX_SUFFIXES as RAW_SUFFIXES  # take files and their captions

# Raw takes are refreshed per source by the raw-data sensor; the weekly run re-curates everything they hold.
retrain_job = define_asset_job("weekly_retrain", selection=AssetSelection.all() - AssetSelection.groups("sources"),
                               description="curation -> training -> benchmark -> promotion")
curation_job = define_asset_job("curate_new_data", selection=AssetSelection.groups("sources", "curation"),
                                description="ingest one source's new raw files and re-curate")
weekly_retrain_schedule = ScheduleDefinition(name="weekly_retrain_schedule", job=retrain_job,
                                             cron_schedule="0 3 * * 1", execution_timezone="UTC",
                                             description="Mondays 03:00 UTC: the whole graph, ending in promotion")


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


def source_of(relative: str) -> str | None:
    """The source a raw file belongs to: the first folder of its path below the inbox or prefix."""
    head, sep, _ = relative.partition("/")
    return head if sep and head in SOURCES else None


@sensor(job=curation_job, minimum_interval_seconds=60, description="Watches the raw-data inbox folder and, when "
        "configured, an S3 prefix; per new batch of files, one run that ingests their source's partition and "
        "re-curates.")
def raw_data_sensor(context: SensorEvaluationContext, paths: ProjectPaths, raw_data_watch: RawDataWatch):
    cursor = json.loads(context.cursor) if context.cursor else {"folder": [], "s3": None}
    new_files = new_folder_files(paths.raw_inbox, set(cursor["folder"]))
    new_objects = []
    if raw_data_watch.s3_bucket:
        objects, cursor["s3"] = raw_data_watch.storage().list_new_objects(raw_data_watch.s3_prefix, cursor["s3"])
        new_objects = [(o.key[len(raw_data_watch.s3_prefix):], f"s3://{raw_data_watch.s3_bucket}/{o.key}")
                       for o in objects if Path(o.key).suffix in RAW_SUFFIXES]
    # The run requested for an object fetches it into the inbox at the same relative path: seen already
    # as a folder file, so it requests no second curation (nor counts twice if fetched before this tick).
    fetched = {relative for relative, _ in new_objects}
    cursor["folder"] = sorted(set(cursor["folder"]) | set(new_files) | fetched)
    new = [(name, f"folder:{name}") for name in new_files if name not in fetched] + new_objects
    context.update_cursor(json.dumps(cursor))
    by_source: dict[str, list[str]] = {}
    for relative, label in new:
        source = source_of(relative)
        if source is None:
            context.log.warning(f"{label}: not under a source folder ({', '.join(SOURCES)}); ignored")
        else:
            by_source.setdefault(source, []).append(label)
    if not by_source:
        return SkipReason("no new raw files under a source folder")
    context.log.info("new raw files: " + ", ".join(f"{s}: {len(files)}" for s, files in by_source.items()))
    return [RunRequest(run_key=batch_key(files), partition_key=source, tags={"vimogen/new_files": str(len(files))})
            for source, files in sorted(by_source.items())]
