"""ViMoGen-light: a text-only student distilled from the full model, for sampling in 1-4 steps.

The student is the `light` preset (the T2M branch only) and starts as its teacher's EMA weights
without the reference branch. It trains with the project's training loop on the teacher's samples
(`teacher.py`) and, with share 1 - `teacher_share`, on the curated data, in the teacher's
normalised feature space, always on its text (no text drop: the teacher's guidance is in its
targets, so the student samples with one network evaluation per step). Two objectives:

- "reflow" (rectified flow on the teacher's coupling): flow matching where each teacher sample's
  noise is the noise the teacher sampled it from, so the paths the student learns are the
  teacher's guided ODE solutions straightened; curated samples train with drawn noise.
- "consistency" (consistency distillation): on a grid of `consistency_points` times, the student's
  clean-motion estimate at x_s must equal its own (stop-gradient) estimate one guided teacher Euler
  step later, at s' < s; at s' = 0 the target is the teacher's step itself.

Either student samples with the Euler sampler on the few-step schedule (model/flow.py): a
clean-motion estimate turned into a velocity makes each Euler step "estimate, then re-noise with
the implied noise", the deterministic multistep consistency sampler.

Measured (benchmarks/distill_compare.py; teacher: the demo's tiny champion, 50 steps, guidance
2.5, 348 teacher samples of expanded prompts, both students 600 steps at batch 12, lr 5e-4):
reflow stays within 0.53-1.11x the teacher's Jitter_Degree, Foot_Floating and Foot_Sliding at 1, 2
and 4 steps with retrieval at or above the teacher's; consistency distillation matches it at 1
step (0.67-1.09x) but its 2- and 4-step samples jitter 2.1x and 4.9x and slide 2.0x and 4.8x, and
it retrieves 2.7-4.3 of 15 clips against the teacher's 5. Reflow is the default; consistency stays
selectable so that a better teacher can be re-measured.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from vimogen_core.errors import MotionDataError
from vimogen_core.motion.representation import Normalizer
from vimogen_core.sinks import MetricSink, NullSink
from vimogen_core.train import checkpoint as ckpt
from vimogen_core.train.config import TrainConfig
from vimogen_core.train.data import MotionDataset, MotionItem, build_dataset

METHODS = ("reflow", "consistency")
LIGHT_PRESET = "light"


@dataclass(frozen=True)
class StudentConfig:
    method: str = "reflow"
    teacher_share: float = 0.9  # fraction of training draws that are teacher samples
    consistency_points: int = 16  # the consistency grid: shift_time(k / points), k = 0..points
    steps: int = 600
    batch_size: int = 12
    lr: float = 5e-4  # half the tiny teacher's 1e-3: the student starts as the teacher
    warmup_steps: int = 20
    checkpoint_every: int = 200
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown distillation method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if not 0.0 < self.teacher_share <= 1.0:
            raise ValueError(f"teacher_share must be in (0, 1], got {self.teacher_share}")


def teacher_noise(n_frames: int, seed: int) -> np.ndarray:
    """(T, 276): the noise Generator.sample draws for a motion of `n_frames` with `seed`."""
    from vimogen_core.motion.representation import FEATURE_DIM

    return torch.randn(n_frames, FEATURE_DIM, generator=torch.Generator().manual_seed(seed)).numpy()


class TeacherSampleDataset:
    """Teacher samples (a validated teacher-sample shard set), whole and with their noise."""

    def __init__(self, manifest_path: str | Path, normalizer: Normalizer):
        from vimogen_core.curation.dataset import ShardDataset
        from vimogen_core.curation.shard_reader import read_manifest

        self.shards = ShardDataset(Path(manifest_path), split=None)
        if len(self.shards) == 0:
            raise MotionDataError(manifest_path, "no teacher samples")
        annotations = dict(zip(*(read_manifest(Path(manifest_path), ["id", "annotation_json"])[c].to_pylist()
                                 for c in ("id", "annotation_json"))))
        self.noise_seeds = [int(json.loads(annotations[i])["noise_seed"]) for i in self.shards.ids]
        self.normalizer = normalizer

    def __len__(self) -> int:
        return len(self.shards)

    def sample(self, index: int, rng: np.random.Generator) -> MotionItem:
        item = self.shards[index]
        feats = self.normalizer.normalize(item["features"].numpy()).astype(np.float32)  # (T, 276)
        return MotionItem(feats, list(item["motion_text"]), item["source"], use_ref_allowed=False,
                          noise=teacher_noise(len(feats), self.noise_seeds[index]))


class DistillDataset:
    """Teacher samples first, then curated ones filling 1 - teacher_share of the draws."""

    def __init__(self, teacher: TeacherSampleDataset, curated: MotionDataset | None, teacher_share: float):
        self.teacher, self.curated = teacher, curated
        self.normalizer = teacher.normalizer
        extra = 0 if curated is None or teacher_share >= 1.0 else round(len(teacher) * (1 - teacher_share) / teacher_share)
        self.length = len(teacher) + extra

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int, rng: np.random.Generator) -> MotionItem:
        if index < len(self.teacher):
            return self.teacher.sample(index, rng)
        item = self.curated.sample((index - len(self.teacher)) % len(self.curated), rng)
        item.use_ref_allowed = False
        return item


class ConsistencyObjective:
    """The consistency-distillation loss for the training loop (its `objective` hook)."""

    def __init__(self, teacher, text, guidance_scale: float, points: int, shift: float = 5.0,
                 root_weight: float = 3.0):
        from vimogen_core.model.flow import ClassifierFreeGuidance, shift_time

        self.teacher = teacher.eval().requires_grad_(False)
        self.text = text
        self.guidance = ClassifierFreeGuidance(guidance_scale)
        self.grid = shift_time(torch.arange(points + 1, dtype=torch.float64) / points, shift).float()  # (P+1,)
        self.points = points
        self.root_weight = root_weight

    def __call__(self, model, batch, s, noise, context, context_mask) -> torch.Tensor:
        from vimogen_core.model.flow import ROOT_WEIGHT_DIMS, FlowMatching, denoised

        prediction = self.teacher.config.prediction
        # The grid step from the sample's own seed, so the draw does not depend on its batch mates.
        k = torch.tensor([seed % self.points + 1 for seed in batch.time_seeds], device=noise.device)  # (B,) 1..P
        s_hi, s_lo = self.grid.to(noise.device)[k], self.grid.to(noise.device)[k - 1]  # (B,)
        x_hi = FlowMatching.interpolate(batch.x0, noise, s_hi)  # (B, T, 276)
        student_args = (context, batch.x_mask, batch.reference, batch.reference_mask, batch.use_text, context_mask)
        with torch.no_grad():
            velocity = self.guidance.wrap(self.teacher, context, self.text.null.to(noise.device), batch.x_mask,
                                          batch.reference, batch.reference_mask, batch.use_text, context_mask,
                                          self.text.null_mask.to(noise.device))
            x_lo = x_hi + (s_lo - s_hi)[:, None, None] * velocity(x_hi, s_hi)  # one guided teacher step
            at_end = (s_lo == 0)[:, None, None]
            safe_lo = torch.where(s_lo == 0, torch.ones_like(s_lo), s_lo)  # the estimate at s = 0 is x itself
            later = denoised(model(x_lo, FlowMatching.timestep_for_model(safe_lo), *student_args), x_lo, safe_lo, prediction)
            target = torch.where(at_end, x_lo, later)
        estimate = denoised(model(x_hi, FlowMatching.timestep_for_model(s_hi), *student_args), x_hi, s_hi, prediction)
        dim_weight = torch.ones(estimate.shape[-1], device=estimate.device)
        dim_weight[ROOT_WEIGHT_DIMS] = self.root_weight
        err = ((estimate - target) ** 2 * dim_weight).mean(-1)  # (B, T)
        mask = batch.x_mask.float()
        return (err * mask).sum() / mask.sum().clamp(min=1.0)


@dataclass
class StudentResult:
    checkpoint: str
    method: str
    teacher: str
    teacher_samples: int
    step: int
    final_loss: float
    wall_s: float

    def to_metadata(self) -> dict:
        return asdict(self)


def student_train_config(teacher: TrainConfig, teacher_model: dict, config: StudentConfig) -> TrainConfig:
    """The teacher's training config turned into the student's: the light preset at the teacher's
    size (`teacher_model`: its DiTConfig fields), always text, no guidance at sampling (it is in
    the targets), the teacher's data as the curated share."""
    from vimogen_core.model.config import get_preset

    light = get_preset(LIGHT_PRESET)
    overrides = {k: v for k, v in teacher_model.items() if k != "reference_branch" and getattr(light, k) != v}
    return teacher.replace(model_preset=LIGHT_PRESET, model_overrides=overrides, text_drop=0.0, p_text=1.0, p_text_noisy=1.0,
                           guidance_scale=1.0, geometry_weight=0.0, steps=config.steps, batch_size=config.batch_size,
                           lr=config.lr, warmup_steps=config.warmup_steps, checkpoint_every=config.checkpoint_every,
                           seed=config.seed, lr_schedule="constant", device="cpu" if teacher.device == "cpu" else teacher.device)


