"""Streaming feature statistics (mean/std per dimension) over one split of a shard set."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vimogen_core.curation.shards import sha256_file
from vimogen_core.curation.shard_reader import iter_shard_samples
from vimogen_core.files import atomic_write_bytes
from vimogen_core.motion.representation import Normalizer

NORMALIZER_NAME = "normalizer.npz"


@dataclass
class StatisticsResult:
    normalizer_path: str
    split: str
    n_samples: int
    n_frames: int
    manifest_sha256: str
    min_std: float
    max_abs_mean: float

    def to_metadata(self) -> dict:
        return asdict(self)


def fit_split_normalizer(manifest_path: str | Path, split: str = "train") -> tuple[Normalizer, dict[str, int]]:
    """The Normalizer over every sample of `split`, one sample at a time (memory independent of
    the set size), and the sample/frame counts it saw."""
    counts = {"samples": 0, "frames": 0}

    def features():
        for _, block in iter_shard_samples(manifest_path, split=split):
            counts["samples"] += 1
            counts["frames"] += block.shape[0]
            yield block

    try:
        return Normalizer.fit(features()), counts
    except ValueError as err:
        raise ValueError(f"{manifest_path}: no '{split}' samples to compute statistics from") from err


def compute_statistics(manifest_path: str | Path, out_dir: str | Path, split: str = "train") -> StatisticsResult:
    """Fit the Normalizer over `split` and write `normalizer.npz` + `statistics.json` under `out_dir`."""
    manifest_path = Path(manifest_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    normalizer, counts = fit_split_normalizer(manifest_path, split)
    normalizer_path = out_dir / NORMALIZER_NAME
    normalizer.save(normalizer_path)
    result = StatisticsResult(
        normalizer_path=str(normalizer_path),
        split=split,
        n_samples=counts["samples"],
        n_frames=counts["frames"],
        manifest_sha256=sha256_file(manifest_path),
        min_std=float(np.min(normalizer.std)),
        max_abs_mean=float(np.max(np.abs(normalizer.mean))),
    )
    atomic_write_bytes(out_dir / "statistics.json", json.dumps(asdict(result), indent=2, sort_keys=True).encode())
    return result
