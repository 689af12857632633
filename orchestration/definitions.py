"""The Dagster code location: `dagster dev -m orchestration.definitions` or workspace.yaml."""
from __future__ import annotations

from dagster import Definitions, PipesSubprocessClient, load_asset_checks_from_modules, load_assets_from_modules

from orchestration import assets
from orchestration.resources import MLflowTracking, ProjectPaths
from orchestration.sensors import RawDataWatch, curation_job, raw_data_sensor, retrain_job, weekly_retrain_schedule

defs = Definitions(
    assets=load_assets_from_modules([assets]),
    asset_checks=load_asset_checks_from_modules([assets]),
    jobs=[retrain_job, curation_job],
    schedules=[weekly_retrain_schedule],
    sensors=[raw_data_sensor],
    resources={
        "paths": ProjectPaths(),
        "mlflow_tracking": MLflowTracking(),
        "pipes_subprocess_client": PipesSubprocessClient(),
        "raw_data_watch": RawDataWatch(),
    },
)
