"""Flow matching for motion: the straight path from data to noise, the shifted timestep grid,
the loss, an Euler sampler, classifier-free guidance and output smoothing.

Path: x_s = (1 - s) x0 + s e, s in [0, 1] (s = 1 is pure noise); the network predicts the
velocity v = e - x0, so integrating dx/ds = v from s = 1 down to 0 recovers data.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from vimogen_core.motion.representation import ROOT_ROT6D, ROOT_VEL

ROOT_WEIGHT_DIMS = slice(ROOT_ROT6D.start, ROOT_VEL.stop)  # 258:276, weighted 3x


def shift_time(s: torch.Tensor, shift: float) -> torch.Tensor:
    """s' -> k s' / (1 + (k - 1) s'): spends more of the schedule at high noise."""
    return shift * s / (1 + (shift - 1) * s)


class FlowMatching:
    def __init__(self, shift: float = 5.0, grid_size: int = 1000, root_weight: float = 3.0):
        self.shift = shift
        self.grid_size = grid_size
        self.root_weight = root_weight
        base = torch.arange(1, grid_size + 1, dtype=torch.float64) / grid_size  # (0, 1]
        self.grid = shift_time(base, shift).float()  # (N,) training times
        # Bell-shaped weight over the grid index (peak mid-schedule), normalised to mean 1.
        index = torch.arange(grid_size, dtype=torch.float64)
        bell = torch.exp(-2 * ((index - grid_size / 2) / grid_size) ** 2)
        bell = bell - bell.min()
        self.grid_weight = (bell * grid_size / bell.sum()).float()

    def sample_time(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,) times drawn uniformly from the shifted grid."""
        idx = torch.randint(0, self.grid_size, (batch,), generator=generator)
        return self.grid[idx]

    def time_weight(self, s: torch.Tensor) -> torch.Tensor:
        """The loss weight of each time, looked up at its nearest grid point."""
        idx = torch.bucketize(s.detach().float().cpu(), self.grid).clamp(max=self.grid_size - 1)
        return self.grid_weight[idx].to(s.device)

    @staticmethod
    def interpolate(x0: torch.Tensor, noise: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        s = s.reshape(-1, *([1] * (x0.dim() - 1)))
        return (1 - s) * x0 + s * noise

    @staticmethod
    def target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return noise - x0

    @staticmethod
    def timestep_for_model(s: torch.Tensor) -> torch.Tensor:
        return s * 1000.0

    def loss(self, pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, s: torch.Tensor,
             frame_mask: torch.Tensor | None) -> torch.Tensor:
        """Weighted squared error averaged over valid frames and all dims. pred/x0/noise (B, T, D)."""
        dim_weight = torch.ones(pred.shape[-1], device=pred.device, dtype=pred.dtype)
        dim_weight[ROOT_WEIGHT_DIMS] = self.root_weight
        err = (pred - self.target(x0, noise)).pow(2) * dim_weight  # (B, T, D)
        mask = torch.ones(pred.shape[:2], device=pred.device) if frame_mask is None else frame_mask.float()
        per_frame = err.mean(-1) * mask * self.time_weight(s)[:, None]  # (B, T)
        return per_frame.sum() / mask.sum().clamp(min=1.0)


def inference_times(steps: int, shift: float = 5.0) -> torch.Tensor:
    """(steps + 1,) times from 1 down to 0 on the shifted schedule."""
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift).float()


VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def euler_sample(velocity_fn: VelocityFn, noise: torch.Tensor, steps: int = 50, x_mask: torch.Tensor | None = None,
                 shift: float = 5.0) -> torch.Tensor:
    """Integrate from pure noise (s = 1) to data (s = 0). velocity_fn(x (B, T, D), s (B,)) -> (B, T, D).
    Padded frames (x_mask 0) are kept at zero so they never leak into statistics."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    times = inference_times(steps, shift).to(noise.device)
    x = noise
    for i in range(steps):
        s = times[i].expand(x.shape[0])
        x = x + (times[i + 1] - times[i]) * velocity_fn(x, s)
    if x_mask is not None:
        x = x * x_mask[..., None].to(x.dtype)
    return x


class ClassifierFreeGuidance:
    """v = v_u + scale (v_c - v_u) for text-mode samples; reference-mode samples use v_c only."""

    def __init__(self, scale: float = 5.0):
        self.scale = scale

    def combine(self, v_cond: torch.Tensor, v_uncond: torch.Tensor, use_text: torch.Tensor) -> torch.Tensor:
        guided = v_uncond + self.scale * (v_cond - v_uncond)
        return torch.where(use_text.bool()[:, None, None], guided, v_cond)


def smooth_features(x: torch.Tensor, kernel: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """Gaussian smoothing along time of (B, T, D) or (T, D) features, edges padded by replication."""
    squeeze = x.dim() == 2
    if squeeze:
        x = x[None]
    offsets = torch.arange(kernel, dtype=torch.float32, device=x.device) - (kernel - 1) / 2
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights = (weights / weights.sum()).to(x.dtype)
    b, t, d = x.shape
    flat = x.transpose(1, 2).reshape(b * d, 1, t)  # (B*D, 1, T)
    padded = F.pad(flat, (kernel // 2, kernel // 2), mode="replicate")
    out = F.conv1d(padded, weights.view(1, 1, -1)).reshape(b, d, t).transpose(1, 2)
    return out[0] if squeeze else out
