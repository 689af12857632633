"""Motion control measured on constraints taken from the real clips, for each steering method on
the same checkpoint, beside unconstrained generation of the same prompts and seeds:

- keyframes: all 22 joints of the walk and the kick at frames 25, 50, 75 -> error at the
  keyframes (cm), jitter over the 5 frames around each keyframe / the motion's interior;
- trajectory: the walk's own pelvis path bent onto a 3 m-radius arc -> pelvis error to the path
  (mean, max, cm), Foot_Sliding against unconstrained generation;
- body part: the kick's upper body kept (relative to the pelvis, so the legs may walk), the lower
  body generated for each clip's caption -> kept-joint error (cm, pelvis-relative), how often the lower body is nearest (lower-body retrieval) to the
  prompt's clip, against unconstrained generation;
- timeline: 6 segments of 10 s -> per-segment retrieval, jitter and root speed at each seam over
  the neighbouring segments' interiors; and (`--scaling`) time and peak memory at 10/30/60/120 s.
"Sampler error" is how far the network's own velocities carry the pinned joints before clean-up
and enforcement (integrated from frame 0): what tells the methods apart. GIFs go to --out.
Prints JSON.

    .venv/bin/python benchmarks/control.py --checkpoint CKPT --out /tmp/control [--steps 10] [--scaling]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vimogen_core.motion.metrics import foot_sliding
from vimogen_core.control.constraints import (JOINT_GROUPS, KeepJoints, Keyframes, RootTrajectory, combine,
                                              pose_in_heading_frame)
from vimogen_core.control.sampling import METHODS, generate_controlled
from vimogen_core.control.timeline import OVERLAP_FRAMES, WINDOW_FRAMES, Segment, generate_timeline, windows
from vimogen_core.motion.motion import mirror
from vimogen_core.motion.render import render_motion
from vimogen_core.motion.representation import features_to_joints, features_to_joints_integrated
from vimogen_core.sources.deepmimic import load_builtin_clips
from vimogen_core.train.evaluation import retrieval
from vimogen_core.train.generate import load_generator

FRAMES = 100
KEYFRAMES = (25, 50, 75)
LOWER = np.array(JOINT_GROUPS["lower"])  # pelvis and hips first, as the retrieval descriptor needs
TIMELINE = ("walk", "kick", "run", "jump", "punch", "walk")
BODY_PART_SEEDS = 3


def joints_of(feats) -> np.ndarray:
    return features_to_joints(np.asarray(feats, dtype=np.float64))


def jitter_per_frame(joints: np.ndarray) -> np.ndarray:
    """(T,) mean |second difference| over joints at each interior frame (edges: nan)."""
    out = np.full(len(joints), np.nan)
    out[1:-1] = np.linalg.norm(joints[2:] - 2 * joints[1:-1] + joints[:-2], axis=-1).mean(-1)
    return out


def sampler_error(raw: np.ndarray, targets) -> float:
    """Max distance (cm) of the pinned coordinates from the network's integrated velocities."""
    integrated = features_to_joints_integrated(torch.from_numpy(raw.astype(np.float64))).numpy()
    gap = np.where(targets.joint_mask, integrated - targets.joint_values, 0.0)
    return float(np.linalg.norm(gap, axis=-1).max() * 100)


def arc(xy: np.ndarray, radius: float = 3.0) -> np.ndarray:
    """A path along +Y bent onto a circle turning left: distance along Y becomes arc length."""
    angle = xy[:, 1] / radius
    r = radius - xy[:, 0]
    return np.stack([radius - r * np.cos(angle), r * np.sin(angle)], axis=1)


def keyframes_case(gen, clips, method, steps, seed, out):
    rows = {}
    for name in ("walk", "kick"):
        clip = clips[name]
        joints = joints_of(clip.motion.features().numpy()[:FRAMES])
        kf = Keyframes(frames=KEYFRAMES, positions=joints[list(KEYFRAMES)])
        targets = combine([kf], FRAMES)
        done = generate_controlled(gen, [clip.captions[0]], [targets], steps, seed=seed, method=method)[0]
        sampled = _sampled(gen, clip.captions[0], targets, steps, seed, method)
        j = joints_of(done)
        err = np.linalg.norm(j[list(KEYFRAMES)] - kf.positions, axis=-1).max() * 100
        jitter = jitter_per_frame(j)
        near = np.zeros(FRAMES, bool)
        for k in KEYFRAMES:
            near[k - 2:k + 3] = True
        interior = ~near
        interior[:3] = interior[-3:] = False
        rows[name] = {"keyframe_error_max_cm": round(float(err), 3),
                      "jitter_near_keyframes_over_interior": round(float(np.nanmean(jitter[near]) / np.nanmean(jitter[interior])), 3),
                      "sampler_error_max_cm": round(sampler_error(sampled, targets), 1)}
        if out:
            render_motion(j, out / f"keyframes_{name}_{method}.gif", title=f"keyframes ({method}): {clip.captions[0]}")
    return rows


