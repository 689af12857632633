"""FSDP2 for sizes that do not fit data parallelism: parameters, gradients and optimizer state
sharded over the processes (`torch.distributed.fsdp.fully_shard`), bf16 mixed precision,
activation checkpointing, and sharded checkpoints through `torch.distributed.checkpoint`.

Each transformer block (the reference encoder's and the main ones) is its own FSDP unit, so one
block's parameters are gathered at a time; the rest of the network (embeddings, head) is the root
unit. Parameter names do not change (activation checkpointing and compilation work on the
block's forward in place), so the EMA, the consolidated `.pt` checkpoint and generation see the
same names as a DDP run.

A sharded checkpoint is a folder `step_NNNNNNNN.dcp`: the model, EMA and optimizer shards written
by every process (DCP's own files) and `meta.pt`, the same plain-container payload as a `.pt`
checkpoint without the tensors (step, configs, normaliser, RNG states; checkpoint.py).
"""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.checkpoint import checkpoint

from vimogen_core.errors import MotionDataError

META_NAME = "meta.pt"


def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The network's repeated blocks: the units of sharding and of activation checkpointing."""
    return [*getattr(model, "ref_motion_encoder", []), *model.blocks]


def checkpoint_activations(model: torch.nn.Module) -> None:
    """Recompute each block's activations in the backward pass instead of keeping them (the
    non-reentrant checkpoint, which takes the blocks' non-tensor arguments)."""
    for block in transformer_blocks(model):
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)


def shard_model(model: torch.nn.Module, bf16: bool) -> None:
    """Shard `model` in place over the default process group. bf16: parameters are gathered and
    computed in bfloat16, gradients reduced in float32, and the sharded master weights and the
    optimizer stay float32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
        else MixedPrecisionPolicy()
    blocks = transformer_blocks(model)
    for index, block in enumerate(blocks):
        # The last block is not resharded after its forward: its backward starts at once.
        fully_shard(block, mp_policy=policy, reshard_after_forward=index < len(blocks) - 1)
    fully_shard(model, mp_policy=policy)


def full_tensors(state: dict) -> dict:
    """A state dict with sharded tensors (DTensors) gathered whole, on the CPU. Collective: every
    process calls it; each gets the full dict (the caller keeps rank 0's)."""
    out = {}
    for name, value in state.items():
        if hasattr(value, "full_tensor"):
            value = value.full_tensor()
        out[name] = value.detach().cpu()
    return out


def full_model_and_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The unsharded model state and optimizer state (parameter names as keys) on rank 0's CPU;
    empty on the other ranks. Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_sharded(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema_state: dict,
                 write_meta) -> Path:
    """Write the sharded checkpoint folder `path` (collective). `write_meta(file)` writes meta.pt
    on rank 0. The folder appears under its name only once every shard and the meta file are
    complete, so a killed run never leaves a partial checkpoint under a checkpoint name."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    if dist.get_rank() == 0:
        shutil.rmtree(partial, ignore_errors=True)
    dist.barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state, "ema": ema_state}, checkpoint_id=str(partial))
    if dist.get_rank() == 0:
        write_meta(partial / META_NAME)
        shutil.rmtree(path, ignore_errors=True)
        partial.rename(path)
    dist.barrier()
    return path


def load_sharded(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema_state: dict) -> None:
    """Load a sharded checkpoint into the sharded model, its optimizer and the EMA tensors in
    place (collective); any process count can read a checkpoint any other wrote."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state, "ema": ema_state}
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        dcp.load(state, checkpoint_id=str(path))
    except (CheckpointException, RuntimeError, ValueError, KeyError) as err:
        raise MotionDataError(path, f"sharded checkpoint does not fit this model: {str(err)[:300]}") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
