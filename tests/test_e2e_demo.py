"""End to end, as a user runs it: `dagster asset materialize` (the CLI, subprocesses: the raw-take partitions, then
everything downstream) over the whole graph on the tiny preset with a temporary DAGSTER_HOME and MLflow store; then the MLflow
run, the registered model and its aliases; then a consumer serving `models:/vimogen@champion` with
`mlflow models serve` on 127.0.0.1."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from orchestration.demo import demo_environment, materialize_all, run_config
from playground.browser import stop_server

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_STEPS = 4


@pytest.fixture(scope="module")
def demo_state(tmp_path_factory) -> Path:
    state = tmp_path_factory.mktemp("demo_state")
    config = run_config(steps=TRAIN_STEPS, bench_steps=2, judge_preset="quick",
                        train_overrides=["batch_size=4", "max_frames=60", "log_every=1"], judge_steps=20)
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)  # the store must be the temporary one
    try:
        done = materialize_all(state, config, log_path=state / "materialize.log")
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    log = (state / "materialize.log").read_text()
    assert done.returncode == 0, log[-6000:]
    return state


def mlflow_client(state: Path):
    from mlflow.tracking import MlflowClient

    uri = demo_environment(state)["MLFLOW_TRACKING_URI"]
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.mark.slow
def test_whole_graph_materialises_and_is_tracked_in_mlflow(demo_state):
    client = mlflow_client(demo_state)
    (experiment,) = [e for e in client.search_experiments() if e.name == "vimogen"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["model_preset"] == "tiny" and run.data.params["steps"] == str(TRAIN_STEPS)
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == list(range(1, TRAIN_STEPS + 1)), "one loss point per logged step"
    assert all(m.timestamp >= run.info.start_time for m in losses), "logged live by the trainer, while the run was open"
    assert any(key.startswith("mbench/") for key in run.data.metrics)
    assert "classic/FID" in run.data.metrics
    (dataset_input,) = run.inputs.dataset_inputs
    manifest = demo_state / "data" / "shards" / "manifest.parquet"
    import hashlib

    assert dataset_input.dataset.digest == hashlib.sha256(manifest.read_bytes()).hexdigest()[:32]
    tags = {t.key: t.value for t in dataset_input.tags}
    assert tags["dvc_md5"].endswith(".dir")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"train_config.json", "loss.png", "sample.gif", "sample.png"} <= artifacts
    assert any(p.endswith(".pt") for p in artifacts)

    version = client.get_model_version_by_alias("vimogen", "candidate")
    assert client.get_model_version_by_alias("vimogen", "champion").version == version.version
    assert version.run_id == run.info.run_id
    assert version.tags["promotion_decision"].startswith("promoted")
    assert (demo_state / "bench" / "mbench" / "report.md").read_text().startswith("# MBench report")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served_by_mlflow(model_uri: str, env: dict):
    """`mlflow models serve` of `model_uri` on a free 127.0.0.1 port: its base URL once /ping
    answers; stopped by its own PID (its session: uvicorn and its workers) afterwards."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", model_uri,
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                              cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if requests.get(f"{base}/ping", timeout=5).ok:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            assert server.poll() is None, "mlflow models serve exited"
            time.sleep(1)
        yield base
    finally:
        stop_server(server, timeout=30, group=True)


def assert_motions_of_requested_length(base: str, frames: list[int]) -> None:
    """Two prompts at the given frame counts: (T, 22, 3) joints and (T, 276) features each."""
    records = [{"prompt": "a person walks forward", "frames": frames[0], "seed": 0},
               {"prompt": "a person jumps", "frames": frames[1], "seed": 0}]
    reply = requests.post(f"{base}/invocations", json={"dataframe_records": records}, timeout=300)
    assert reply.status_code == 200, reply.text
    predictions = reply.json()["predictions"]
    assert [p["frames"] for p in predictions] == frames
    for prediction in predictions:
        joints, features = json.loads(prediction["joints"]), json.loads(prediction["features"])
        assert len(joints) == prediction["frames"] and len(joints[0]) == 22 and len(joints[0][0]) == 3
        assert len(features) == prediction["frames"] and len(features[0]) == 276


@pytest.mark.slow
def test_champion_served_by_mlflow_answers_prompts(demo_state):
    # The demo's environment: PATH starts with the environment's bin (mlflow runs its uvicorn).
    with served_by_mlflow("models:/vimogen@champion", demo_environment(demo_state)) as base:
        assert_motions_of_requested_length(base, [40, 60])

        bad = requests.post(f"{base}/invocations", json={"dataframe_records": [{"frames": 40}]}, timeout=60)
        assert 400 <= bad.status_code < 500 and "prompt" in bad.text
        too_long = requests.post(f"{base}/invocations", json={"dataframe_records": [
            {"prompt": "a person walks", "frames": 100000}]}, timeout=60)
        assert too_long.status_code == 400 and "frame count" in too_long.text
        garbage = requests.post(f"{base}/invocations", data="not json", headers={"Content-Type": "application/json"},
                                timeout=60)
        assert 400 <= garbage.status_code < 500 and garbage.text
