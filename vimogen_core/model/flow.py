"""Flow matching for motion: the straight path from data to noise, the shifted timestep grid,
the loss, an Euler sampler, classifier-free guidance and output smoothing.

Path: x_s = (1 - s) x0 + s e, s in [0, 1] (s = 1 is pure noise); the network predicts the
velocity v = e - x0, so integrating dx/ds = v from s = 1 down to 0 recovers data. The network
reads the time as s x 1000. A network configured for data prediction outputs x0 instead; its
velocity is (x_s - x0) / s, and its loss is the squared error of x0 with uniform time weight.
A "skip" network outputs F with x0 = c_skip(s) x_s + c_out(s) F (EDM's preconditioning for
unit-variance data): its input reaches the estimate directly, so at low noise the estimate is the
input itself instead of whatever a network narrower than the features can rebuild; its loss is the
squared error of F against the F that gives the true x0, with uniform time weight.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from vimogen_core.motion.representation import ROOT_ROT6D, ROOT_VEL

ROOT_WEIGHT_DIMS = slice(ROOT_ROT6D.start, ROOT_VEL.stop)  # 258:276 (root rotation, velocities, position), 3x
PREDICTIONS = ("velocity", "data", "skip")


def _per_sample(s: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return s.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def skip_coefficients(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """c_skip, c_out for x_s = (1 - s) x0 + s e with unit-variance x0: the least-squares share of
    x_s in x0, and the spread of what remains (so F has unit variance)."""
    spread = (1 - s) ** 2 + s**2
    return (1 - s) / spread, s / spread.sqrt()


def denoised(output: torch.Tensor, x: torch.Tensor, s: torch.Tensor, prediction: str) -> torch.Tensor:
    """The clean-motion estimate a network output stands for, at (x (B, T, D), s (B,))."""
    if prediction == "data":
        return output
    if prediction == "skip":
        c_skip, c_out = skip_coefficients(_per_sample(s, x))
        return c_skip * x + c_out * output
    return x - _per_sample(s, x) * output


def shift_time(s: torch.Tensor, shift: float) -> torch.Tensor:
    """s' -> k s' / (1 + (k - 1) s'): spends more of the schedule at high noise."""
    return shift * s / (1 + (shift - 1) * s)


def unshift_time(s: torch.Tensor, shift: float) -> torch.Tensor:
    """The inverse of shift_time."""
    return s / (shift - (shift - 1) * s)


class FlowMatching:
    """Training side of flow matching.

    Times are drawn uniformly from a 1000-point grid s = shift_time(k / 1000), k = 1..1000. The loss
    weight is a bell over the time, exp(-2 (s - 1/2)^2) minus its smallest value on the grid, scaled
    to mean 1 over the grid (the Wan/DiffSynth flow-matching weighting the released model was trained
    with): it vanishes at the ends (s -> 0 nothing to denoise, s = 1 nothing left to see) and peaks
    at s = 1/2. weighting="schedule" puts the bell over the unshifted grid position instead (peak at
    shift_time(1/2) = 0.83 for shift 5, more weight on high noise).
    """

    def __init__(self, shift: float = 5.0, grid_size: int = 1000, root_weight: float = 3.0,
                 weighting: str = "time", prediction: str = "velocity"):
        if weighting not in ("time", "schedule"):
            raise ValueError(f"unknown loss weighting {weighting!r}: use 'time' or 'schedule'")
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}: use one of {', '.join(PREDICTIONS)}")
        self.prediction = prediction
        self.shift = shift
        self.grid_size = grid_size
        self.root_weight = root_weight
        self.weighting = weighting
        grid = shift_time(torch.arange(1, grid_size + 1, dtype=torch.float64) / grid_size, shift)  # (N,) in (0, 1]
        self.grid = grid.float()  # (N,) training times
        bell = self._bell(grid)
        self._bell_floor = float(bell.min())
        self._bell_scale = grid_size / float((bell - self._bell_floor).sum())
        self.grid_weight = self.time_weight(self.grid)  # (N,), mean 1

    def _bell(self, s: torch.Tensor) -> torch.Tensor:
        position = s if self.weighting == "time" else unshift_time(s, self.shift)
        return torch.exp(-2 * (position - 0.5) ** 2)

    def sample_time(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,) times drawn uniformly from the shifted grid."""
        idx = torch.randint(0, self.grid_size, (batch,), generator=generator)
        return self.grid[idx]

    def time_weight(self, s: torch.Tensor) -> torch.Tensor:
        """(B,) loss weight of each time (float32, on the device of s)."""
        bell = self._bell(s.detach().double())
        return ((bell - self._bell_floor).clamp(min=0) * self._bell_scale).float()

    @staticmethod
    def interpolate(x0: torch.Tensor, noise: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        s = s.reshape(-1, *([1] * (x0.dim() - 1)))
        return (1 - s) * x0 + s * noise

    def denoised(self, pred: torch.Tensor, x_t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return denoised(pred, x_t, s, self.prediction)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if self.prediction == "data":
            return x0
        if self.prediction == "skip":
            c_skip, c_out = skip_coefficients(_per_sample(s, x0))
            return (x0 - c_skip * self.interpolate(x0, noise, s)) / c_out
        return noise - x0

    @staticmethod
    def timestep_for_model(s: torch.Tensor) -> torch.Tensor:
        return s * 1000.0

    def loss(self, pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, s: torch.Tensor,
             frame_mask: torch.Tensor | None, dim_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted squared error of the prediction (velocity or data) averaged over the valid frames
        of the batch and all dims. pred/x0/noise (B, T, D), s (B,), frame_mask (B, T) or None.

        dim_mask (B, D), 1 on the dims a sample supervises (the released loss mask: the local pose
        only for video-recovered text-mode samples): the sum then runs over the supervised entries
        and is divided by their number (valid frames x supervised dims), as the released loss is."""
        dim_weight = torch.ones(pred.shape[-1], device=pred.device, dtype=pred.dtype)
        dim_weight[ROOT_WEIGHT_DIMS] = self.root_weight
        err = (pred - self.target(x0, noise, s.to(pred.device))).pow(2) * dim_weight  # (B, T, D)
        mask = torch.ones(pred.shape[:2], device=pred.device) if frame_mask is None else frame_mask.float()
        weight = self.time_weight(s).to(pred.device) if self.prediction == "velocity" else torch.ones_like(s, device=pred.device)
        if dim_mask is not None:
            entries = mask[..., None] * dim_mask[:, None, :].to(mask.dtype)  # (B, T, D)
            return (err * entries * weight[:, None, None]).sum() / entries.sum().clamp(min=1.0)
        per_frame = err.mean(-1) * mask * weight[:, None]  # (B, T)
        return per_frame.sum() / mask.sum().clamp(min=1.0)


