"""Training throughput per small preset: samples/s in fp32 and under bf16 autocast, and the achieved
matmul FLOP/s against this machine's measured matmul peak. Prints JSON.

FLOPs are counted analytically (2 per multiply-add) for the matmuls of one forward pass, per sample
and for the padded length it is computed at: embeddings, text MLP, reference encoder, main blocks
(self-attention, the cross-attention branch the sample is routed to, FFN), head; a training step
is counted as 3x the forward (the backward pass costs about twice the forward).

    .venv/bin/python benchmarks/train_step.py [--presets tiny,small] [--batch 32] [--steps 5] [--device cpu]
        [--precisions fp32,bf16]

Where bf16 is emulated (CPUs without AMX or AVX512-BF16) a bf16 step takes 15-30x as long as fp32;
`--precisions fp32` skips it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from vimogen_core.hardware import bf16_is_fast
from vimogen_core.train.conditioning import TextContext
from vimogen_core.train.config import apply_overrides, get_train_preset
from vimogen_core.train.data import build_dataset, rank_batches
from vimogen_core.train.loop import build_model_config, time_and_noise


def forward_flops(cfg, frames: int, text_tokens: int, use_text: bool) -> float:
    """Matmul FLOPs of one sample's forward pass at `frames` (padded) frames."""
    d, f, t, lt = cfg.dim, cfg.ffn_dim, frames, text_tokens
    attention_self = 8 * t * d * d + 4 * t * t * d  # q, k, v, o projections + scores and weighted sum
    ffn = 4 * t * d * f
    if use_text:
        cross = 4 * t * d * d + 4 * lt * d * d + 4 * t * lt * d
    else:
        cross = 8 * t * d * d + 4 * t * t * d
    embed = 2 * t * d * (cfg.in_dim + cfg.ref_dim) + 2 * t * d * cfg.in_dim  # motion, reference, head
    text = 2 * lt * d * (cfg.text_dim + d)
    time_path = 2 * (256 * d + d * d + 6 * d * d)
    ref_encoder = (cfg.num_layers // 2) * (attention_self + ffn)
    return float(embed + text + time_path + ref_encoder + cfg.num_layers * (attention_self + cross + ffn))


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


def measure(preset: str, batch_size: int, steps: int, bf16: bool, device: torch.device) -> dict:
    from vimogen_core.model.dit import ViMoGenDiT
    from vimogen_core.model.flow import FlowMatching

    config = apply_overrides(get_train_preset(preset), {"batch_size": batch_size, "bf16": bf16,
                                                        "min_frames": 100, "max_frames": 100})
    model_config = build_model_config(config)
    torch.manual_seed(0)
    model = ViMoGenDiT(model_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    flow = FlowMatching(prediction=model_config.prediction)
    text = TextContext(config.text_encoder, config.text_len)
    batches = rank_batches(build_dataset(config), config, 0, 0, 1)
    prepared = []
    for _ in range(steps + 2):  # data and text encoding are prepared before timing: this measures the model
        batch = next(batches).to(device)
        s, noise = time_and_noise(batch, flow, device)
        prepared.append((batch, s, noise, text.encode(batch.captions, batch.drop_text).to(device)))
    times, flops = [], []
    for i, (batch, s, noise, context) in enumerate(prepared):
        _sync(device)
        start = time.perf_counter()
        x_t = flow.interpolate(batch.x0, noise, s)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = model(x_t, flow.timestep_for_model(s), context, batch.x_mask, batch.reference, batch.reference_mask,
                         batch.use_text)
        loss = flow.loss(pred.float(), batch.x0, noise, s, batch.x_mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        _sync(device)
        if i >= 2:  # the first steps allocate and pick kernels
            times.append(time.perf_counter() - start)
            t_max = batch.x0.shape[1]
            flops.append(3 * sum(forward_flops(model_config, t_max, config.text_len, bool(u)) for u in batch.use_text))
    step_s = statistics.median(times)
    return {
        "preset": preset,
        "precision": "bf16-autocast" if bf16 else "fp32",
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "batch": batch_size,
        "frames": 100,
        "step_s_median": round(step_s, 4),
        "samples_per_s": round(batch_size / step_s, 2),
        "achieved_tflops": round(statistics.median(flops) / step_s / 1e12, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration (after 2 warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16")
    args = parser.parse_args()
    device = torch.device(args.device)
    precisions = args.precisions.split(",")
    unknown = sorted(set(precisions) - {"fp32", "bf16"})
    if unknown:
        parser.error(f"unknown precision(s) {unknown}; choose fp32, bf16")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {name: matmul_peak(device, dtypes[name]) for name in precisions}
    rows = []
    for preset in args.presets.split(","):
        by_precision = {}
        for name in precisions:
            row = measure(preset, args.batch, args.steps, name == "bf16", device)
            row["fraction_of_matmul_peak"] = round(row["achieved_tflops"] * 1e12 / peaks[name], 4)
            rows.append(row)
            by_precision[name] = row
        if len(by_precision) == 2:
            by_precision["bf16"]["speedup_vs_fp32"] = round(by_precision["bf16"]["samples_per_s"]
                                                            / by_precision["fp32"]["samples_per_s"], 2)
    print(json.dumps({
        "device": str(device),
        "threads": torch.get_num_threads(),
        "bf16_native": bf16_is_fast(device),
        "matmul_peak_gflops": {k: round(v / 1e9, 2) for k, v in peaks.items()},
        "results": rows,
    }, indent=1))


if __name__ == "__main__":
    main()
