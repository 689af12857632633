"""The deployment of deploy/ end to end on 127.0.0.1, started by deploy/local_stack.py as `make serve-stack`
does: PostgreSQL (Debian's server, initdb in a temporary folder, stopped by PID), moto's S3 server and
`mlflow server` on them (runs and registry in PostgreSQL, artifacts in S3), Dagster on deploy/dagster.yaml
(PostgreSQL storage, queued runs, its daemon). Through the `dagster` CLI: the source partitions, then the
weekly retraining job and a curation the sensor requests for a take arriving in the raw inbox, submitted
together and run by the daemon at once (DAGSTER_MAX_CONCURRENT_RUNS=2; their steps on the state folder's
curated data wait for each other in a concurrency pool), with the MLflow server restarted while the
retraining trains; what they made is read back from the servers, and the shards go to the bucket with
`dvc push`."""
from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from orchestration.demo import run_config
from orchestration.quiet import QUIET_ENV
from vimogen_core.motion.export import write_amass_npz
from vimogen_core.motion.motion import resample
from vimogen_core.sources import SOURCES
from vimogen_core.sources.deepmimic import load_builtin_clip

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TRAIN_STEPS = 4
# The configuration of tests/test_e2e_demo.py: the graph in about a minute on two cores.
CONFIG = run_config(steps=TRAIN_STEPS, bench_steps=2, judge_preset="quick",
                    train_overrides=["batch_size=4", "max_frames=60", "log_every=1"], judge_steps=20)
TAKE = "optical_mocap/lab1/walk_amass"


def load_local_stack():
    """deploy/local_stack.py (a script, not a package of the project)."""
    spec = importlib.util.spec_from_file_location("local_stack", REPO_ROOT / "deploy" / "local_stack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


stack_module = load_local_stack()


@dataclass
class Stack:
    folder: Path
    ports: object
    env: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)

    def start_mlflow(self) -> None:
        self.pids["mlflow"] = stack_module.start_mlflow(
            self.ports.mlflow, self.env["MLFLOW_BACKEND_STORE_URI"], self.env["MLFLOW_ARTIFACTS_DESTINATION"],
            {**os.environ, **self.env}, self.folder / "mlflow.log").pid


@pytest.fixture(scope="module")
def stack():
    try:
        stack_module.postgres_program("initdb")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    # Not under pytest's tmp_path: as root the server runs as an unprivileged user, who must reach its folder.
    folder = Path(tempfile.mkdtemp(prefix="vimogen-stack-"))
    folder.chmod(0o755)
    ports = stack_module.StackPorts(**{name: stack_module.free_port() for name in vars(stack_module.StackPorts())})
    env = stack_module.stack_environment(ports, "vimogen", secrets.token_urlsafe(12), folder / "dagster_home")
    saved = dict(os.environ)
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")})
    running = Stack(folder, ports, env)
    try:
        running.pids["postgres"] = stack_module.start_postgres(
            folder / "postgres", ports.postgres, env["DAGSTER_PG_USERNAME"], env["DAGSTER_PG_PASSWORD"],
            folder / "postgres.log").pid
        running.pids["s3"] = stack_module.start_s3(ports.s3, folder / "s3.log").pid
        running.start_mlflow()
        yield running
    finally:
        for name, pid in reversed(list(running.pids.items())):
            stack_module.stop(pid, sig=stack_module.POSTGRES_STOP if name == "postgres" else 15)
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(folder, ignore_errors=True)


def s3_client(env: dict):
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def keys_under(env: dict, bucket: str, prefix: str = "") -> list[str]:
    pages = s3_client(env).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def dagster(args: list[str], env: dict, log: Path) -> None:
    with open(log, "a") as out:
        done = subprocess.run([str(BIN / "dagster"), *args], cwd=REPO_ROOT, env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=600)
    assert done.returncode == 0, f"dagster {' '.join(args)} failed:\n{log.read_text()[-6000:]}"


def new_take(folder: Path) -> list[Path]:
    """A new AMASS-style take of the built-in walk and its caption, as raw data arrives."""
    take = folder / f"{TAKE}.npz"
    take.parent.mkdir(parents=True, exist_ok=True)
    write_amass_npz(take, resample(load_builtin_clip("walk", min_frames=121).motion, 60.0))
    take.with_suffix(".txt").write_text("a person walks forward at an even pace\n")
    return [take, take.with_suffix(".txt")]


