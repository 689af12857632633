"""Batch assembly for training: the conditioning draws of `train.data` collated into padded
batches, each rank's share of a step's global batch, and the loader that draws them ahead in
worker processes. Which samples a step sees is decided in `train.data` (a pure function of the
step), so the batches here are the same whatever the number of workers or processes."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from vimogen_core.motion.representation import FEATURE_DIM, POSE6D, REF_FEATURE_DIM
from vimogen_core.train.config import TrainConfig
from vimogen_core.train.data import MotionDataset, SampleDraw, draw_sample, epoch_order


@dataclass
class TrainBatch:
    x0: torch.Tensor  # (B, T, 276)
    x_mask: torch.Tensor  # (B, T) bool
    captions: list[str]
    drop_text: torch.Tensor  # (B,) bool
    use_text: torch.Tensor  # (B,) bool
    reference: torch.Tensor  # (B, T, 138)
    reference_mask: torch.Tensor  # (B, T) bool
    time_seeds: list[int]
    noise: torch.Tensor | None = None  # (B, T, 276) paired noise where `paired`, else zeros; None: no pairs
    paired: torch.Tensor | None = None  # (B,) bool
    # (B, 276) bool, True on the dims each sample supervises; None: every dim of every sample.
    loss_dims: torch.Tensor | None = None

    def _map(self, fn) -> "TrainBatch":
        move = lambda t: None if t is None else fn(t)  # noqa: E731
        return TrainBatch(move(self.x0), move(self.x_mask), self.captions, move(self.drop_text), move(self.use_text),
                          move(self.reference), move(self.reference_mask), self.time_seeds, move(self.noise),
                          move(self.paired), move(self.loss_dims))

    def to(self, device) -> "TrainBatch":
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> "TrainBatch":
        """Page-locked copies (the DataLoader's pin_memory thread calls this), so `to(cuda)` is an
        asynchronous DMA copy."""
        return self._map(lambda t: t.pin_memory())

    def supervised_entries(self) -> torch.Tensor:
        """() float: valid frames x supervised dims, what the loss averages over."""
        if self.loss_dims is None:
            return self.x_mask.sum().float() * self.x0.shape[-1]
        return (self.x_mask[..., None] & self.loss_dims[:, None, :]).sum().float()


def collate(draws: list[SampleDraw]) -> TrainBatch:
    """Zero-pad to the longest sample; masks are True on real frames."""
    lengths = np.array([len(d.features) for d in draws])
    t_max = int(lengths.max())
    b = len(draws)
    x0 = np.zeros((b, t_max, FEATURE_DIM), np.float32)
    reference = np.zeros((b, t_max, REF_FEATURE_DIM), np.float32)
    paired = np.array([d.noise is not None for d in draws])  # (B,)
    noise = np.zeros((b, t_max, FEATURE_DIM), np.float32) if paired.any() else None
    for row, draw in enumerate(draws):
        x0[row, : len(draw.features)] = draw.features
        reference[row, : len(draw.reference)] = draw.reference
        if draw.noise is not None:
            noise[row, : len(draw.noise)] = draw.noise
    x_mask = np.arange(t_max)[None, :] < lengths[:, None]  # (B, T)
    ref_lengths = np.array([len(d.reference) for d in draws])
    loss_dims = None
    if any(d.local_loss for d in draws):
        loss_dims = torch.ones(b, FEATURE_DIM, dtype=torch.bool)
        for row, draw in enumerate(draws):
            if draw.local_loss:
                loss_dims[row, POSE6D.stop:] = False
    return TrainBatch(
        x0=torch.from_numpy(x0),
        x_mask=torch.from_numpy(x_mask),
        captions=[d.caption for d in draws],
        drop_text=torch.tensor([d.drop_text for d in draws]),
        use_text=torch.tensor([d.use_text for d in draws]),
        reference=torch.from_numpy(reference),
        reference_mask=torch.from_numpy(np.arange(t_max)[None, :] < ref_lengths[:, None]),
        time_seeds=[d.time_seed for d in draws],
        noise=None if noise is None else torch.from_numpy(noise),
        paired=None if noise is None else torch.from_numpy(paired),
        loss_dims=loss_dims,
    )


class StepBatches(torch.utils.data.Dataset):
    """Item `step`: this rank's share of the global batch of that step (a map-style dataset over
    step numbers, so DataLoader workers can each draw whole batches)."""

    def __init__(self, dataset: MotionDataset, config: TrainConfig, rank: int, world_size: int):
        if config.batch_size % world_size:
            raise ValueError(f"global batch {config.batch_size} does not split evenly over {world_size} processes")
        self.dataset, self.config, self.rank = dataset, config, rank
        self.per_rank = config.batch_size // world_size

    def __getitem__(self, step: int) -> TrainBatch:
        first = step * self.config.batch_size + self.rank * self.per_rank
        if hasattr(self.dataset, "prefetch"):  # shards: the batch's reads go to the disk together
            n = len(self.dataset)
            self.dataset.prefetch([int(epoch_order(self.dataset, self.config, g // n)[g % n])
                                   for g in range(first, first + self.per_rank)])
        return collate([draw_sample(self.dataset, self.config, first + i) for i in range(self.per_rank)])


def rank_batches(dataset: MotionDataset, config: TrainConfig, start_step: int, rank: int, world_size: int) -> Iterator[TrainBatch]:
    """This rank's share of each global batch, step after step from `start_step`, drawn in this process."""
    batches = StepBatches(dataset, config, rank, world_size)
    step = start_step
    while True:
        yield batches[step]
        step += 1


def batch_loader(dataset: MotionDataset, config: TrainConfig, start_step: int, stop_step: int, rank: int,
                 world_size: int, pin_memory: bool = False) -> Iterator[TrainBatch]:
    """This rank's batches of steps start_step..stop_step-1, the same ones `rank_batches` draws:
    with config.data_workers > 0 drawn ahead by that many worker processes (each keeping
    config.prefetch_batches ready) and, with `pin_memory`, handed over in page-locked memory."""
    batches = StepBatches(dataset, config, rank, world_size)
    if config.data_workers < 0 or config.prefetch_batches < 1:
        raise ValueError(f"data_workers must be >= 0 and prefetch_batches >= 1, got {config.data_workers} and "
                         f"{config.prefetch_batches}")
    if config.data_workers == 0:
        for step in range(start_step, stop_step):
            batch = batches[step]
            yield batch.pin_memory() if pin_memory else batch
        return
    # More workers than cores only time-slice (the data does not depend on the count).
    workers = min(config.data_workers, len(os.sched_getaffinity(0)))
    loader = torch.utils.data.DataLoader(batches, sampler=range(start_step, stop_step), batch_size=None,
                                         num_workers=workers, prefetch_factor=config.prefetch_batches,
                                         pin_memory=pin_memory, worker_init_fn=_loader_worker_init)
    yield from loader


def _loader_worker_init(_worker_id: int) -> None:
    # A worker draws and collates in numpy: one thread each, so N workers use N cores.
    torch.set_num_threads(1)
