"""Training-side access to a shard set: a random-access torch Dataset over one split. Batching
is the training loop's (`train.data`: per-sample draws seeded by the step, then `collate`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from torch.utils.data import Dataset

from vimogen_core.curation.shard_reader import ShardReader, read_all_now, read_manifest

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
        self._pending: dict = {}  # index -> Future of its verified features (prefetch)

    def __len__(self) -> int:
        return len(self.ids)

    def __getstate__(self):  # memory maps stay per process: workers reopen their own
        state = self.__dict__.copy()
        state["_readers"] = {}
        state["_pending"] = {}
        return state

    def _reader(self, shard: str) -> ShardReader:
        reader = self._readers.get(shard)
        if reader is None:
            reader = ShardReader(self.root / shard, self.shard_sha256[shard] if self.verify else None)
            self._readers[shard] = reader
        return reader

    def _sample_read(self, index: int) -> tuple[ShardReader, tuple]:
        return self._reader(self.shards[index]), (int(self.offsets[index]), int(self.lengths[index]),
                                                  self.checksums[index] if self.verify else None, self.ids[index])

    def prefetch(self, indices) -> None:
        """Start reading (and verifying) these samples now, all at once in the reader threads
        (ShardReader.read_async), so a shuffled batch's random reads are in flight together;
        __getitem__ then takes each from here. Samples an earlier call started and nobody took are
        dropped (one batch ahead at most)."""
        pending = {}
        for index in map(int, indices):
            if index not in pending:
                reader, read = self._sample_read(index)
                pending[index] = self._pending.pop(index, None) or reader.read_async(*read)
        for future in self._pending.values():
            future.cancel()
        self._pending = pending

    def read_into(self, indices, out: np.ndarray) -> None:
        """Read and verify these samples' stored features (no normaliser) into consecutive rows of
        `out` ((their frames summed, 276) float32), all in flight together in the reader threads
        (curation.batch_reader's processes read into their shared ring this way)."""
        indices = [int(i) for i in indices]
        if len(out) != (rows := int(self.lengths[indices].sum())):
            raise ValueError(f"out has {len(out)} rows, the samples {rows}")
        reads, row = [], 0
        for index in indices:
            reader, (offset, n_frames, checksum, sample_id) = self._sample_read(index)
            reads.append((reader, offset, n_frames, checksum, sample_id, out[row:row + n_frames]))
            row += n_frames
        read_all_now(reads)

    def __getitem__(self, index: int) -> dict:
        future = self._pending.pop(index, None)
        if future is not None:
            block = future.result()
        else:
            reader, read = self._sample_read(index)
            block = reader.read(*read)
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