def _sampled(gen, prompt, targets, steps, seed, method):
    """The steered sample before clean-up and enforcement (de-normalised, smoothed)."""
    cleanup = gen.cleanup
    gen.cleanup = None
    try:
        return generate_controlled(gen, [prompt], [targets], steps, seed=seed, method=method, exact=False)[0]
    finally:
        gen.cleanup = cleanup


def trajectory_case(gen, clips, method, steps, seed, out, free_sliding):
    walk = clips["walk"]
    path = arc(joints_of(walk.motion.features().numpy()[:FRAMES])[:, 0, :2])
    targets = combine([RootTrajectory(xy=path)], FRAMES)
    done = generate_controlled(gen, [walk.captions[0]], [targets], steps, seed=seed, method=method)[0]
    j = joints_of(done)
    err = np.linalg.norm(j[:, 0, :2] - path, axis=-1) * 100
    if out:
        render_motion(j, out / f"trajectory_{method}.gif", title=f"trajectory ({method}): walk on a 3 m arc")
    sliding = float(foot_sliding(j))
    return {"pelvis_error_mean_cm": round(float(err.mean()), 3), "pelvis_error_max_cm": round(float(err.max()), 3),
            "foot_sliding": round(sliding, 4), "foot_sliding_over_unconstrained": round(sliding / free_sliding, 3),
            "sampler_error_max_cm": round(sampler_error(_sampled(gen, walk.captions[0], targets, steps, seed, method),
                                                        targets), 1)}


def lower_body_retrieval(joint_list, clips, repeats: int = 1):
    """Nearest clip by the lower body alone; joint_list holds `repeats` rounds of one motion per clip."""
    names = list(clips) * repeats
    variants = [[c.motion.joints.numpy()[:-1][:, LOWER], mirror(c.motion).joints.numpy()[:-1][:, LOWER]]
                for c in clips.values()]
    found = retrieval([j[:, LOWER] for j in joint_list], variants, list(clips))
    return sum(nearest == name for nearest, name in zip(found.nearest, names))


def body_part_case(gen, clips, method, steps, seed, out, free_correct):
    kick = clips["kick"].motion.features().numpy()[:FRAMES]
    keep = KeepJoints(kick, "upper")
    prompts = [c.captions[0] for c in clips.values()]
    targets = [combine([keep], FRAMES)] * len(prompts)
    done = [f for k in range(BODY_PART_SEEDS)
            for f in generate_controlled(gen, prompts, targets, steps, seed=seed + 1000 * k, method=method)]
    joint_list = [joints_of(f) for f in done]
    upper = np.array(JOINT_GROUPS["upper"])
    source_pose = pose_in_heading_frame(kick)[:, upper]  # kept relative to the pelvis: it walks on
    kept_err = max(np.linalg.norm(pose_in_heading_frame(f)[:, upper] - source_pose, axis=-1).max() for f in done) * 100
    found = lower_body_retrieval(joint_list, clips, BODY_PART_SEEDS)
    if out:
        render_motion(joint_list[0], out / f"keep_upper_kick_walk_{method}.gif",
                      title=f"kick's upper body kept ({method}): {prompts[0]}")
    return {"kept_error_max_cm": round(float(kept_err), 3), "lower_body_retrieval_correct": found,
            "unconstrained_lower_body_retrieval_correct": free_correct, "of": len(done)}


