"""Average inference time per sentence (AITS): 100-frame motions in text mode (classifier-free
guidance, so two network evaluations per Euler step), at 50 and 10 Euler steps, batch 1 and 32,
per small preset. Weights are freshly initialised (time does not depend on their values) unless a
checkpoint is given. Text encoding is included (through the embedding cache, as in a real batch
of distinct prompts: each prompt is new). Prints JSON with medians over repeats.

    .venv/bin/python benchmarks/sampling.py [--presets tiny,small] [--device cpu] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from vimogen_core.train.conditioning import TextContext
from vimogen_core.train.config import apply_overrides, get_train_preset
from vimogen_core.train.data import build_dataset
from vimogen_core.train.generate import Generator, load_generator
from vimogen_core.train.loop import build_model_config


def fresh_generator(preset: str, device: str) -> Generator:
    from vimogen_core.model.dit import ViMoGenDiT

    config = apply_overrides(get_train_preset(preset), {"device": device})
    model_config = build_model_config(config)
    torch.manual_seed(0)
    model = ViMoGenDiT(model_config).to(device).eval()
    return Generator(model=model, model_config=model_config, train_config=config,
                     normalizer=build_dataset(config).normalizer, text=TextContext(config.text_encoder, config.text_len),
                     device=torch.device(device), checkpoint=Path("(fresh weights)"), step=0)


def time_generation(generator: Generator, batch: int, steps: int, repeats: int, offset: int) -> float:
    times = []
    for r in range(repeats + 1):  # the first run warms up allocations and kernels
        prompts = [f"a person walks forward and turns around, take {offset + r * batch + i}" for i in range(batch)]
        if generator.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        generator.generate(prompts, 100, steps=steps, cfg_scale=5.0, seed=r, batch_size=batch)
        if generator.device.type == "cuda":
            torch.cuda.synchronize()
        if r:
            times.append((time.perf_counter() - start) / batch)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--checkpoint", help="time this checkpoint instead of fresh weights of --presets")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--step-counts", default="50,10")
    args = parser.parse_args()
    rows = []
    generators = ([(Path(args.checkpoint).name, load_generator(args.checkpoint, args.device))] if args.checkpoint
                  else [(p, fresh_generator(p, args.device)) for p in args.presets.split(",")])
    for name, generator in generators:
        for steps in [int(s) for s in args.step_counts.split(",")]:
            for batch in [int(b) for b in args.batches.split(",")]:
                repeats = args.repeats if batch == 1 else max(1, args.repeats // 2)
                aits = time_generation(generator, batch, steps, repeats, offset=len(rows) * 1000)
                rows.append({"preset": name, "steps": steps, "batch": batch, "frames": 100,
                             "aits_s": round(aits, 4), "repeats": repeats})
    print(json.dumps({"device": args.device, "threads": torch.get_num_threads(), "cfg": 5.0, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
