"""The two runs of tests/test_deploy_stack.py (the weekly retraining and a curation the raw-data sensor
requests) on the laptop defaults instead of the deployment: Dagster on SQLite in the state folder's
DAGSTER_HOME, MLflow on SQLite (orchestration.demo's environment), run by `dagster-daemon` with Dagster's
default QueuedRunCoordinator. Both succeed, their steps on the shared curated data taking turns in the
concurrency pool, and no process of either reports a locked database."""
from __future__ import annotations

import pytest

from orchestration.demo import demo_environment
from test_deploy_stack import assert_pooled_steps_took_turns, new_take, retrain_and_sensor_curation_at_once

# What the laptop instance needs beyond Dagster's SQLite defaults: the shared-data pool limited to one
# step at a time across runs (deploy/dagster.yaml sets the same for the deployment).
LAPTOP_INSTANCE = """concurrency:
  pools:
    default_limit: 1
    op_granularity_run_buffer: 1
telemetry:
  enabled: false
"""


@pytest.mark.slow
def test_retraining_and_sensor_curation_at_once_on_sqlite(tmp_path):
    state = tmp_path / "state"
    env = demo_environment(state)
    home = state / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(LAPTOP_INSTANCE)
    pair = retrain_and_sensor_curation_at_once(state, home, env, lambda: new_take(state / "raw_inbox"))
    assert env["MLFLOW_TRACKING_URI"].startswith("sqlite:")
    assert "database is locked" not in pair.log.lower()
    assert_pooled_steps_took_turns(pair)
    assert pair.materialised["curate_new_data"]["raw_takes"][0]["partition"] == "optical_mocap"
    assert {"curated_shards", "trained_model", "champion_alias"} <= set(pair.materialised["weekly_retrain"])