def load_teacher_checkpoint(path: str | os.PathLike) -> dict:
    payload = ckpt.load_checkpoint(path)
    if not json.loads(payload["model_config"]).get("reference_branch", True):
        raise MotionDataError(path, "is a ViMoGen-light student; a teacher must be a full ViMoGen checkpoint")
    return payload


def train_student(teacher_checkpoint: str | os.PathLike, teacher_manifest: str | os.PathLike, out_dir: str | os.PathLike,
                  config: StudentConfig = StudentConfig(), sink: MetricSink = NullSink(), resume=None,
                  progress: bool = True, validation_report: str | os.PathLike | None = None) -> StudentResult:
    """Distil the teacher into a light student on a teacher-sample set, which must pass its
    expectation suite (a failing set does not train a student)."""
    from vimogen_core.distill.teacher import validate_teacher_samples
    from vimogen_core.model.config import DiTConfig
    from vimogen_core.model.dit import ViMoGenDiT
    from vimogen_core.train.conditioning import TextContext
    from vimogen_core.train.loop import build_model_config, train

    validation = validate_teacher_samples(teacher_manifest, validation_report)
    if not validation.success:
        raise MotionDataError(teacher_manifest, f"teacher samples fail their checks ({', '.join(validation.failed)}); "
                                                "no student is trained on them")
    payload = load_teacher_checkpoint(teacher_checkpoint)
    teacher_config = TrainConfig.from_json(payload["train_config"])
    train_config = student_train_config(teacher_config, json.loads(payload["model_config"]), config)
    normalizer = ckpt.checkpoint_normalizer(payload)
    teacher_data = TeacherSampleDataset(teacher_manifest, normalizer)
    curated = build_dataset(train_config, normalizer) if config.teacher_share < 1.0 else None
    dataset = DistillDataset(teacher_data, curated, config.teacher_share)

    # The student starts as the teacher: every weight but the reference branch's.
    student_shapes = ViMoGenDiT(build_model_config(train_config)).state_dict()
    initial = {k: v for k, v in payload["ema"].items() if k in student_shapes}
    objective = None
    if config.method == "consistency":
        teacher = ViMoGenDiT(DiTConfig(**json.loads(payload["model_config"])))
        teacher.load_state_dict(payload["ema"])
        text = TextContext(train_config.text_encoder, train_config.text_len)
        objective = ConsistencyObjective(teacher, text, teacher_config.guidance_scale, config.consistency_points)
    result = train(train_config, out_dir, sink=sink, resume=resume, progress=progress, dataset=dataset,
                   initial_state=initial, objective=objective)
    student = StudentResult(str(result.checkpoint), config.method, str(teacher_checkpoint), len(teacher_data),
                            result.step, result.final_loss, result.wall_s)
    Path(out_dir, "distill.json").write_text(json.dumps({**student.to_metadata(), "config": asdict(config)}, indent=1))
    return student


def load_light_generator(checkpoint: str | os.PathLike, device: str = "cpu"):
    """A Generator for a ViMoGen-light checkpoint; a full ViMoGen checkpoint is refused."""
    from vimogen_core.train.generate import load_generator

    generator = load_generator(checkpoint, device=device)
    if not generator.is_light:
        raise MotionDataError(checkpoint, f"holds a full ViMoGen model (preset {generator.train_config.model_preset!r}), "
                                          "not a ViMoGen-light student; distil one with `vimogen distill train`")
    return generator
