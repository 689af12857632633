"""Resources: where state lives, and MLflow tracking. Defaults need nothing configured."""
from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_state_dir() -> str:
    return os.environ.get("VIMOGEN_STATE_DIR", str(REPO_ROOT / ".state"))


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

    def setup(self, paths: ProjectPaths):
        import mlflow

        uri = self.tracking_uri or default_tracking_uri(paths.state_dir)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        if mlflow.get_experiment_by_name(self.experiment) is None:
            artifacts = paths.path("mlartifacts")
            artifacts.mkdir(parents=True, exist_ok=True)
            mlflow.create_experiment(self.experiment, artifact_location=artifacts.as_uri())
        mlflow.set_experiment(self.experiment)
        return mlflow
