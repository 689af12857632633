"""The trained_model asset's launch run config (processes per node, nodes, rdzv_endpoint): what the
run config says is the torchrun command its Pipes client starts, and a config that cannot launch
fails the Dagster run with a message naming the fields before anything starts."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, Failure, PipesSubprocessClient, materialize

from orchestration import assets
from orchestration.resources import MLflowTracking, ProjectPaths


def _materialise_training(state: Path, config: dict):
    resources = {"paths": ProjectPaths(state_dir=str(state)),
                 "mlflow_tracking": MLflowTracking(tracking_uri=f"sqlite:///{state / 'mlflow.db'}"),
                 "pipes_subprocess_client": PipesSubprocessClient()}
    instance = DagsterInstance.ephemeral()
    result = materialize([assets.trained_model], run_config={"ops": {"trained_model": {"config": config}}},
                         resources=resources, instance=instance, raise_on_error=False)
    messages = [e.message or "" for e in instance.all_logs(result.run_id)]
    return result, messages


def test_cluster_run_config_becomes_the_multi_node_torchrun_command(tmp_path):
    paths = ProjectPaths(state_dir=str(tmp_path))
    config = assets.TrainingRunConfig(processes=8, nodes=4, rdzv_endpoint="vimogen-train-0.vimogen-train:29400",
                                      steps=5, overrides=["batch_size=16"])
    command = assets.training_command(config, tmp_path / "runs" / "abc", paths, rdzv_id="vimogen-abc")
    launcher, target = command[:command.index("orchestration.pipes_train") - 1], command[command.index("orchestration.pipes_train") - 1:]
    assert launcher == [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=8", "--nnodes=4",
                        "--rdzv-backend=c10d", "--rdzv-endpoint=vimogen-train-0.vimogen-train:29400",
                        "--rdzv-id=vimogen-abc"]
    assert target[:2] == ["-m", "orchestration.pipes_train"]
    assert target[target.index("--steps") + 1] == "5" and target[-2:] == ["--set", "batch_size=16"]
    local = assets.training_command(assets.TrainingRunConfig(processes=2), tmp_path, paths, rdzv_id="x")
    assert local[1:6] == ["-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone", "-m"]
    single = assets.training_command(assets.TrainingRunConfig(), tmp_path, paths, rdzv_id="x")
    assert single[1:3] == ["-m", "orchestration.pipes_train"]


@pytest.mark.parametrize("config, expected", [
    ({"nodes": 2}, "2 nodes need a rendezvous endpoint host:port"),
    ({"nodes": 2, "rdzv_endpoint": "trainer-0"}, "2 nodes need a rendezvous endpoint host:port (the first node's), got 'trainer-0'"),
    ({"nodes": 0}, "processes and nodes must be >= 1, got 1 and 0"),
    ({"processes": 0}, "processes and nodes must be >= 1, got 0 and 1"),
    ({"rdzv_endpoint": "trainer-0:29400"}, "given for 1 node: set nodes > 1 or leave it empty"),
])
def test_run_config_that_cannot_launch_fails_the_run_before_anything_starts(tmp_path, config, expected):
    with pytest.raises(Failure, match="trained_model run config"):
        assets.training_command(assets.TrainingRunConfig(**config), tmp_path, ProjectPaths(state_dir=str(tmp_path)), "x")
    result, messages = _materialise_training(tmp_path, config)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("trained_model run config (") and expected in description, description
    assert not list(tmp_path.glob("runs/*")) and not (tmp_path / "mlflow.db").exists(), "nothing may start"


def test_run_config_processes_reach_the_command_the_pipes_client_launches(tmp_path):
    # A real run on an empty state folder: the two torchrun processes start and fail for want of a
    # shard set; the asset logged the command it handed the Pipes client just before.
    result, messages = _materialise_training(tmp_path, {"processes": 2, "steps": 1})
    assert not result.success
    (launch,) = [m for m in messages if m.startswith("launching ")]
    assert launch.startswith("launching 1 node(s) x 2 process(es): ")
    assert "-m torch.distributed.run --nproc-per-node=2 --standalone -m orchestration.pipes_train --preset tiny" in launch
    assert len(list(tmp_path.glob("runs/*"))) == 1 and (tmp_path / "mlflow.db").is_file()
