"""Text conditioning on real data: train a small preset on the 15 built-in clips, generate one
motion per clip caption, and check which real clip each generation is nearest to (distance:
`vimogen_core.train.evaluation`, a mirror-invariant chamfer distance on heading-aligned posture
and joint-velocity descriptors). Reference mode (the clip itself as reference) is compared with
text mode by the distance to the clip. Writes GIFs and PNG frame strips of a few generations and
prints JSON.

    .venv/bin/python benchmarks/text_conditioning.py --preset tiny --steps 2000
    .venv/bin/python benchmarks/text_conditioning.py --checkpoint RUN/checkpoints/step_00002000.pt
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from vimogen_core.motion.motion import mirror
from vimogen_core.motion.render import render_frames_png, render_motion
from vimogen_core.motion.representation import features_to_joints
from vimogen_core.sinks import PrintSink
from vimogen_core.sources.deepmimic import load_builtin_clips
from vimogen_core.train.config import apply_overrides, get_train_preset
from vimogen_core.train.evaluation import chamfer_distance, frame_aligned_error, motion_descriptor, retrieval
from vimogen_core.train.generate import load_generator
from vimogen_core.train.loop import train

SHOWCASE = ("walk", "cartwheel", "backflip", "crawl")


def joints_of(feats: np.ndarray) -> np.ndarray:
    return features_to_joints(torch.from_numpy(np.asarray(feats, np.float32))).numpy()


def evaluate(checkpoint: Path, out: Path, device: str, sample_steps: int, cfg: float, seed: int, frames: int,
             render: bool = True) -> dict:
    generator = load_generator(checkpoint, device=device)
    clips = load_builtin_clips(min_frames=generator.train_config.builtin_min_frames)
    names = [c.name for c in clips]
    clip_feats = [c.motion.features().numpy() for c in clips]  # (T, 276) each
    variants = [[c.motion.joints.numpy()[:-1], mirror(c.motion).joints.numpy()[:-1]] for c in clips]
    prompts = [c.captions[0] for c in clips]

    started = time.perf_counter()
    text_mode = generator.generate(prompts, frames, steps=sample_steps, cfg_scale=cfg, seed=seed)
    text_s = time.perf_counter() - started
    ref_mode = generator.generate(prompts, [len(f) for f in clip_feats], ref_motions=clip_feats, steps=sample_steps,
                                  seed=seed)
    text_joints = [joints_of(f) for f in text_mode]
    ref_joints = [joints_of(f) for f in ref_mode]
    found = retrieval(text_joints, variants, names)

    per_clip = {}
    for i, name in enumerate(names):
        clip_desc = motion_descriptor(variants[i][0])
        per_clip[name] = {
            "caption": prompts[i],
            "nearest": found.nearest[i],
            "text_chamfer_to_clip": round(float(found.distances[i, i]), 3),
            "reference_chamfer_to_clip": round(chamfer_distance(motion_descriptor(ref_joints[i]), clip_desc), 3),
            "text_aligned_error_m": round(frame_aligned_error(text_joints[i], variants[i][0]), 4),
            "reference_aligned_error_m": round(frame_aligned_error(ref_joints[i], variants[i][0]), 4),
        }
    text_chamfer = np.mean([v["text_chamfer_to_clip"] for v in per_clip.values()])
    ref_chamfer = np.mean([v["reference_chamfer_to_clip"] for v in per_clip.values()])
    text_aligned = np.mean([v["text_aligned_error_m"] for v in per_clip.values()])
    ref_aligned = np.mean([v["reference_aligned_error_m"] for v in per_clip.values()])

    images = []
    if render:
        out.mkdir(parents=True, exist_ok=True)
        for name in SHOWCASE:
            i = names.index(name)
            for mode, joints in (("text", text_joints[i]), ("reference", ref_joints[i])):
                title = f"{mode}: {prompts[i]}"
                images.append(str(render_motion(joints, out / f"{name}_{mode}.gif", title=title)))
                images.append(str(render_frames_png(joints, out / f"{name}_{mode}.png", n=6, title=title)))
            images.append(str(render_frames_png(variants[i][0], out / f"{name}_real.png", n=6, title=f"real: {name}")))
    return {
        "checkpoint": str(checkpoint),
        "train_step": generator.step,
        "sample_steps": sample_steps,
        "cfg": cfg,
        "frames": frames,
        "text_mode_correct": found.correct,
        "clips": len(names),
        "text_mode_generation_s": round(text_s, 2),
        "mean_chamfer_to_clip": {"text_mode": round(float(text_chamfer), 3), "reference_mode": round(float(ref_chamfer), 3)},
        "mean_aligned_error_m": {"text_mode": round(float(text_aligned), 4), "reference_mode": round(float(ref_aligned), 4)},
        "reference_closer_than_text": int(sum(v["reference_chamfer_to_clip"] < v["text_chamfer_to_clip"]
                                              for v in per_clip.values())),
        "per_clip": per_clip,
        "images": images,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--checkpoint", help="evaluate this checkpoint instead of training")
    parser.add_argument("--out", default="benchmarks/out/text_conditioning")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sample-steps", type=int, default=50)
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    out = Path(args.out)
    training = None
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
    else:
        overrides = list(args.assignments) + [f"device={args.device}"]
        if args.steps:
            overrides.append(f"steps={args.steps}")
        config = apply_overrides(get_train_preset(args.preset), overrides)
        result = train(config, out / f"run_{args.preset}", sink=PrintSink(), progress=False)
        checkpoint = result.checkpoint
        training = {"preset": args.preset, "steps": config.steps, "batch_size": config.batch_size, "bf16": config.bf16,
                    "wall_s": round(result.wall_s, 1), "samples_per_s": round(result.samples_per_s, 1),
                    "final_loss": round(result.final_loss, 4), "threads": torch.get_num_threads()}
    report = evaluate(checkpoint, out, args.device, args.sample_steps, args.cfg, args.seed, args.frames)
    report["training"] = training
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
