"""Average inference time per sentence (AITS): 100-frame motions in text mode (classifier-free
guidance, so two network evaluations per Euler step), at 50 and 10 Euler steps, batch 1 and 32,
per small preset. Weights are freshly initialised (time does not depend on their values) unless a
checkpoint is given. Text encoding is included (through the embedding cache, as in a real batch
of distinct prompts: each prompt is new), and so is the clean-up every consumer gets. Prints JSON
with medians over repeats; each row also gives the text encoding's and the clean-up's share,
timed on their own with other new prompts.

With --student, a ViMoGen-light checkpoint (guidance built in: one network evaluation per step)
is timed at --student-steps beside the teacher (--checkpoint, or fresh weights of --presets) at
--step-counts, in the same run; `speedup_vs` is the teacher's AITS at the largest step count over
the student's, at the same batch.

    .venv/bin/python benchmarks/sampling.py [--presets tiny,small] [--device cpu] [--repeats 3]
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/sampling.py --checkpoint TEACHER.pt --step-counts 50 \
        --student LIGHT.pt --student-steps 1,2,4 --batches 1
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from vimogen_core.motion.cleanup import clean_features
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


def time_generation(generator: Generator, batch: int, steps: int, repeats: int, offset: int) -> dict:
    """Median seconds per sentence: the whole generation, its text encoding and its clean-up."""
    cfg = None if generator.is_light else 5.0
    whole, text, cleanup = [], [], []
    for r in range(repeats + 1):  # the first run warms up allocations and kernels
        prompts = [f"a person walks forward and turns around, take {offset + r * batch + i}" for i in range(batch)]
        if generator.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        motions = generator.generate(prompts, 100, steps=steps, cfg_scale=cfg, seed=r, batch_size=batch)
        if generator.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        start = time.perf_counter()
        generator.text.encode([f"{p}, again" for p in prompts])  # as new to the cache as the prompts were
        encoded = time.perf_counter() - start
        start = time.perf_counter()
        for motion in motions:
            clean_features(motion, generator.cleanup)
        cleaned = time.perf_counter() - start
        if r:
            whole.append(elapsed / batch)
            text.append(encoded / batch)
            cleanup.append(cleaned / batch)
    return {"aits_s": statistics.median(whole), "text_s": statistics.median(text), "cleanup_s": statistics.median(cleanup)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--checkpoint", help="time this checkpoint instead of fresh weights of --presets")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--step-counts", default="50,10")
    parser.add_argument("--student", help="a ViMoGen-light checkpoint, timed beside the teacher")
    parser.add_argument("--student-steps", default="1,2,4")
    args = parser.parse_args()
    rows = []
    generators = ([(Path(args.checkpoint).name, load_generator(args.checkpoint, args.device))] if args.checkpoint
                  else [(p, fresh_generator(p, args.device)) for p in args.presets.split(",")])
    runs = [(name, generator, [int(s) for s in args.step_counts.split(",")]) for name, generator in generators]
    if args.student:
        from vimogen_core.distill.student import load_light_generator

        runs.append((Path(args.student).name, load_light_generator(args.student, args.device),
                     [int(s) for s in args.student_steps.split(",")]))
    teacher_aits = {}
    for name, generator, step_counts in runs:
        for steps in step_counts:
            for batch in [int(b) for b in args.batches.split(",")]:
                repeats = args.repeats if batch == 1 else max(1, args.repeats // 2)
                timed = time_generation(generator, batch, steps, repeats, offset=len(rows) * 1000)
                row = {"model": name, "light": generator.is_light, "steps": steps, "batch": batch, "frames": 100,
                       "cfg": generator.train_config.guidance_scale if generator.is_light else 5.0,
                       "aits_s": round(timed["aits_s"], 4), "text_share": round(timed["text_s"] / timed["aits_s"], 3),
                       "cleanup_share": round(timed["cleanup_s"] / timed["aits_s"], 3), "repeats": repeats}
                if not generator.is_light and steps == max(step_counts):
                    teacher_aits[batch] = timed["aits_s"]
                if generator.is_light and batch in teacher_aits:
                    row["speedup_vs_teacher"] = round(teacher_aits[batch] / timed["aits_s"], 1)
                rows.append(row)
    print(json.dumps({"device": args.device, "threads": torch.get_num_threads(), "results": rows}, indent=1))


if __name__ == "__main__":
    main()
