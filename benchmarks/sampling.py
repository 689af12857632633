"""Average inference time per sentence (AITS): 100-frame motions in text mode, the teacher (full
model, classifier-free guidance: two network evaluations per Euler step) at --step-counts and the
ViMoGen-light student (guidance built in: one evaluation per step) at --student-steps, side by
side in one run, at batch 1 and 32. Weights are freshly initialised (time does not depend on their
values: the teacher of each of --presets, the student at tiny size as `vimogen distill train`
builds it from a tiny teacher) unless checkpoints are given. Text encoding is included (through the
embedding cache, as in a real batch of distinct prompts: each prompt is new), and so is the
clean-up every consumer gets. Prints JSON with medians over repeats; each row also gives the
shares of the text encoding (other new prompts, timed on their own), of the network (sampling
prompts already encoded, noise drawing included) and of finishing (smoothing, de-normalising,
clean-up); `speedup_vs_teacher` is the teacher's AITS at its largest step count over the
student's, at the same batch.

    OMP_NUM_THREADS=2 flock /tmp/bench.lock .venv/bin/python benchmarks/sampling.py [--presets tiny,small] \
        [--threads 2] [--repeats 5] [--checkpoint TEACHER.pt] [--student LIGHT.pt | --student none]
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


def _fresh(config, normalizer_config, device: str, label: str) -> Generator:
    from vimogen_core.model.dit import ViMoGenDiT

    model_config = build_model_config(config)
    torch.manual_seed(0)
    model = ViMoGenDiT(model_config).to(device).eval()
    return Generator(model=model, model_config=model_config, train_config=config,
                     normalizer=build_dataset(normalizer_config).normalizer,
                     text=TextContext(config.text_encoder, config.text_len),
                     device=torch.device(device), checkpoint=Path(label), step=0)


def fresh_generator(preset: str, device: str) -> Generator:
    config = apply_overrides(get_train_preset(preset), {"device": device})
    return _fresh(config, config, device, "(fresh weights)")


def fresh_student(device: str) -> Generator:
    """A tiny-size ViMoGen-light student with fresh weights, configured as distilling a tiny teacher makes it."""
    from dataclasses import asdict

    from vimogen_core.distill.student import StudentConfig, student_train_config
    from vimogen_core.model.config import get_preset

    teacher = apply_overrides(get_train_preset("tiny"), {"device": device})
    config = student_train_config(teacher, asdict(get_preset(teacher.model_preset)), StudentConfig())
    return _fresh(config, teacher, device, "(fresh light weights)")


def _sync(generator: Generator) -> None:
    if generator.device.type == "cuda":
        torch.cuda.synchronize()


def time_generation(generator: Generator, batch: int, steps: int, repeats: int, offset: int) -> dict:
    """Median seconds per sentence: the whole generation, and on their own its text encoding (other
    new prompts), its sampling (prompts already encoded) and its finishing (smoothing, clean-up)."""
    cfg = None if generator.is_light else 5.0
    whole, text, network, finish = [], [], [], []
    for r in range(repeats + 1):  # the first run warms up allocations and kernels
        prompts = [f"a person walks forward and turns around, take {offset + r * batch + i}" for i in range(batch)]
        lengths = [100] * batch
        _sync(generator)
        start = time.perf_counter()
        generator.generate(prompts, 100, steps=steps, cfg_scale=cfg, seed=r, batch_size=batch)
        _sync(generator)
        elapsed = time.perf_counter() - start
        start = time.perf_counter()
        generator.text.encode([f"{p}, again" for p in prompts])  # as new to the cache as the prompts were
        encoded = time.perf_counter() - start
        start = time.perf_counter()  # the prompts are in the cache now: the network and its inputs alone
        sample = generator.sample(prompts, lengths, [None] * batch, steps,
                                  generator.train_config.guidance_scale if cfg is None else cfg, r)
        _sync(generator)
        sampled = time.perf_counter() - start
        start = time.perf_counter()
        generator.finish(sample, lengths, True, generator.cleanup)
        finished = time.perf_counter() - start
        if r:
            for values, seconds in ((whole, elapsed), (text, encoded), (network, sampled), (finish, finished)):
                values.append(seconds / batch)
    return {name: statistics.median(values) for name, values in
            (("aits_s", whole), ("text_s", text), ("network_s", network), ("finish_s", finish))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--checkpoint", help="time this checkpoint instead of fresh weights of --presets")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, the core count)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--step-counts", default="50,10")
    parser.add_argument("--student", default="fresh",
                        help="a ViMoGen-light checkpoint, 'fresh' (tiny-size fresh weights) or 'none'")
    parser.add_argument("--student-steps", default="1,2,4")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    generators = ([(Path(args.checkpoint).name, load_generator(args.checkpoint, args.device))] if args.checkpoint
                  else [(p, fresh_generator(p, args.device)) for p in args.presets.split(",")])
    runs = [(name, generator, [int(s) for s in args.step_counts.split(",")]) for name, generator in generators]
    if args.student == "fresh":
        runs.append(("light (tiny size)", fresh_student(args.device), [int(s) for s in args.student_steps.split(",")]))
    elif args.student != "none":
        from vimogen_core.distill.student import load_light_generator

        runs.append((Path(args.student).name, load_light_generator(args.student, args.device),
                     [int(s) for s in args.student_steps.split(",")]))
    teacher_aits = {}
    for name, generator, step_counts in runs:
        for steps in step_counts:
            for batch in [int(b) for b in args.batches.split(",")]:
                repeats = args.repeats if batch == 1 else max(1, args.repeats // 3)
                timed = time_generation(generator, batch, steps, repeats, offset=len(rows) * 1000)
                aits = timed["aits_s"]
                row = {"model": name, "light": generator.is_light, "steps": steps, "batch": batch, "frames": 100,
                       "cfg": generator.train_config.guidance_scale if generator.is_light else 5.0,
                       "aits_ms": round(1000 * aits, 2),
                       **{f"{part}_share": round(timed[f"{part}_s"] / aits, 3) for part in ("text", "network", "finish")},
                       "repeats": repeats}
                if not generator.is_light and steps == max(step_counts) and name == runs[0][0]:
                    teacher_aits[batch] = aits
                if generator.is_light and batch in teacher_aits:
                    row["speedup_vs_teacher"] = round(teacher_aits[batch] / aits, 1)
                rows.append(row)
    print(json.dumps({"device": args.device, "threads": torch.get_num_threads(), "results": rows}, indent=1))


if __name__ == "__main__":
    main()
