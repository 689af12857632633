"""FSDP2 in one process (the released preset on one GPU), and the CUDA paths of training and
generation. The CUDA tests skip without a GPU (benchmarks/gpu_check.sh runs them on one); the
two-process comparison with DDP is in test_ddp.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vimogen_core.errors import MotionDataError
from vimogen_core.hardware import sdpa_backend
from vimogen_core.train.checkpoint import load_checkpoint
from vimogen_core.train.config import apply_overrides, get_train_preset
from vimogen_core.train.loop import train

SMALL = ["batch_size=4", "warmup_steps=1", "log_every=2", "model.dim=32", "model.ffn_dim=64", "model.num_heads=2",
         "model.num_layers=2"]
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                   reason=f"no CUDA GPU visible (torch {torch.__version__}); run benchmarks/gpu_check.sh on one")


def _assert_same_weights(a: dict, b: dict) -> None:
    for part in ("model", "ema"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key} differs after resume"


def _straight_and_resumed(config, tmp_path) -> tuple[dict, dict]:
    straight = train(config, tmp_path / "straight", progress=False)
    train(config.replace(steps=config.steps // 2), tmp_path / "split", progress=False)
    resumed = train(config, tmp_path / "split", resume="auto", progress=False)
    return (torch.load(straight.checkpoint, weights_only=True), torch.load(resumed.checkpoint, weights_only=True))


def test_one_process_fsdp_with_activation_checkpointing_trains_like_plain(tmp_path):
    """The released preset's route on one GPU (a process group of its own, every block its own
    FSDP unit, activations recomputed) gives the plain run's weights; sharded resume is checked
    with two processes in test_ddp.py."""
    config = apply_overrides(get_train_preset("tiny"), SMALL + ["steps=3", "checkpoint_every=100", "bf16=false"])
    plain = torch.load(train(config, tmp_path / "plain", progress=False).checkpoint, weights_only=True)
    result = train(config.replace(parallel="fsdp", activation_checkpointing=True), tmp_path / "fsdp", progress=False)
    sharded = torch.load(result.checkpoint, weights_only=True)
    assert (tmp_path / "fsdp" / "checkpoints" / "step_00000003.dcp" / "meta.pt").is_file()
    for part in ("model", "ema"):  # one shard is the whole tensor: only the kernels' order differs
        for key, value in plain[part].items():
            torch.testing.assert_close(sharded[part][key], value, rtol=1e-4, atol=1e-5)
    # The consolidated .pt names the optimizer state by parameter and keeps the settings.
    assert sharded["optimizer"]["param_groups"][0]["lr"] == config.lr
    assert "motion_embedding.weight" in sharded["optimizer"]["state"]


def test_fsdp_resumes_only_from_a_sharded_checkpoint(tmp_path):
    config = apply_overrides(get_train_preset("tiny"), SMALL + ["steps=1", "bf16=false"])
    done = train(config, tmp_path / "plain", progress=False)
    with pytest.raises(MotionDataError, match=r"step_00000001\.pt: an FSDP run resumes from a sharded checkpoint"):
        train(config.replace(parallel="fsdp", steps=2), tmp_path / "b", resume=done.checkpoint, progress=False)
    with pytest.raises(ValueError, match="unknown parallel 'zero'"):
        train(config.replace(parallel="zero"), tmp_path / "c", progress=False)


def test_device_auto_and_missing_gpu_are_resolved_clearly():
    from vimogen_core.hardware import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


@requires_cuda
def test_cuda_masked_attention_runs_a_fused_kernel():
    # The released head size in bf16, with key-padding masks as the network passes them.
    assert sdpa_backend("cuda", torch.bfloat16, 12, 128) in ("flash", "memory-efficient", "cudnn")


@requires_cuda
def test_cuda_bf16_training_resumes_exactly(tmp_path):
    config = apply_overrides(get_train_preset("tiny"), SMALL + ["steps=6", "checkpoint_every=3", "device=cuda",
                                                                "bf16=true", "data_workers=2"])
    straight, resumed = _straight_and_resumed(config, tmp_path)
    _assert_same_weights(straight, resumed)
    assert "cuda" in straight["rng"]  # the GPU's RNG state travels with the checkpoint


@requires_cuda
def test_cuda_fsdp_on_one_gpu_resumes_exactly(tmp_path):
    config = apply_overrides(get_train_preset("tiny"), SMALL + ["steps=4", "checkpoint_every=2", "device=cuda",
                                                                "bf16=true", "parallel=fsdp",
                                                                "activation_checkpointing=true"])
    straight, resumed = _straight_and_resumed(config, tmp_path)
    _assert_same_weights(straight, resumed)


@requires_cuda
def test_cuda_generation_in_large_batches_matches_small_batches(tmp_path):
    from vimogen_core.train.generate import load_generator

    config = apply_overrides(get_train_preset("tiny"), SMALL + ["steps=2", "device=cuda"])
    generator = load_generator(train(config, tmp_path / "run", progress=False).checkpoint, device="cuda")
    prompts = [f"a person walks forward, take {i}" for i in range(256)]
    large = generator.generate(prompts, 60, steps=5, seed=3, batch_size=256)
    small = generator.generate(prompts[:8], 60, steps=5, seed=3, batch_size=4)
    assert len(large) == 256 and all(m.shape == (60, 276) and np.isfinite(m).all() for m in large)
    for a, b in zip(large[:8], small):
        np.testing.assert_allclose(a, b, atol=1e-3)
