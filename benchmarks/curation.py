"""Curation throughput: N samples built from the real built-in clips -> chunk shards -> split shards.

Takes are the 15 DeepMimic clips (looped to 20 s) re-timed as if captured at other frame rates, so
curation resamples each to 20 fps, windows it into 40-200 frame samples and mirrors every window.
Prints JSON per size: samples/s of curate + shard, peak RSS of the driver and of the worker
processes, and the projected time for ViMoGen-228K's 228,236 samples.

    .venv/bin/python benchmarks/curation.py --sizes 5000 50000 --workers 2
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from vimogen_core.curation.config import CurationConfig
from vimogen_core.curation.pipeline import curate_samples
from vimogen_core.curation.take import window_starts
from vimogen_core.curation.records import RawSample
from vimogen_core.curation.sharding import write_shards
from vimogen_core.sources.deepmimic import builtin_clip_names, load_builtin_clip

VIMOGEN_228K = 228_236
SOURCE_RATES = (16.0, 18.0, 20.0, 22.0, 24.0, 25.0)  # pretend capture rates: re-timing changes length and speed


@dataclass(frozen=True)
class BenchmarkTakes:
    """A TakeSource of takes whose curated samples (accepted or rejected) add up to at least n_samples;
    each worker process rebuilds the clips once and makes only the takes it curates."""

    n_samples: int
    config: CurationConfig = CurationConfig()

    def take_loaders(self):
        produced, index = 0, 0
        while produced < self.n_samples:
            name = CLIP_NAMES[index % len(CLIP_NAMES)]
            rate = SOURCE_RATES[(index // len(CLIP_NAMES)) % len(SOURCE_RATES)]
            n20 = int((CLIP_FRAMES[name] - 1) / rate * self.config.fps + 1e-6) + 1
            produced += len(window_starts(n20, self.config.gates.max_frames + 1, self.config.window_stride)) * (2 if self.config.mirror else 1)
            yield functools.partial(make_take, index, name, rate)
            index += 1


@functools.cache
def looped_clip(name: str):
    return load_builtin_clip(name, min_frames=401)


def make_take(index: int, name: str, rate: float) -> RawSample:
    clip = looped_clip(name)
    return RawSample(id=f"bench/{index:07d}/{name}", source="optical_mocap", subset="benchmark", origin=name,
                     motion=replace(clip.motion, fps=rate), motion_captions=tuple(clip.captions), video_caption=clip.video_caption)


CLIP_NAMES = builtin_clip_names()
CLIP_FRAMES = {name: looped_clip(name).motion.n_frames for name in CLIP_NAMES}


def peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0


def run(n_samples: int, workers: int, root: Path) -> dict:
    config = CurationConfig()
    started = time.perf_counter()
    curated = curate_samples(BenchmarkTakes(n_samples, config), root / "curated", config, workers=workers)
    curate_s = time.perf_counter() - started
    started = time.perf_counter()
    shards = write_shards(curated.manifest_path, root / "shards")
    shard_s = time.perf_counter() - started
    processed = curated.n_accepted + curated.n_rejected
    rate = processed / (curate_s + shard_s)
    return {
        "samples": processed,
        "accepted": curated.n_accepted,
        "takes": curated.n_takes,
        "frames": shards.n_frames,
        "shards": shards.n_shards,
        "gigabytes": round(shards.n_bytes / 1e9, 3),
        "workers": workers,
        "curate_s": round(curate_s, 2),
        "shard_s": round(shard_s, 2),
        "samples_per_s": round(rate, 1),
        "curate_samples_per_s": round(processed / curate_s, 1),
        "peak_rss_driver_mb": round(peak_rss_mb(resource.RUSAGE_SELF), 1),
        "peak_rss_worker_mb": round(peak_rss_mb(resource.RUSAGE_CHILDREN), 1),
        "projected_228k_min": round(VIMOGEN_228K / rate / 60.0, 2),
        "rejected_by_gate": curated.rejected_by_gate,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for n in args.sizes:
        root = Path(tempfile.mkdtemp(prefix="vimogen-curation-bench-", dir=args.dir))
        try:
            print(json.dumps({"n_requested": n, **run(n, args.workers, root), "cpu_count": os.cpu_count()}), flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