def as_velocity(output: torch.Tensor, x: torch.Tensor, s: torch.Tensor, prediction: str) -> torch.Tensor:
    """A network output as the velocity at (x (B, T, D), s (B,)); s > 0 wherever data is estimated
    (the sampler never evaluates the network at s = 0)."""
    if prediction == "velocity":
        return output
    return (x - denoised(output, x, s, prediction)) / _per_sample(s, x)


def inference_times(steps: int, shift: float = 5.0, strength: float = 1.0) -> torch.Tensor:
    """(steps + 1,) times from shift_time(strength) down to 0 on the shifted schedule: the Wan
    scheduler's sigmas = linspace(strength, 0, steps + 1)[:-1] shifted, and the final step to 0."""
    return shift_time(torch.linspace(strength, 0.0, steps + 1, dtype=torch.float64), shift).float()


@dataclass(frozen=True)
class SamplerConfig:
    """How generation integrates and smooths, apart from the network (like a diffusers scheduler).

    strength < 1 starts from pure noise at s = shift_time(strength) instead of s = 1: the released
    sampler's "denoising strength" (0.7 -> s = 0.921), which skips the first steps of the grid.
    smoothing_padding and keep_edge_frames are the Gaussian smoothing's edge rule (smooth_features).
    path_from_velocities_above: at flow times s >= this, a step's denoised estimate travels as its
    root velocity channels say (`project_denoised` with
    motion.representation.path_from_root_velocities); None: never."""

    name: str
    steps: int = 50
    shift: float = 5.0
    strength: float = 1.0
    smoothing_padding: str = "replicate"
    keep_edge_frames: int = 0
    path_from_velocities_above: float | None = None

    def times(self, steps: int | None = None) -> torch.Tensor:
        return inference_times(self.steps if steps is None else steps, self.shift, self.strength)


