"""torchrun: two CPU processes (gloo), with DDP and with FSDP2, train like one process at the same
global batch; an FSDP run stopped and resumed from its sharded checkpoint ends where a straight
one does."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from orchestration.pipes_train import torchrun_command
from vimogen_core.train.config import apply_overrides, get_train_preset
from vimogen_core.train.loop import train

SETTINGS = ["steps=20", "batch_size=8", "bf16=false", "warmup_steps=1", "checkpoint_every=100", "log_every=5",
            "model.dim=32", "model.ffn_dim=64", "model.num_heads=2", "model.num_layers=2"]


def _update(payload: dict, start: dict) -> torch.Tensor:
    return torch.cat([(payload["model"][k] - start[k]).flatten() for k in start])


@pytest.mark.slow
def test_two_processes_with_ddp_and_fsdp_match_one_process(tmp_path):
    # Launched as the training asset launches a run (orchestration.pipes_train.torchrun_command).
    command = torchrun_command([str(Path(__file__).with_name("two_process_runs.py")), str(tmp_path), json.dumps(SETTINGS)],
                               processes=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    config = apply_overrides(get_train_preset("tiny"), SETTINGS)
    single = train(config, tmp_path / "single", progress=False)
    start = torch.load(train(config.replace(steps=0), tmp_path / "init", progress=False).checkpoint,
                       weights_only=True)["model"]
    name = single.checkpoint.name
    one = torch.load(single.checkpoint, weights_only=True)
    runs = {run: torch.load(tmp_path / run / "checkpoints" / name, weights_only=True)
            for run in ("ddp", "fsdp", "fsdp_resumed")}
    update_single = _update(one, start)
    assert update_single.norm() > 1e-3
    # Same samples, same noise, gradients averaged exactly: only float summation order differs
    # (2 processes x 1 thread vs 1 process; FSDP reduce-scatters flat shards), which Adam's
    # normalisation can amplify slightly over 20 steps.
    for run in ("ddp", "fsdp"):
        assert runs[run]["step"] == 20
        assert (update_single - _update(runs[run], start)).norm() < 1e-2 * update_single.norm(), run
        assert set(runs[run]["ema"]) == set(one["ema"]), run
    # Resumed from the step-10 sharded checkpoint (model, EMA, optimizer, RNG): exactly the straight run.
    assert (tmp_path / "fsdp_resumed" / "checkpoints" / "step_00000010.dcp" / "meta.pt").is_file()
    for part in ("model", "ema"):
        for key, value in runs["fsdp"][part].items():
            assert torch.equal(value, runs["fsdp_resumed"][part][key]), f"{part}.{key} differs after resume"
    for key, state in runs["fsdp"]["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], runs["fsdp_resumed"]["optimizer"]["state"][key]["exp_avg_sq"])


def test_torchrun_command_for_one_or_many_nodes():
    one = torchrun_command(["-m", "orchestration.pipes_train"], processes=1)
    assert one[1:] == ["-m", "orchestration.pipes_train"]
    local = torchrun_command(["-m", "x"], processes=4)
    assert local[1:] == ["-m", "torch.distributed.run", "--nproc-per-node=4", "--standalone", "-m", "x"]
    cluster = torchrun_command(["-m", "x"], processes=8, nodes=4, rdzv_endpoint="trainer-0.trainer:29400")
    assert "--nnodes=4" in cluster and "--rdzv-endpoint=trainer-0.trainer:29400" in cluster
    with pytest.raises(ValueError, match="4 nodes need a rendezvous endpoint"):
        torchrun_command(["-m", "x"], processes=8, nodes=4)
