"""Training-side access to a shard set: a random-access torch Dataset, a length-bucketing batch
sampler and a padding collate function."""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from torch.utils.data import Dataset, Sampler

from vimogen_core.curation.shards import ShardReader, read_manifest

_COLUMNS = ["id", "source", "subset", "split", "shard", "offset", "n_frames", "checksum", "shard_sha256", "motion_text", "video_text"]


class ShardDataset(Dataset):
    """Samples of one split of a shard set, read by random access from memory-mapped shards.

    Each item: {"id", "source", "features" (T, 276) float32 (normalised when a normaliser is given),
    "n_frames", "motion_text" (list of str), "video_text"}. Shards open lazily in each worker process
    and are checksum-verified on first open; every sample is verified on read.
    """

    def __init__(self, manifest_path: str | Path, split: str | None = "train", normalizer=None, verify: bool = True):
        self.manifest_path = Path(manifest_path)
        self.root = self.manifest_path.parent
        table = read_manifest(self.manifest_path, columns=_COLUMNS)
        if split is not None:
            table = table.filter(pc.equal(table["split"], split))
        self.split = split
        self.ids: list[str] = table["id"].to_pylist()
        self.sources: list[str] = table["source"].to_pylist()
        self.shards: list[str] = table["shard"].to_pylist()
        self.offsets = table["offset"].to_numpy()
        self.lengths = table["n_frames"].to_numpy().astype(np.int64)  # (N,)
        self.checksums: list[str] = table["checksum"].to_pylist()
        self.motion_text: list[list[str]] = table["motion_text"].to_pylist()
        self.video_text: list[str] = table["video_text"].to_pylist()
        self.shard_sha256 = dict(zip(self.shards, table["shard_sha256"].to_pylist()))
        self.normalizer = normalizer
        self.verify = verify
        self._readers: dict[str, ShardReader] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __getstate__(self):  # memory maps stay per process: workers reopen their own
        state = self.__dict__.copy()
        state["_readers"] = {}
        return state

    def _reader(self, shard: str) -> ShardReader:
        reader = self._readers.get(shard)
        if reader is None:
            reader = ShardReader(self.root / shard, self.shard_sha256[shard] if self.verify else None)
            self._readers[shard] = reader
        return reader

    def __getitem__(self, index: int) -> dict:
        shard = self.shards[index]
        block = self._reader(shard).read(
            int(self.offsets[index]), int(self.lengths[index]), self.checksums[index] if self.verify else None, self.ids[index]
        )
        features = torch.from_numpy(block)  # (T, 276)
        if self.normalizer is not None:
            features = self.normalizer.normalize(features).to(torch.float32)
        return {
            "id": self.ids[index],
            "source": self.sources[index],
            "features": features,
            "n_frames": int(self.lengths[index]),
            "motion_text": self.motion_text[index],
            "video_text": self.video_text[index],
        }


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar-length samples (less padding), in random order, reproducible per epoch.

    Each epoch shuffles all indices, cuts them into pools of `batch_size * pool_batches`, sorts each
    pool by length and slices it into batches; the batches are then shuffled.
    """

    def __init__(self, lengths: Sequence[int] | np.ndarray, batch_size: int, shuffle: bool = True, seed: int = 0,
                 pool_batches: int = 50, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool_batches = pool_batches
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        pool = self.batch_size * self.pool_batches
        batches: list[np.ndarray] = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return iter([b.tolist() for b in batches])

    def __len__(self) -> int:
        pool = self.batch_size * self.pool_batches
        sizes = [min(pool, len(self.lengths) - start) for start in range(0, len(self.lengths), pool)]
        if self.drop_last:
            return sum(size // self.batch_size for size in sizes)
        return sum(math.ceil(size / self.batch_size) for size in sizes)


def collate_motion_batch(items: list[dict]) -> dict:
    """Zero-pad to the longest sample: features (B, T_max, 276), mask (B, T_max) True on real frames."""
    lengths = torch.tensor([item["n_frames"] for item in items], dtype=torch.long)  # (B,)
    t_max = int(lengths.max())
    dim = items[0]["features"].shape[-1]
    features = torch.zeros(len(items), t_max, dim, dtype=items[0]["features"].dtype)  # (B, T, D)
    for row, item in enumerate(items):
        features[row, : item["n_frames"]] = item["features"]
    mask = torch.arange(t_max)[None, :] < lengths[:, None]  # (B, T)
    return {
        "features": features,
        "mask": mask,
        "lengths": lengths,
        "id": [item["id"] for item in items],
        "motion_text": [item["motion_text"] for item in items],
        "video_text": [item["video_text"] for item in items],
    }
