"""Sampling motions from a trained checkpoint: text mode (classifier-free guidance) or reference mode.

Each requested motion gets its own noise generator (seed + its position in the request), so a
motion does not change with the batch size or with what it is batched with.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vimogen_core.errors import MotionDataError
# Only the config type at import time: sampling looks euler_sample up on the module when it runs.
from vimogen_core.model.flow import SamplerConfig
from vimogen_core.motion.cleanup import CleanupConfig, clean_features
from vimogen_core.motion.representation import (FEATURE_DIM, Normalizer, check_features, path_from_root_velocities,
                                                 reference_features)
from vimogen_core.train import checkpoint as ckpt
from vimogen_core.train.conditioning import TextContext
from vimogen_core.train.config import TrainConfig

LIGHT_STEPS = 4  # a ViMoGen-light student's default step count (benchmarks/distill_compare.py)
MAX_FRAMES = 1000  # 50 s at 20 fps; the position tables hold 5000 rows, the training windows 200


@dataclass
class Generator:
    model: torch.nn.Module
    model_config: object
    train_config: TrainConfig
    normalizer: Normalizer
    text: TextContext
    device: torch.device
    checkpoint: Path
    step: int
    # Applied to every generated motion, for every consumer (CLI, served model, MBench); None: the
    # network's features as sampled.
    cleanup: CleanupConfig | None = CleanupConfig()
    # The schedule and smoothing: a name in model/flow.py SAMPLERS or a SamplerConfig (a benchmark's
    # variant); None: the training preset's `sampler`.
    sampler: str | SamplerConfig | None = None

    @property
    def is_light(self) -> bool:
        """A ViMoGen-light student: text only, guidance built into its weights."""
        return not self.model_config.reference_branch

    @property
    def default_steps(self) -> int:
        return LIGHT_STEPS if self.is_light else 50

    @property
    def postprocessing(self) -> str:
        return self.cleanup.name if self.cleanup is not None else "none"

    @property
    def sampler_config(self):
        from vimogen_core.model.flow import get_sampler

        chosen = self.sampler or self.train_config.sampler
        return chosen if isinstance(chosen, SamplerConfig) else get_sampler(chosen)

    def check_request(self, prompts, n_frames, ref_motions) -> tuple[list[str], list[int], list[np.ndarray | None]]:
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise ValueError("no prompts given")
        lengths = [int(n_frames)] * len(prompts) if np.isscalar(n_frames) else [int(n) for n in n_frames]
        if len(lengths) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(lengths)} frame counts")
        for n in lengths:
            if not 1 <= n <= MAX_FRAMES:
                raise ValueError(f"frame count {n} out of range 1..{MAX_FRAMES}")
        refs: list[np.ndarray | None] = [None] * len(prompts)
        if ref_motions is not None:
            if len(ref_motions) != len(prompts):
                raise ValueError(f"{len(prompts)} prompts but {len(ref_motions)} reference motions")
            refs = []
            for i, ref in enumerate(ref_motions):
                if ref is None:
                    refs.append(None)
                    continue
                name = getattr(ref, "name", None) or f"reference motion {i}"
                refs.append(check_features(np.asarray(ref, dtype=np.float32), name))
        for i, (prompt, ref) in enumerate(zip(prompts, refs)):
            if ref is None and (not isinstance(prompt, str) or not prompt.strip()):
                raise ValueError(f"prompt {i} is empty; text mode needs a description of the motion")
        return [p if isinstance(p, str) else "" for p in prompts], lengths, refs

    @torch.no_grad()
    def generate(self, prompts: list[str], n_frames: int | list[int], ref_motions: list[np.ndarray] | None = None,
                 steps: int | None = None, cfg_scale: float | None = None, seed: int = 0, batch_size: int = 32,
                 smooth: bool = True, progress: bool = False, seeds: list[int] | None = None) -> list[np.ndarray]:
        """Motions as de-normalised (T, 276) float32 features, one per prompt. A sample with a
        reference motion (un-normalised (T_ref, 276) features) is generated in reference mode,
        conditioned on it alone; the others in text mode with guidance `cfg_scale` (default: the
        training preset's `guidance_scale`); `steps` Euler steps (default: `default_steps`). Motion i
        draws its noise from seed + i, or from `seeds[i]` where a caller keeps the seeds of a larger request."""
        prompts, lengths, refs = self.check_request(prompts, n_frames, ref_motions)
        seeds = [seed + i for i in range(len(prompts))] if seeds is None else [int(s) for s in seeds]
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        steps = self.default_steps if steps is None else steps
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if self.is_light and any(ref is not None for ref in refs):
            raise ValueError(f"{self.checkpoint}: reference mode asked of a ViMoGen-light checkpoint, which is "
                             "text-only; use a full ViMoGen checkpoint")
        if self.is_light and cfg_scale not in (None, 1.0):
            raise ValueError(f"{self.checkpoint}: guidance is built into a ViMoGen-light checkpoint; "
                             f"leave the guidance scale unset (got {cfg_scale})")
        cfg_scale = self.train_config.guidance_scale if cfg_scale is None else cfg_scale
        out: list[np.ndarray] = []
        chunks = range(0, len(prompts), batch_size)
        if progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc="generate", unit="batch")
        for start in chunks:
            stop = min(start + batch_size, len(prompts))
            out.extend(self._generate_batch(prompts[start:stop], lengths[start:stop], refs[start:stop],
                                            steps, cfg_scale, seeds[start:stop], smooth))
        return out

    def _generate_batch(self, prompts, lengths, refs, steps, cfg_scale, seeds, smooth) -> list[np.ndarray]:
        return self.finish(self.sample(prompts, lengths, refs, steps, cfg_scale, seeds), lengths, smooth, self.cleanup)

    def sample(self, prompts: list[str], lengths: list[int], refs: list[np.ndarray | None], steps: int,
               cfg_scale: float, seed: int | list[int], steer=None) -> torch.Tensor:
        """(B, T_max, 276) normalised samples of one batch (padding zeroed). `steer` (the motion
        control's hook, `vimogen_core.control`) may wrap the guided velocity and correct the state
        after each step: steer.velocity(velocity_fn, noise) -> velocity_fn, steer.after_step."""
        from vimogen_core.model.flow import ClassifierFreeGuidance, euler_sample, project_denoised

        b, t_max = len(prompts), max(lengths)
        device = self.device
        x_mask = (torch.arange(t_max)[None, :] < torch.tensor(lengths)[:, None]).to(device)  # (B, T)
        use_text = torch.tensor([ref is None for ref in refs], device=device)  # (B,)
        reference = torch.zeros(b, t_max, len(reference_features(np.zeros(FEATURE_DIM))), device=device)  # (B, T, 138)
        reference_mask = x_mask.clone()
        for row, ref in enumerate(refs):
            if ref is None:
                continue
            n = min(len(ref), lengths[row])
            ref_norm = torch.from_numpy(self.normalizer.normalize(ref[:n]).astype(np.float32))
            reference[row, :n] = reference_features(ref_norm).to(device)
            reference_mask[row] = torch.arange(t_max, device=device) < n
        context, context_mask = self.text.encode(prompts, drop=~use_text.cpu())  # (B, L, D), (B, L)
        velocity = ClassifierFreeGuidance(cfg_scale).wrap(
            self.model, context.to(device), self.text.null.to(device), x_mask, reference, reference_mask, use_text,
            context_mask.to(device), self.text.null_mask.to(device))

        # Each motion draws noise at its own length: CPU randn fills its last block differently for
        # different sizes, so drawing at the batch's t_max would tie a motion to its batch mates.
        noise = torch.zeros(b, t_max, FEATURE_DIM)
        for i, n in enumerate(lengths):
            row_seed = seed + i if isinstance(seed, int) else seed[i]  # a list: each motion's own
            noise[i, :n] = torch.randn(n, FEATURE_DIM, generator=torch.Generator().manual_seed(row_seed))
        noise = noise.to(device)  # (B, T, 276)
        sampler = self.sampler_config
        # A light student's few steps were distilled onto its teacher's finished samples: projecting
        # its estimates floats its feet (demo student, 1 step: Foot_Floating 0.98x -> 2.71x the teacher's).
        if sampler.path_from_velocities_above is not None and not self.is_light:
            velocity = project_denoised(velocity, self._path_from_velocities, sampler.path_from_velocities_above)
        after_step = None
        if steer is not None:
            velocity, after_step = steer.velocity(velocity, noise), steer.after_step
        return euler_sample(velocity, noise, steps, x_mask, shift=sampler.shift, strength=sampler.strength,
                            after_step=after_step).float().cpu()

    def _path_from_velocities(self, estimate: torch.Tensor) -> torch.Tensor:
        """A normalised denoised estimate (B, T, 276) moved to travel as its root velocities say."""
        return self.normalizer.normalize(path_from_root_velocities(self.normalizer.denormalize(estimate)))

    def finish(self, sample: torch.Tensor, lengths: list[int], smooth: bool,
               cleanup: CleanupConfig | None) -> list[np.ndarray]:
        """Normalised (B, T_max, 276) samples -> de-normalised (T, 276) features per motion,
        smoothed and cleaned up with `cleanup` (None: as sampled)."""
        from vimogen_core.model.flow import smooth_features

        sampler = self.sampler_config
        out = []
        for row, n in enumerate(lengths):
            motion = sample[row : row + 1, :n]  # (1, n, 276): smoothing must not reach into padding
            if smooth:
                motion = smooth_features(motion, padding=sampler.smoothing_padding,
                                         keep_edge_frames=sampler.keep_edge_frames)
            feats = self.normalizer.denormalize(motion[0]).numpy().astype(np.float32)
            out.append(clean_features(feats, cleanup) if cleanup is not None else feats)
        return out


def load_generator(checkpoint: str | os.PathLike, device: str = "cpu", expected_preset: str | None = None,
                   use_ema: bool = True) -> Generator:
    """A generator from a training checkpoint (EMA weights by default). `expected_preset` guards
    against loading a checkpoint of another model size."""
    from vimogen_core.model.config import DiTConfig
    from vimogen_core.model.dit import ViMoGenDiT

    path = Path(checkpoint)
    payload = ckpt.load_checkpoint(path)
    preset = payload["model_preset"]
    if expected_preset is not None and preset != expected_preset:
        raise MotionDataError(path, f"checkpoint holds model preset {preset!r}, expected {expected_preset!r}")
    try:
        model_config = DiTConfig(**json.loads(payload["model_config"]))
    except TypeError as err:
        raise MotionDataError(path, f"model configuration does not fit this version ({err})") from None
    train_config = TrainConfig.from_json(payload["train_config"])
    state = payload["ema" if use_ema else "model"]
    with torch.device("meta"):  # shapes only: a wrong-preset checkpoint fails before any allocation
        ckpt.check_state_dict(path, preset, ViMoGenDiT(model_config), state)
    model = ViMoGenDiT(model_config)
    model.load_state_dict(state)
    model = model.to(device).eval()
    text = TextContext(payload["text_encoder"], train_config.text_len)
    return Generator(model=model, model_config=model_config, train_config=train_config,
                     normalizer=ckpt.checkpoint_normalizer(payload), text=text, device=torch.device(device),
                     checkpoint=path, step=int(payload["step"]))


def read_prompt_file(path: str | os.PathLike) -> list[str]:
    """Non-empty lines of a UTF-8 text file, stripped (one prompt a line); errors name the file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise MotionDataError(path, "prompts file not found") from None
    except UnicodeDecodeError:
        raise MotionDataError(path, "prompts file is not UTF-8 text") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise MotionDataError(path, "prompts file has no prompts")
    return prompts
