"""Training-step throughput per preset: samples/s in fp32 and under bf16 autocast, the achieved
model FLOP/s, and its fraction of the device's peak (MFU). Prints JSON.

FLOPs are counted analytically (2 per multiply-add) for the matmuls of one forward pass, per sample
and for the padded length it is computed at: embeddings, the text MLP (text-mode samples), the
reference encoder (reference-mode samples), main blocks (self-attention, the cross-attention
branch the sample is routed to, FFN), head; a training step is counted as 3x the forward (the
backward pass costs about twice the forward; recomputation under activation checkpointing is not
counted, as MFU does not). The peak is --peak-tflops where given (an H200: 790 bf16 dense), else
this device's measured matmul peak at that precision.

The step is the training loop's own (loop.flow_matching_loss, backward, clipping, AdamW - fused on
CUDA - and the EMA update) on the built-in clips cut to --frames frames; text contexts are random
tensors of the encoder's shape (time does not depend on their values, and the released preset's
umT5-XXL is not needed). --fsdp shards the model in one process (FSDP2, bf16 parameter gathers),
as the released preset trains on one GPU.

    .venv/bin/python benchmarks/train_step.py [--presets tiny,small] [--batch 32] [--steps 5] [--device cpu]
        [--precisions fp32,bf16] [--frames 100] [--fsdp] [--activation-checkpointing] [--compile]
        [--peak-tflops 790]

Where bf16 is emulated (CPUs without AMX or AVX512-BF16) a bf16 step takes 15-30x as long as fp32;
`--precisions fp32` skips it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from vimogen_core.hardware import bf16_is_fast, resolve_device, sdpa_backend
from vimogen_core.train.config import apply_overrides, get_train_preset
from vimogen_core.train.batches import rank_batches
from vimogen_core.train.data import build_dataset
from vimogen_core.train.loop import EMA, build_flow, build_model_config, flow_matching_loss, init_distributed, time_and_noise


def forward_flops(cfg, frames: int, text_tokens: int, use_text: bool) -> float:
    """Matmul FLOPs of one sample's forward pass at `frames` (padded) frames."""
    d, f, t, lt = cfg.dim, cfg.ffn_dim, frames, text_tokens
    attention_self = 8 * t * d * d + 4 * t * t * d  # q, k, v, o projections + scores and weighted sum
    ffn = 4 * t * d * f
    time_path = 2 * (cfg.freq_dim * d + d * d + 6 * d * d)
    embed = 2 * t * d * cfg.in_dim + 2 * t * d * cfg.out_dim  # motion embedding, head
    if use_text:
        branch = 2 * lt * d * (cfg.text_dim + d)  # the text MLP
        cross = 4 * t * d * d + 4 * lt * d * d + 4 * t * lt * d
    else:
        branch = 2 * t * d * cfg.ref_dim + cfg.num_ref_layers * (attention_self + ffn)  # the reference encoder
        cross = 8 * t * d * d + 4 * t * t * d
    return float(embed + time_path + branch + cfg.num_layers * (attention_self + cross + ffn))


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times[1:])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(preset: str, batch_size: int, steps: int, bf16: bool, device: torch.device, frames: int = 100,
            shard: bool = False, activation_checkpointing: bool = False, compile: bool = False) -> dict:
    from vimogen_core.model.dit import ViMoGenDiT
    from vimogen_core.train import fsdp

    config = apply_overrides(get_train_preset(preset), {"batch_size": batch_size, "bf16": bf16, "data": "builtin",
                                                        "length_rule": "crop", "min_frames": frames,
                                                        "max_frames": frames, "builtin_min_frames": frames})
    model_config = build_model_config(config)
    torch.manual_seed(0)
    model = ViMoGenDiT(model_config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    if activation_checkpointing:
        fsdp.checkpoint_activations(model)
    if compile:
        for module in fsdp.transformer_blocks(model) if shard else [model]:
            module.compile()
    if shard:
        init_distributed(str(device), need_group=True)
        fsdp.shard_model(model, bf16=bf16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, fused=device.type == "cuda" or None,
                                  foreach=True if shard and device.type != "cuda" else None)
    ema = EMA(model)
    flow = build_flow(config, model_config)
    batches = rank_batches(build_dataset(config), config, 0, 0, 1)
    generator = torch.Generator().manual_seed(0)
    prepared = []
    for _ in range(steps + 2):  # data and text contexts are prepared before timing: this measures the step
        batch = next(batches).to(device)
        s, noise = time_and_noise(batch, flow, device)
        context = torch.randn(batch_size, config.text_len, model_config.text_dim, generator=generator).to(device)
        prepared.append((batch, s, noise, context, torch.ones(context.shape[:2], dtype=torch.bool, device=device)))
    times, flops = [], []
    for i, (batch, s, noise, context, context_mask) in enumerate(prepared):
        _sync(device)
        start = time.perf_counter()
        loss = flow_matching_loss(model, flow, batch, s, noise, context, context_mask, bf16)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        ema.update(model, config.ema_decay)
        _sync(device)
        if i >= 2:  # the first steps allocate, compile and pick kernels
            times.append(time.perf_counter() - start)
            flops.append(3 * sum(forward_flops(model_config, frames, config.text_len, bool(u)) for u in batch.use_text))
    step_s = statistics.median(times)
    row = {
        "preset": preset,
        "precision": "bf16-autocast" if bf16 else "fp32",
        "fsdp": shard, "activation_checkpointing": activation_checkpointing, "compile": compile,
        "parameters_m": round(n_params / 1e6, 3),
        "batch": batch_size,
        "frames": frames,
        "step_s_median": round(step_s, 4),
        "samples_per_s": round(batch_size / step_s, 2),
        "achieved_tflops": round(statistics.median(flops) / step_s / 1e12, 4),
        "attention_kernel": sdpa_backend(device, torch.bfloat16 if bf16 else torch.float32, model_config.num_heads,
                                         model_config.head_dim),
    }
    if device.type == "cuda":
        row["max_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
    del model, optimizer, ema, prepared
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration (after 2 warm-up)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--fsdp", action="store_true", help="shard with FSDP2 in one process")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak at bf16 for MFU (default: measured)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    precisions = args.precisions.split(",")
    unknown = sorted(set(precisions) - {"fp32", "bf16"})
    if unknown:
        parser.error(f"unknown precision(s) {unknown}; choose fp32, bf16")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    n = 8192 if device.type == "cuda" else 2048
    peaks = {name: matmul_peak(device, dtypes[name], n) for name in precisions}
    if args.peak_tflops and "bf16" in peaks:
        peaks["bf16"] = args.peak_tflops * 1e12
    rows = []
    for preset in args.presets.split(","):
        by_precision = {}
        for name in precisions:
            row = measure(preset, args.batch, args.steps, name == "bf16", device, args.frames, args.fsdp,
                          args.activation_checkpointing, args.compile)
            row["mfu"] = round(row["achieved_tflops"] * 1e12 / peaks[name], 4)
            rows.append(row)
            by_precision[name] = row
        if len(by_precision) == 2:
            by_precision["bf16"]["speedup_vs_fp32"] = round(by_precision["bf16"]["samples_per_s"]
                                                            / by_precision["fp32"]["samples_per_s"], 2)
    print(json.dumps({
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "bf16_native": bf16_is_fast(device),
        "peak_tflops": {k: round(v / 1e12, 4) for k, v in peaks.items()},
        "peak_source": {k: "--peak-tflops" if args.peak_tflops and k == "bf16" else f"measured {n}^3 matmul"
                        for k in peaks},
        "results": rows,
    }, indent=1))


if __name__ == "__main__":
    main()