def run_messages(instance, run_id: str) -> str:
    """A run's log as text: each event's message, and the error (with its stack) of a failure."""
    lines = []
    for event in instance.all_logs(run_id):
        lines.append(event.message or "")
        error = getattr(event.dagster_event.event_specific_data, "error", None) if event.dagster_event else None
        if error is not None:
            lines.append(error.to_string())
    return "\n".join(lines)


def step_times(instance, run_id: str) -> dict[str, tuple[float, float]]:
    """Each step of a run: (when it started, when it succeeded or failed)."""
    from dagster import DagsterEventType

    kinds = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
    times: dict[str, list[float]] = {}
    for event in instance.all_logs(run_id, of_type=kinds):
        times.setdefault(event.step_key, []).append(event.timestamp)
    return {step: (min(stamps), max(stamps)) for step, stamps in times.items()}


@dataclass
class PairResult:
    runs: dict  # job name -> DagsterRun
    started: dict  # job name -> when its run started (s since the epoch)
    ended: dict
    materialised: dict  # job name -> {asset key: [metadata of each materialisation, its partition and timestamp]}
    steps: dict  # job name -> {step key: (when it started, when it ended)}
    log: str  # every log of the runs: the CLI, the daemon, the runs' captured output


def retrain_and_sensor_curation_at_once(state: Path, home: Path, env: dict, arrive, while_training=None) -> PairResult:
    """The source partitions through `dagster asset materialize`; then a new take arrives (`arrive()`), the
    raw-data sensor is started and the weekly retraining launched, both through the `dagster` CLI, and the
    daemon runs them; `while_training()` is called every second until it returns True (it has done its
    part). Returns when both runs are over."""
    from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

    home.mkdir(parents=True, exist_ok=True)
    env = {**env, **QUIET_ENV, "VIMOGEN_STATE_DIR": str(state), "DAGSTER_HOME": str(home),
           "DAGSTER_GRPC_TIMEOUT_SECONDS": "300", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    cli_log, daemon_log = home / "cli.log", home / "daemon.log"
    workspace = ["-w", str(REPO_ROOT / "workspace.yaml")]
    dagster(["asset", "materialize", "-m", "orchestration.definitions", "--select", "raw_takes",
             "--partition-range", f"{SOURCES[0]}...{SOURCES[-1]}", "--config-json", json.dumps(
                 {"execution": {"config": {"in_process": {}}}})], env, cli_log)
    arrive()
    config = home / "retrain.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    daemon = stack_module.start_dagster_daemon(env, daemon_log)
    try:
        dagster(["sensor", "start", "raw_data_sensor", *workspace], env, cli_log)
        # The retraining up to the promotion: the ViMoGen-light group needs a teacher worth distilling (a
        # 4-step one's samples are all quarantined, and its blocking check stops the run, as it should).
        dagster(["job", "launch", "-j", "weekly_retrain", "-o", "*champion_alias", "-c", str(config), *workspace],
                env, cli_log)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # the instance's dagster.yaml reads its settings from the environment
        try:
            with DagsterInstance.get() as instance:
                deadline, runs = time.monotonic() + 3000, {}  # generous: a shared CI machine may be slow
                while time.monotonic() < deadline:
                    runs = {run.job_name: run for run in instance.get_runs()
                            if run.job_name in ("weekly_retrain", "curate_new_data")}
                    if while_training and while_training():
                        while_training = None
                    if len(runs) == 2 and all(run.is_finished for run in runs.values()):
                        break
                    time.sleep(1)
                materialised = {}
                for name, run in runs.items():
                    events = instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
                    by_asset: dict[str, list] = {}
                    for event in events:
                        materialisation = event.asset_materialization
                        by_asset.setdefault(materialisation.asset_key.to_user_string(), []).append(
                            {k: v.value for k, v in materialisation.metadata.items()}
                            | {"partition": materialisation.partition, "timestamp": event.timestamp})
                    materialised[name] = by_asset
                steps = {name: step_times(instance, run.run_id) for name, run in runs.items()}
                messages = {name: run_messages(instance, run.run_id) for name, run in runs.items()}
                records = {record.dagster_run.job_name: record for record in instance.get_run_records()}
                started = {name: records[name].start_time for name in runs}
                ended = {name: records[name].end_time for name in runs}
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    finally:
        stack_module.stop(daemon.pid, timeout_s=10)  # its code server waits up to a minute for calls to end
    captured = "\n".join(p.read_text(errors="replace") for p in (home / "storage").rglob("*") if p.suffix in (".out", ".err"))
    log = "\n".join([cli_log.read_text(errors="replace"), daemon_log.read_text(errors="replace"), captured,
                     *messages.values()])
    assert len(runs) == 2, f"expected the retraining and a sensor-requested curation, got {sorted(runs)}:\n{log[-6000:]}"
    assert all(run.is_finished for run in runs.values()), f"runs still going after {time.monotonic() - deadline + 3000:.0f} s"
    for name, run in runs.items():
        assert run.status == DagsterRunStatus.SUCCESS, f"{name} ended {run.status}:\n{messages[name][-8000:]}"
    return PairResult(runs, started, ended, materialised, steps, log)


@pytest.fixture(scope="module")
def stack_pair(stack):
    state = stack.folder / "state"
    restarts = []

    def restart_mlflow_while_training() -> bool:
        """Once the training's MLflow run is open: stop the server, keep it down until the trainer has
        taken a step (its live metric logging then waits on the dead server), start it again."""
        client = mlflow_client(stack)
        experiment = client.get_experiment_by_name("vimogen")
        if experiment is None or not client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'"):
            return False
        stack_module.stop(stack.pids["mlflow"], timeout_s=10)
        deadline = time.monotonic() + 600
        while not any(p.stat().st_size for p in state.glob("runs/*/metrics.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.2)
        stack.start_mlflow()
        restarts.append(time.monotonic())
        return True

    stack_module.dagster_home(stack.folder / "dagster_home")
    pair = retrain_and_sensor_curation_at_once(state, stack.folder / "dagster_home", stack.env,
                                               lambda: new_take(state / "raw_inbox"),
                                               while_training=restart_mlflow_while_training)
    assert restarts, "the MLflow server was never restarted: no training run was seen open"
    return state, pair


def mlflow_client(stack):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=stack.env["MLFLOW_TRACKING_URI"], registry_uri=stack.env["MLFLOW_TRACKING_URI"])


@pytest.mark.slow
def test_the_graph_on_postgres_and_s3_is_read_back_from_the_servers(stack, stack_pair):
    from dagster import DagsterInstance
    from dagster_postgres import PostgresRunStorage

    state, pair = stack_pair
    retrain = pair.materialised["weekly_retrain"]
    assert {"curated_shards", "trained_model", "mbench_scores", "registered_model", "champion_alias"} <= set(retrain)
    saved = dict(os.environ)
    os.environ.update(stack.env)
    try:
        with DagsterInstance.get() as instance:  # the runs were recorded in PostgreSQL
            assert isinstance(instance.run_storage, PostgresRunStorage)
            assert {run.job_name for run in instance.get_runs()} >= {"__ASSET_JOB", "weekly_retrain", "curate_new_data"}
    finally:
        os.environ.clear()
        os.environ.update(saved)

    client = mlflow_client(stack)
    (trained,) = retrain["trained_model"]
    run = client.get_run(trained["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["steps"] == str(TRAIN_STEPS)
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == list(range(1, TRAIN_STEPS + 1)), "every step's loss, across the restart"
    assert any(key.startswith("mbench/") for key in run.data.metrics) and "classic/FID" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"train_config.json", "loss.png", "sample.png"} <= artifacts and any(p.endswith(".pt") for p in artifacts)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), "artifacts go through the server, to S3"
    in_bucket = keys_under(stack.env, stack_module.BUCKETS["artifacts"])
    assert any(key.endswith(f"{run.info.run_id}/artifacts/train_config.json") for key in in_bucket), in_bucket[:20]

    (registered,) = retrain["registered_model"]
    version = client.get_model_version("vimogen", str(registered["version"]))
    assert version.run_id == run.info.run_id, "the version registered by this run is this run's model"
    assert client.get_model_version_by_alias("vimogen", "candidate").version == version.version
    assert client.get_model_version_by_alias("vimogen", "champion").version == version.version
    downloaded = client.download_artifacts(run.info.run_id, "train_config.json", str(state / "read_back"))
    assert json.loads(Path(downloaded).read_text())["steps"] == TRAIN_STEPS

    # Lineage: the MLflow run's dataset is the shard set the training read: the last curated_shards
    # materialisation before it, of this run or of the concurrent curation (the pool keeps them apart).
    shards = shards_trained_on(pair)
    (dataset,) = run.inputs.dataset_inputs
    tags = {t.key: t.value for t in dataset.tags}
    assert tags["manifest_sha256"] == shards["manifest_sha256"] and tags["dvc_md5"] == shards["dvc_md5"]

    # DVC: the same shard set pushed to the stack's bucket, its directory object under the hash the run recorded.
    repo = stack.folder / "dvc_repo"
    (repo / "data").mkdir(parents=True)
    shutil.copytree(state / "data" / "shards", repo / "data" / "shards")
    env = {**os.environ, **stack.env, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    for command in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"], ["sh", str(REPO_ROOT / "deploy" / "dvc_remote.sh")],
                    [str(BIN / "dvc"), "add", "-q", "data/shards"], [str(BIN / "dvc"), "push", "-q"]):
        done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    digest = tags["dvc_md5"].removesuffix(".dir")
    pushed = keys_under(stack.env, stack_module.BUCKETS["dvc"])
    assert f"store/files/md5/{digest[:2]}/{digest[2:]}.dir" in pushed, pushed[:20]


def shards_trained_on(pair: PairResult) -> dict:
    """The metadata of the last curated_shards materialisation (of either run) before the training."""
    training_started = pair.steps["weekly_retrain"]["trained_model"][0]
    before = [m for run in pair.materialised.values() for m in run["curated_shards"] if m["timestamp"] < training_started]
    return max(before, key=lambda m: m["timestamp"])


def assert_pooled_steps_took_turns(pair: PairResult) -> None:
    """No step of one run in the shared-data pool ran while one of the other run's did."""
    from orchestration.assets import SHARED_DATA_POOL
    from orchestration.definitions import defs

    pooled = {job: [(step, *times) for step, times in pair.steps[job].items()
                    if defs.resolve_job_def(job).graph.node_named(step).definition.pool == SHARED_DATA_POOL]
              for job in pair.steps}
    assert len(pooled["curate_new_data"]) >= 4 and len(pooled["weekly_retrain"]) >= 6, pooled
    for step, start, end in pooled["curate_new_data"]:
        for other, other_start, other_end in pooled["weekly_retrain"]:
            assert end <= other_start or other_end <= start, f"{step} and {other} of the two runs ran at once"


@pytest.mark.slow
def test_retraining_and_sensor_curation_at_once_each_with_its_lineage(stack_pair):
    _, pair = stack_pair
    curation, retrain = pair.runs["curate_new_data"], pair.runs["weekly_retrain"]
    first, second = sorted((curation, retrain), key=lambda run: pair.started[run.job_name])
    assert pair.started[second.job_name] < pair.ended[first.job_name], \
        f"DAGSTER_MAX_CONCURRENT_RUNS=2: the runs overlap ({pair.started}, {pair.ended})"
    print(f"{first.job_name} {pair.ended[first.job_name] - pair.started[first.job_name]:.0f} s, {second.job_name} "
          f"started {pair.started[second.job_name] - pair.started[first.job_name]:.0f} s later and ran "
          f"{pair.ended[second.job_name] - pair.started[second.job_name]:.0f} s")
    assert_pooled_steps_took_turns(pair)  # ... but not their steps on the shared curated data
    assert curation.tags.get("dagster/sensor_name") == "raw_data_sensor"
    (ingested,) = pair.materialised["curate_new_data"]["raw_takes"]
    assert ingested["partition"] == "optical_mocap"
    assert "trained_model" not in pair.materialised["curate_new_data"]
    assert "raw_takes" not in pair.materialised["weekly_retrain"], "the weekly job re-curates, it ingests nothing"
    assert curation.run_id != retrain.run_id


@pytest.mark.slow
def test_mlflow_server_restarted_during_training_loses_nothing(stack, stack_pair):
    """The server went down once the training's MLflow run was open and came back only after the trainer
    had logged its first step into the dead server: that call was retried (MLflow's HTTP retries) and the
    run has every step, its artifacts and its registered model."""
    state, pair = stack_pair
    (trained,) = pair.materialised["weekly_retrain"]["trained_model"]
    client = mlflow_client(stack)
    run = client.get_run(trained["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    logged_while_down = json.loads((Path(trained["run_dir"]) / "metrics.jsonl").read_text().splitlines()[0])["step"]
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert logged_while_down in steps and steps == list(range(1, TRAIN_STEPS + 1))
    assert client.search_model_versions(f"run_id = '{run.info.run_id}'"), "the model registered after the restart"
    # The trainer's retries of that call are in the run's log, naming the request (orchestration.pipes_train).
    retried = [line for line in pair.log.splitlines() if "urllib3.connectionpool: Retrying" in line]
    assert any("/api/2.0/mlflow/runs/log-batch" in line for line in retried), retried[:10]


def test_deploy_files_name_only_documented_variables():
    """The compose file, the Dagster instance file and the local stack read only variables that
    deploy/stack.env.example documents, and the instance file is a valid Dagster instance config."""
    import re

    from dagster._core.instance.config import dagster_instance_config

    documented = {line.split("=", 1)[0] for line in (REPO_ROOT / "deploy" / "stack.env.example").read_text().splitlines()
                  if line and not line.startswith("#")}
    compose_text = (REPO_ROOT / "deploy" / "compose.yaml").read_text()
    compose = yaml.safe_load(compose_text)
    assert {"postgres", "s3", "mlflow", "dagster-code", "dagster-webserver", "dagster-daemon"} <= set(compose["services"])
    in_compose = set(re.findall(r"\$\{(\w+)\}", compose_text)) | set(re.findall(r"\$\$\{?(\w+)", compose_text))
    instance_text = (REPO_ROOT / "deploy" / "dagster.yaml").read_text()
    in_instance = set(re.findall(r"\{env: (\w+)\}", instance_text))
    local = set(stack_module.stack_environment(stack_module.StackPorts(), "u", "p", Path("/tmp/home"))) - set(QUIET_ENV)
    for name, used in (("compose.yaml", in_compose), ("dagster.yaml", in_instance), ("local_stack.py", local - {"DAGSTER_HOME"})):
        assert used - documented == set(), f"{name} reads variables stack.env.example does not document"
    config, _ = dagster_instance_config(str(REPO_ROOT / "deploy"), config_filename="dagster.yaml")
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert "postgres" in config["storage"]


def test_retries_log_each_attempt_and_name_what_failed_when_they_give_up(caplog):
    import socket
    import threading

    import psycopg2

    from orchestration.retry import RetriesExhausted, RetryPolicy, with_retries

    quick = RetryPolicy(attempts=3, first_wait_s=0.05, max_wait_s=0.1)
    port = stack_module.free_port()
    with pytest.raises(RetriesExhausted, match=rf"PostgreSQL at 127.0.0.1:{port}: still failing after 3 attempts"):
        with_retries(f"PostgreSQL at 127.0.0.1:{port}", lambda: psycopg2.connect(
            host="127.0.0.1", port=port, dbname="x", user="x", connect_timeout=2), quick)
    logged = [r.getMessage() for r in caplog.records if r.name == "vimogen.retry"]
    assert len(logged) == 2 and "retry 1 of 2" in logged[0] and "retry 2 of 2" in logged[1]
    assert all(m.startswith(f"PostgreSQL at 127.0.0.1:{port}: OperationalError") for m in logged)
    caplog.clear()

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    late = listener.getsockname()[1]
    threading.Timer(0.3, listener.listen).start()  # a server that comes up after a while
    try:
        with_retries("late server", lambda: socket.create_connection(("127.0.0.1", late), timeout=1).close(),
                     RetryPolicy(attempts=20, first_wait_s=0.05, max_wait_s=0.1))
    finally:
        listener.close()
    retried = [r.getMessage() for r in caplog.records if r.name == "vimogen.retry"]
    assert retried and all(m.startswith("late server: ConnectionRefusedError") for m in retried)

    calls = []
    with pytest.raises(FileNotFoundError):  # a mistake, not the network: raised at once
        with_retries("reading a missing file", lambda: calls.append(1) or open("/nonexistent/file"), quick)
    assert calls == [1]
