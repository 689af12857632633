"""MBench scoring speed. Prints JSON.

1. The five motion-quality dimensions for 450 motions of 100-200 frames (windows of the built-in
   motion-capture clips): median wall time of the batched scorer over repeated runs, and the
   per-motion loop beside it in the same run.
2. Optionally (`--checkpoint CKPT`) a full `vimogen bench run` on the 450 published prompts,
   timed end to end as a subprocess (generation, scoring, judge, reports).

    .venv/bin/python benchmarks/mbench.py [--repeats 7] [--checkpoint CKPT --prompts ... --eval-info ...]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vimogen_core.motion import metrics
from vimogen_core.sources.deepmimic import builtin_clip_names, load_builtin_clip


def real_windows(n_motions: int = 450, min_frames: int = 100, max_frames: int = 200, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    clips = [load_builtin_clip(name, min_frames=max_frames).motion.joints.numpy() for name in builtin_clip_names()]
    windows = []
    for i in range(n_motions):
        joints = clips[i % len(clips)]
        length = int(rng.integers(min_frames, min(max_frames, len(joints)) + 1))
        start = int(rng.integers(0, len(joints) - length + 1))
        windows.append(joints[start : start + length])
    return windows


def time_scoring(motions: list[np.ndarray], repeats: int) -> dict:
    batched, looped = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        metrics.motion_quality_scores(motions)
        batched.append(time.perf_counter() - start)
        start = time.perf_counter()
        for motion in motions:
            metrics.motion_quality_scores([motion])
        looped.append(time.perf_counter() - start)
    return {
        "batched_median_s": statistics.median(batched),
        "batched_min_s": min(batched),
        "per_motion_loop_median_s": statistics.median(looped),
        "speedup_batched_vs_loop": statistics.median(looped) / statistics.median(batched),
    }


def time_full_run(args) -> dict:
    out = Path(args.out)
    command = [sys.executable, "-m", "vimogen_core.cli", "bench", "run", "--checkpoint", str(args.checkpoint),
               "--out", str(out)]
    if args.prompts:
        command += ["--prompts", str(args.prompts)]
    if args.eval_info:
        command += ["--eval-info", str(args.eval_info)]
    if args.steps:
        command += ["--steps", str(args.steps)]
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    result = {"command": " ".join(command), "returncode": completed.returncode, "wall_s": seconds,
              "files": sorted(p.name for p in out.glob("*")) if out.is_dir() else []}
    if completed.returncode != 0:
        result["stderr_tail"] = completed.stderr[-2000:]
    metadata = out / "metadata.json"
    if metadata.is_file():
        result["timing_s"] = json.loads(metadata.read_text()).get("timing_s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--motions", type=int, default=450)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--prompts", type=Path, default=None)
    parser.add_argument("--eval-info", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--out", default="mbench_benchmark_run")
    args = parser.parse_args()

    motions = real_windows(args.motions)
    report = {
        "benchmark": "mbench_motion_quality_scoring",
        "n_motions": len(motions),
        "frames_total": int(sum(len(m) for m in motions)),
        "frames_range": [int(min(len(m) for m in motions)), int(max(len(m) for m in motions))],
        "dimensions": list(metrics.MOTION_QUALITY_DIMENSIONS),
        "repeats": args.repeats,
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "numpy": np.__version__},
    } | time_scoring(motions, args.repeats)
    if args.checkpoint is not None:
        report["full_run"] = time_full_run(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
