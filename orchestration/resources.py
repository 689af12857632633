"""Resources: where state lives, and MLflow tracking. Defaults need nothing configured; a deployment
points them at its servers through the environment (deploy/stack.env.example), never through code."""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dagster import ConfigurableResource

from orchestration.retry import with_retries
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


def without_password(uri: str) -> str:
    """`uri` fit for a log line: a password in it replaced by ***."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


class MLflowTracking(ConfigurableResource):
    """The project's MLflow: SQLite + local artifacts in the state folder unless MLFLOW_TRACKING_URI says
    otherwise. On a tracking server (http/https) the server keeps the artifacts (its --artifacts-destination,
    S3 in deploy/); each REST call retries under MLflow's own MLFLOW_HTTP_REQUEST_* settings, and the first
    contact of every step (the experiment) under orchestration.retry, which logs each retry."""

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
        with_retries(f"MLflow tracking store {without_password(uri)}: experiment {self.experiment!r}",
                     lambda: self._use_experiment(mlflow, paths, uri))
        return mlflow

    def _use_experiment(self, mlflow, paths: ProjectPaths, uri: str) -> None:
        """Create the experiment if it is missing (a run that lost the race to create it uses the
        winner's), then make it the active one."""
        from mlflow.exceptions import MlflowException

        if mlflow.get_experiment_by_name(self.experiment) is None:
            on_server = urlsplit(uri).scheme in ("http", "https")
            artifacts = None if on_server else paths.path("mlartifacts")
            if artifacts is not None:
                artifacts.mkdir(parents=True, exist_ok=True)
            try:
                mlflow.create_experiment(self.experiment, artifact_location=artifacts.as_uri() if artifacts else None)
            except MlflowException as err:
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        mlflow.set_experiment(self.experiment)


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
        where = f"s3://{self.s3_bucket}/"
        fetched = []
        for obj in with_retries(f"S3 listing of {where}{prefix}", lambda: storage.list_objects(prefix)):
            target = inbox / source / obj.key[len(prefix):]
            if not target.is_file() or target.stat().st_size != obj.size:
                with_retries(f"S3 download of {where}{obj.key}", lambda: storage.download_file(obj.key, target))
                fetched.append(obj.key)
        return fetched