def timeline_case(gen, clips, method, steps, seed, out):
    segments = [Segment(clips[name].captions[0], 10.0) for name in TIMELINE]
    started = time.perf_counter()
    feats = generate_timeline(gen, segments, steps=steps, seed=seed, method=method)
    seconds = time.perf_counter() - started
    j = joints_of(feats)
    n = 200
    pieces = [j[i * n:(i + 1) * n] for i in range(len(segments))]
    found = retrieval(pieces, [[c.motion.joints.numpy()[:-1], mirror(c.motion).joints.numpy()[:-1]]
                               for c in clips.values()], list(clips))
    correct = sum(found.nearest[i] == name for i, name in enumerate(TIMELINE))
    jitter = jitter_per_frame(j)
    speed = np.r_[np.linalg.norm(np.diff(j[:, 0, :2], axis=0), axis=1), np.nan]
    seams = []
    starts = [start for _, start, _ in windows([n] * len(segments), WINDOW_FRAMES, OVERLAP_FRAMES)] + [len(j)]
    for i in range(1, len(starts) - 1):  # every window's first frame, segment boundaries among them
        b = starts[i]
        around = slice(b - 5, b + 5)
        interior = np.r_[starts[i - 1] + 10:b - 10, b + 10:starts[i + 1] - 10]
        seams.append({"frame": b, "segment_boundary": b % n == 0,
                      "jitter_over_interior": round(float(np.nanmean(jitter[around]) / np.nanmean(jitter[interior])), 3),
                      "root_speed_over_interior": round(float(np.nanmean(speed[around]) / np.nanmean(speed[interior])), 3)})
    if out:
        render_motion(j, out / f"timeline_{method}.gif", title=f"timeline ({method}): " + ", ".join(TIMELINE))
    return {"seconds": round(seconds, 2), "segment_retrieval_correct": correct, "of": len(segments),
            "nearest": found.nearest, "seams": seams,
            "worst_seam_jitter_ratio": max(s["jitter_over_interior"] for s in seams),
            "worst_seam_root_speed_ratio": max(s["root_speed_over_interior"] for s in seams)}


def unconstrained(gen, clips, steps, seed):
    walk = clips["walk"]
    free_walk = joints_of(gen.generate([walk.captions[0]], FRAMES, steps=steps, seed=seed)[0])
    free = [joints_of(f) for k in range(BODY_PART_SEEDS)
            for f in gen.generate([c.captions[0] for c in clips.values()], FRAMES, steps=steps, seed=seed + 1000 * k)]
    timeline_free = [joints_of(f) for f in gen.generate([clips[n].captions[0] for n in TIMELINE], 200, steps=steps,
                                                        seed=seed)]
    found = retrieval(timeline_free, [[c.motion.joints.numpy()[:-1], mirror(c.motion).joints.numpy()[:-1]]
                                      for c in clips.values()], list(clips))
    return {"foot_sliding_walk": float(foot_sliding(free_walk)),
            "lower_body_retrieval_correct": lower_body_retrieval(free, clips, BODY_PART_SEEDS),
            "timeline_prompts_retrieval_correct": sum(found.nearest[i] == n for i, n in enumerate(TIMELINE))}


def scaling(checkpoint: str, steps: int) -> list[dict]:
    """Time and peak memory of a timeline at 10/30/60/120 s, each in a fresh process."""
    rows = []
    for seconds in (10, 30, 60, 120):
        code = ("import json,resource,time,sys\n"
                "from vimogen_core.train.generate import load_generator\n"
                "from vimogen_core.control.timeline import OVERLAP_FRAMES, WINDOW_FRAMES, Segment, generate_timeline, windows\n"
                f"g = load_generator({checkpoint!r})\n"
                "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
                "t = time.perf_counter()\n"
                f"generate_timeline(g, [Segment('a person walks forward.', {seconds} / 2),"
                f" Segment('a person runs forward quickly.', {seconds} / 2)], steps={steps})\n"
                "print(json.dumps({'s': time.perf_counter() - t, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,"
                " 'rss_before_mb': base / 1024}))\n")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        values = json.loads(result.stdout.strip().splitlines()[-1])
        rows.append({"seconds_of_motion": seconds, "wall_s": round(values["s"], 2),
                     "peak_rss_mb": round(values["peak_rss_mb"], 1), "rss_before_mb": round(values["rss_before_mb"], 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", type=Path, default=None, help="folder for the GIFs")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--scaling", action="store_true", help="also time 10/30/60/120 s timelines")
    args = parser.parse_args()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    gen = load_generator(args.checkpoint)
    clips = {c.name: c for c in load_builtin_clips(min_frames=FRAMES + 1)}
    free = unconstrained(gen, clips, args.steps, args.seed)
    report = {"checkpoint": args.checkpoint, "steps": args.steps, "unconstrained": free, "methods": {}}
    for method in args.methods:
        started = time.perf_counter()
        report["methods"][method] = {
            "keyframes": keyframes_case(gen, clips, method, args.steps, args.seed, args.out),
            "trajectory": trajectory_case(gen, clips, method, args.steps, args.seed, args.out, free["foot_sliding_walk"]),
            "body_part": body_part_case(gen, clips, method, args.steps, args.seed, args.out,
                                        free["lower_body_retrieval_correct"]),
            "timeline": timeline_case(gen, clips, method, args.steps, args.seed, args.out),
            "wall_s": 0.0,
        }
        report["methods"][method]["wall_s"] = round(time.perf_counter() - started, 1)
    if args.scaling:
        report["timeline_scaling"] = scaling(args.checkpoint, args.steps)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
