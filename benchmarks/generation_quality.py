"""Generated motion against the real clips it learned from, with one scorer (the MBench motion
metrics): the built-in prompt set x seeds for a checkpoint, the 15 built-in clips looped to 100
frames for the data; generated the way every consumer gets them (`generate_any_length`: windows
past the trained length). Also the frame-0 pelvis offset from x = y = 0, the disagreement of the two
joint decodes (position channels vs integrated velocities) over the first 4 s, Foot_Floating's three
parts, the lowest joint's height, how far the bones stretch, the body the rotation channels pose
(what BVH and glTF exports animate: its distance from the position channels' body, and its scores),
and for the walking prompts how far the pelvis travels (in all and along its frame-0 facing) against
how far the stance feet carry it (a body that glides over shuffling feet travels far on feet that
carry it little), and how often the supporting foot changes sides. Variants of the sampling and
clean-up settings are measured side by side in one run. Prints JSON.

    .venv/bin/python benchmarks/generation_quality.py --checkpoint RUN/checkpoints/step_X.pt \
        [--seeds 3] [--variants 'steps=10,cfg=5' 'steps=50,cfg=2.5,shift=3,cleanup=0'] [--raw-weights]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from vimogen_core.bench.prompts import builtin_prompts
from vimogen_core.control.timeline import generate_any_length
from vimogen_core.curation.gates import motion_statistics
from vimogen_core.motion.cleanup import CleanupConfig
from vimogen_core.motion.metrics import FEET, foot_contact, foot_floating_terms, motion_quality_scores
from vimogen_core.motion.export import animated_joints
from vimogen_core.motion.representation import features_to_joints, features_to_joints_integrated
from vimogen_core.motion.skeleton import FPS
from vimogen_core.sources.deepmimic import load_builtin_clips
from vimogen_core.train.generate import load_generator

DIMENSIONS = ("Jitter_Degree", "Dynamic_Degree", "Foot_Floating", "Foot_Sliding", "Ground_Penetration")
DECODE_FRAMES = 80  # 4 s at 20 fps


def consistency(features: list[np.ndarray], exported: list[np.ndarray]) -> dict[str, float]:
    """Frame-0 pelvis distance from x = y = 0, max |positions - integrated velocities| (metres),
    and how far the joints an export animates (`exported`, (T, 22, 3) each) lie from the position
    channels' (median over joints and frames)."""
    offsets, gaps, export_gaps = [], [], []
    for feats, animated in zip(features, exported, strict=True):
        f = torch.from_numpy(np.asarray(feats[:DECODE_FRAMES], dtype=np.float64))
        read, integrated = features_to_joints(f), features_to_joints_integrated(f)
        offsets.append(float(read[0, 0, :2].norm()))
        gaps.append(float((read - integrated).norm(dim=-1).max()))
        export_gaps.append(float(np.median(np.linalg.norm(animated[:DECODE_FRAMES] - read.numpy(), axis=-1))))
    return {"pelvis0_offset_median_m": float(np.median(offsets)), "pelvis0_offset_max_m": float(np.max(offsets)),
            "decode_gap_median_m": float(np.median(gaps)), "decode_gap_max_m": float(np.max(gaps)),
            "export_gap_median_m": float(np.median(export_gaps))}


def quality(joints: list[np.ndarray]) -> dict[str, float]:
    scores = motion_quality_scores(joints, DIMENSIONS)
    terms = foot_floating_terms(joints)
    lowest = np.concatenate([j[..., 2].min(1) for j in joints])
    # How far a motion's bones stretch: its longest bone's (max - min) / mean length (the curation gate's statistic).
    stretch = [motion_statistics(j, FPS)["max_bone_deviation"] for j in joints]
    return {**{dim: float(np.mean(values)) for dim, values in scores.items()},
            **{f"Foot_Floating_{name}": float(np.mean(values)) for name, values in terms.items()},
            "lowest_joint_height_median_m": float(np.median(lowest)), "bone_stretch_median": float(np.median(stretch))}


def stance_carried_travel(joints: np.ndarray, stance_height: float = 0.15) -> float:
    """Horizontal pelvis travel (m) if each frame's lower foot, while below `stance_height` above
    the motion's lowest point, did not slide: the body moved by the foot's motion relative to it."""
    j = joints - [0.0, 0.0, joints[..., 2].min()]
    feet = j[:, list(FEET)]  # (T, 2, 3)
    stance = feet[..., 2].argmin(1)  # (T,)
    rows = np.arange(len(j) - 1)
    relative = feet[..., :2] - j[:, None, 0, :2]
    carried = -(relative[rows + 1, stance[:-1]] - relative[rows, stance[:-1]])  # (T - 1, 2)
    free = j[1:, 0, :2] - j[:-1, 0, :2]
    on_ground = (feet[:-1, :, 2].min(1) < stance_height)[:, None]
    return float(np.linalg.norm(np.where(on_ground, carried, free).sum(0)))


