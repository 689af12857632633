"""Resources: where state lives, and MLflow tracking. Defaults need nothing configured."""
from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource

from vimogen_core.state import state_dir

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_state_dir() -> str:
    return str(state_dir())


class ProjectPaths(ConfigurableResource):
    """Every output of the asset graph lives under one state folder."""

    state_dir: str = default_state_dir()

    def path(self, *parts: str) -> Path:
        path = Path(self.state_dir).joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def sources(self) -> Path:
        return self.path("data", "sources")

    @property
    def curated(self) -> Path:
        return self.path("data", "curated")

    @property
    def shards(self) -> Path:
        return self.path("data", "shards")

    @property
    def manifest(self) -> Path:
        return self.path("data", "shards", "manifest.parquet")

    @property
    def stats(self) -> Path:
        return self.path("data", "stats")

    @property
    def text_cache(self) -> Path:
        return self.path("text_cache")

    @property
    def judge_dir(self) -> Path:
        return self.path("bench", "local_judge")

    @property
    def mbench_dir(self) -> Path:
        return self.path("bench", "mbench")

    @property
    def raw_inbox(self) -> Path:
        return self.path("raw_inbox")


def default_tracking_uri(state_dir: str | None = None) -> str:
    state = Path(state_dir or default_state_dir())
    return os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{state / 'mlflow.db'}")


class MLflowTracking(ConfigurableResource):
    """The project's MLflow: SQLite + local artifacts in the state folder unless MLFLOW_TRACKING_URI says otherwise."""

    tracking_uri: str = ""
    experiment: str = "vimogen"
    model_name: str = "vimogen"

    def uri(self, paths: ProjectPaths) -> str:
        return self.tracking_uri or default_tracking_uri(paths.state_dir)

    def setup(self, paths: ProjectPaths):
        import mlflow

        uri = self.uri(paths)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        if mlflow.get_experiment_by_name(self.experiment) is None:
            artifacts = paths.path("mlartifacts")
            artifacts.mkdir(parents=True, exist_ok=True)
            mlflow.create_experiment(self.experiment, artifact_location=artifacts.as_uri())
        mlflow.set_experiment(self.experiment)
        return mlflow


class RawDataWatch(ConfigurableResource):
    """Where new raw data lands: the state folder's `raw_inbox/` always, and an S3 prefix when a
    bucket is set (VIMOGEN_RAW_S3_BUCKET / _PREFIX; endpoint from AWS_ENDPOINT_URL)."""

    s3_bucket: str = os.environ.get("VIMOGEN_RAW_S3_BUCKET", "")
    s3_prefix: str = os.environ.get("VIMOGEN_RAW_S3_PREFIX", "raw/")
    s3_endpoint_url: str = os.environ.get("AWS_ENDPOINT_URL", "")

    def storage(self):
        from vimogen_core.curation.storage import S3Storage

        return S3Storage(bucket=self.s3_bucket, endpoint_url=self.s3_endpoint_url or None)

    def fetch_source(self, source: str, inbox: Path) -> list[str]:
        """Download the objects under `<prefix><source>/` that the inbox does not hold yet into
        `inbox/<source>/`; returns their keys."""
        if not self.s3_bucket:
            return []
        storage, prefix = self.storage(), f"{self.s3_prefix}{source}/"
        fetched = []
        for obj in storage.list_objects(prefix):
            target = inbox / source / obj.key[len(prefix):]
            if not target.is_file() or target.stat().st_size != obj.size:
                storage.download_file(obj.key, target)
                fetched.append(obj.key)
        return fetched