SAMPLERS = {
    # The project's: start at s = 1, where the state really is pure noise (started at 0.921, the
    # network is told a time whose state holds 8% data that the noise does not have); replicated
    # edges, since zero padding pulls the edge frames toward 0, the data mean in normalised space.
    # At high noise the path comes from the velocities: denoising a real walk at s = 0.8 (tiny, demo
    # data), the estimate's root velocities travel 3.1 m of the clip's 3.65 m, its positions 0.6 m,
    # and sampled positions settle on that short path. From s = 0.8 on (demo champion, built-in
    # prompts): walks 2.54 -> 2.78 m, Foot_Floating / Foot_Sliding 1.17x / 0.85x -> 1.17x / 0.94x
    # the real clips'; from s = 0 the feet float (1.83x), the legs keeping the slower stride.
    "project": SamplerConfig("project", path_from_velocities_above=0.8),
    # RELEASED_RECIPE.md "Sampler" and "Smoothing": start strength 0.7, 50 steps, shift 5, final step
    # to 0; zero-padded smoothing with the first and last 2 frames put back unsmoothed.
    "released": SamplerConfig("released", strength=0.7, smoothing_padding="zeros", keep_edge_frames=2),
}


def get_sampler(name: str) -> SamplerConfig:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}") from None


VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def euler_sample(velocity_fn: VelocityFn, noise: torch.Tensor | Sequence[int], steps: int = 50,
                 x_mask: torch.Tensor | None = None, shift: float = 5.0,
                 generator: torch.Generator | None = None, strength: float = 1.0,
                 after_step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Integrate from pure noise (s = shift_time(strength), 1 by default) to data (s = 0) on the
    shifted schedule.

    velocity_fn(x (B, T, D), s (B,)) -> (B, T, D). `noise` is the starting noise, or a shape to draw
    it for (with `generator`). after_step(x, s_next) -> x corrects the state after each step (motion
    control's inpainting). Padded frames (x_mask 0) are zeroed in the result."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not isinstance(noise, torch.Tensor):
        noise = torch.randn(tuple(noise), generator=generator)
    times = inference_times(steps, shift, strength).to(noise.device)
    x = noise
    for i in range(steps):
        s = times[i].expand(x.shape[0])  # (B,)
        x = x + (times[i + 1] - times[i]) * velocity_fn(x, s)
        if after_step is not None:
            x = after_step(x, times[i + 1])
    if x_mask is not None:
        x = x * x_mask[..., None].to(x.dtype)
    return x


def project_denoised(velocity_fn: VelocityFn, project: Callable[[torch.Tensor], torch.Tensor],
                     above: float = 0.0) -> VelocityFn:
    """velocity_fn with its denoised estimate x0 = x - s v replaced by project(x0) (B, T, D) at flow
    times s >= `above`, for any prediction type and after guidance (s > 0 wherever the sampler
    evaluates it)."""

    def velocity(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        v = velocity_fn(x, s)
        s = s.reshape(-1).expand(x.shape[0])
        if float(s.min()) < above:
            return v
        s_ = _per_sample(s, x)
        return (x - project(x - s_ * v)) / s_

    return velocity


class ClassifierFreeGuidance:
    """v = v_u + scale (v_c - v_u) for text-mode samples (v_u: the null context); reference-mode
    samples use v_c only."""

    def __init__(self, scale: float = 5.0):
        self.scale = scale

    def combine(self, v_cond: torch.Tensor, v_uncond: torch.Tensor, use_text: torch.Tensor) -> torch.Tensor:
        guided = v_uncond + self.scale * (v_cond - v_uncond)
        return torch.where(use_text.bool()[:, None, None], guided, v_cond)

    def wrap(self, model, context: torch.Tensor, null_context: torch.Tensor, x_mask: torch.Tensor | None,
             ref_motion: torch.Tensor, ref_motion_mask: torch.Tensor, use_text: torch.Tensor,
             context_mask: torch.Tensor | None = None, null_context_mask: torch.Tensor | None = None) -> VelocityFn:
        """A guided velocity_fn(x, s) for euler_sample around a ViMoGenDiT. Each step is one forward
        over the batch plus, for the text-mode samples only, their unconditional copies.

        context (B, L, D); null_context (L, D); masks as ViMoGenDiT.forward; context_mask (B, L) and
        null_context_mask (L,) matter only for presets that mask text padding."""
        b = context.shape[0]
        use_text = use_text.reshape(b).bool()
        text_rows = use_text.nonzero().squeeze(1)  # (B_text,)
        n_text = int(text_rows.numel())
        if null_context.shape != context.shape[1:]:
            raise ValueError(f"null context must be {tuple(context.shape[1:])} like each context, "
                             f"got {tuple(null_context.shape)}")

        def with_copies(per_sample: torch.Tensor | None, copies: torch.Tensor | None = None) -> torch.Tensor | None:
            """(B, ...) -> (B + B_text, ...): the batch, then the text-mode samples again."""
            if per_sample is None:
                return None
            extra = per_sample.index_select(0, text_rows) if copies is None else copies
            return torch.cat([per_sample, extra])

        guided = n_text > 0 and self.scale != 1.0
        if guided:
            all_context = with_copies(context, null_context.expand(n_text, -1, -1))
            all_context_mask = None
            if context_mask is not None:
                null_mask = torch.ones(null_context.shape[0], dtype=torch.bool, device=context.device) \
                    if null_context_mask is None else null_context_mask.bool()
                all_context_mask = with_copies(context_mask.bool(), null_mask.expand(n_text, -1))
            all_x_mask = with_copies(x_mask)
            all_ref, all_ref_mask = with_copies(ref_motion), with_copies(ref_motion_mask)
            all_use_text = with_copies(use_text)

        prediction = model.config.prediction

        def velocity(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            s = s.reshape(-1).expand(b)
            timestep = FlowMatching.timestep_for_model(s)  # (B,)
            if not guided:
                out = model(x, timestep, context, x_mask, ref_motion, ref_motion_mask, use_text, context_mask)
                return as_velocity(out, x, s, prediction)
            out = model(with_copies(x), with_copies(timestep), all_context, all_x_mask, all_ref, all_ref_mask,
                        all_use_text, all_context_mask)  # (B + B_text, T, D)
            # Guidance is linear, so combining data predictions and then converting equals guiding velocities.
            cond, uncond = out[:b], out[b:]
            guided_text = uncond + self.scale * (cond.index_select(0, text_rows) - uncond)
            return as_velocity(cond.index_copy(0, text_rows, guided_text.to(cond.dtype)), x, s, prediction)

        return velocity


def smooth_features(x: torch.Tensor, kernel: int = 5, sigma: float = 1.0, padding: str = "replicate",
                    keep_edge_frames: int = 0) -> torch.Tensor:
    """Gaussian smoothing along time of (B, T, D) or (T, D) features. Edges are padded by replication
    or with zeros (`padding`); the first and last `keep_edge_frames` frames are then put back as they
    were (the released rule: zeros, 2)."""
    if padding not in ("replicate", "zeros"):
        raise ValueError(f"unknown smoothing padding {padding!r}: use 'replicate' or 'zeros'")
    squeeze = x.dim() == 2
    if squeeze:
        x = x[None]
    offsets = torch.arange(kernel, dtype=torch.float32, device=x.device) - (kernel - 1) / 2
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights = (weights / weights.sum()).to(x.dtype)
    b, t, d = x.shape
    flat = x.transpose(1, 2).reshape(b * d, 1, t)  # (B*D, 1, T)
    padded = F.pad(flat, (kernel // 2, kernel // 2), mode="replicate" if padding == "replicate" else "constant")
    out = F.conv1d(padded, weights.view(1, 1, -1)).reshape(b, d, t).transpose(1, 2)
    if keep_edge_frames > 0:
        keep = min(keep_edge_frames, t)
        out = out.clone()
        out[:, :keep] = x[:, :keep]
        out[:, t - keep:] = x[:, t - keep:]
    return out[0] if squeeze else out
