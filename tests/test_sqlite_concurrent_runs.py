"""The two runs of tests/test_deploy_stack.py (the weekly retraining and a curation the raw-data sensor
requests) on the laptop defaults instead of the deployment: Dagster on SQLite in the state folder's
DAGSTER_HOME, MLflow on SQLite (orchestration.demo's environment), run by `dagster-daemon` with Dagster's
default QueuedRunCoordinator. Both succeed, their steps on the shared curated data taking turns in the
concurrency pool, and no process of either reports a locked database."""
from __future__ import annotations

import pytest

from orchestration.demo import demo_environment, prepare_dagster_home
from test_deploy_stack import assert_pooled_steps_took_turns, new_take, retrain_and_sensor_curation_at_once

@pytest.mark.slow
def test_retraining_and_sensor_curation_at_once_on_sqlite(tmp_path):
    state = tmp_path / "state"
    env = demo_environment(state)
    home = state / "dagster_home"
    prepare_dagster_home(home)  # what `make demo` and `make ui` use
    pair = retrain_and_sensor_curation_at_once(state, home, env, lambda: new_take(state / "raw_inbox"))
    assert env["MLFLOW_TRACKING_URI"].startswith("sqlite:")
    assert "database is locked" not in pair.log.lower()
    assert_pooled_steps_took_turns(pair)
    assert pair.materialised["curate_new_data"]["raw_takes"][0]["partition"] == "optical_mocap"
    assert {"curated_shards", "trained_model", "champion_alias"} <= set(pair.materialised["weekly_retrain"])


def test_the_laptop_instance_limits_the_shared_data_pool_and_keeps_a_users_file(tmp_path):
    from dagster import DagsterInstance

    prepare_dagster_home(tmp_path / "home")
    pool = DagsterInstance.from_config(str(tmp_path / "home")).get_concurrency_config().pool_config
    assert (pool.default_pool_limit, pool.op_granularity_run_buffer) == (1, 1)
    own = tmp_path / "own"
    own.mkdir()
    (own / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    prepare_dagster_home(own)
    assert (own / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"