def contact_alternations(joints: np.ndarray) -> int:
    """How often the foot standing alone on the floor (MBench's contact) changes sides: a walk of
    80 frames alternates 6 times in the real clip, a body gliding on one planted foot never."""
    contact = foot_contact(joints)  # (T, 2)
    alone = np.where(contact[:, 0] & ~contact[:, 1], 0, np.where(contact[:, 1] & ~contact[:, 0], 1, -1))
    sides = alone[alone >= 0]
    return int((np.diff(sides) != 0).sum()) if len(sides) else 0


def walking(prompts, joints: list[np.ndarray]) -> dict[str, float]:
    """For the walking prompts: pelvis travel, travel along the frame-0 facing (+Y, the motions are
    canonical), travel the stance feet carry, and single-foot contact alternations."""
    pairs = [(j, p) for j, p in zip(joints, prompts * (len(joints) // len(prompts)), strict=True) if "walk" in p.text]
    return {"walk_pelvis_travel_m": float(np.mean([np.linalg.norm(j[-1, 0, :2] - j[0, 0, :2]) for j, _ in pairs])),
            "walk_forward_travel_m": float(np.mean([j[-1, 0, 1] - j[0, 0, 1] for j, _ in pairs])),
            "walk_stance_carried_travel_m": float(np.mean([stance_carried_travel(j) for j, _ in pairs])),
            "walk_contact_alternations": float(np.mean([contact_alternations(j) for j, _ in pairs]))}


def real_clips(frames: int = 100) -> tuple[dict, dict]:
    feats = [clip.motion.features().numpy()[:frames] for clip in load_builtin_clips(min_frames=frames + 1)]
    return quality([features_to_joints(f) for f in feats]), consistency(feats, [animated_joints(f) for f in feats])


def parse_variant(text: str) -> tuple[dict, float | None, CleanupConfig | None]:
    """'steps=10,cfg=5,shift=3,cleanup=1,contact_speed=0.05' -> generate_any_length() options (no
    cfg: the preset's guidance), the sampler's schedule shift (None: the preset sampler's) and the
    clean-up to apply (None: cleanup=0); any other key is a CleanupConfig field."""
    values = dict(part.split("=", 1) for part in text.split(",") if part)
    options = {"steps": int(values.pop("steps", 10)),
               "cfg_scale": float(values.pop("cfg")) if "cfg" in values else None}
    shift = float(values.pop("shift")) if "shift" in values else None
    if values.pop("cleanup", "1") in ("0", "false"):
        return options, shift, None
    fields = [f.name for f in dataclasses.fields(CleanupConfig)]
    unknown = set(values) - set(fields)
    if unknown:
        raise SystemExit(f"variant {text!r}: unknown keys {sorted(unknown)} (steps, cfg, cleanup, {', '.join(fields)})")
    return options, shift, dataclasses.replace(CleanupConfig(), **{k: type(getattr(CleanupConfig(), k))(float(v))
                                                            for k, v in values.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=["steps=10"])
    parser.add_argument("--raw-weights", action="store_true", help="also sample from the raw (non-EMA) weights")
    args = parser.parse_args()

    real_quality, real_consistency = real_clips()
    prompts = builtin_prompts()
    out = {"checkpoint": args.checkpoint, "real_clips": {**real_quality, **real_consistency}, "variants": []}
    weights = [True, False] if args.raw_weights else [True]
    for use_ema in weights:
        generator = load_generator(args.checkpoint, use_ema=use_ema)
        for text in args.variants:
            options, shift, generator.cleanup = parse_variant(text)
            generator.sampler = None
            if shift is not None:
                generator.sampler = dataclasses.replace(generator.sampler_config, shift=shift)
            started = time.perf_counter()
            feats = []
            for seed in range(args.seeds):
                feats += generate_any_length(generator, [p.text for p in prompts], [p.n_frames for p in prompts],
                                             seed=1000 * seed, **options)
            joints = [features_to_joints(f) for f in feats]
            scores = quality(joints)
            exported_joints = [animated_joints(f) for f in feats]
            exported = quality(exported_joints)
            out["variants"].append({
                "variant": text, "ema": use_ema, "motions": len(feats), "wall_s": round(time.perf_counter() - started, 1),
                **scores, **consistency(feats, exported_joints), **walking(prompts, joints),
                "ratio_to_real": {dim: round(scores[dim] / real_quality[dim], 3) for dim in DIMENSIONS if real_quality[dim]},
                "exported_ratio_to_real": {dim: round(exported[dim] / real_quality[dim], 3) for dim in DIMENSIONS
                                        if real_quality[dim]},
            })
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
