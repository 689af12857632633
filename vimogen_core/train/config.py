"""Training hyperparameters: one frozen dataclass, named presets, and string overrides.

The CLI and the orchestration layer only pick a preset and override fields (`--set lr=1e-4`);
the values themselves live here, once.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field

from vimogen_core.config_overrides import apply_overrides as _apply_overrides


@dataclass(frozen=True)
class TrainConfig:
    # Model and text encoder.
    model_preset: str = "tiny"
    model_overrides: dict = field(default_factory=dict)  # DiTConfig field -> value
    text_encoder: str = "minilm"
    text_len: int = 32  # text tokens zero-padded/cut to this many (the released model: 226, unmasked)
    # Optimisation. `batch_size` is the global batch: under torchrun each rank takes its share.
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    lr_schedule: str = "constant"  # "constant" after warm-up, or "cosine" decay to lr_min_ratio * lr
    lr_min_ratio: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    # Ramp the EMA decay up from 0 over the first steps, so that early EMA weights are not stuck at
    # the initialisation (the released run applies ema_decay from step 1).
    ema_ramp: bool = True
    bf16: bool = True  # autocast matmuls to bfloat16 where the device runs bf16 natively (AMX, tensor cores)
    seed: int = 0
    device: str = "cpu"  # "cpu", "cuda", "cuda:N", or "auto" (the GPU where there is one)
    # Under torchrun (or for one process that must shard, e.g. the released size on one GPU):
    # "ddp" replicates the model per process, "fsdp" shards parameters, gradients and optimizer
    # state (FSDP2, train/fsdp.py) and saves sharded checkpoints.
    parallel: str = "ddp"
    activation_checkpointing: bool = False  # recompute each block's activations in the backward pass
    compile: bool = False  # torch.compile the network (CUDA: fused kernels; the first steps compile)
    # Data loading (train/data.py): worker processes drawing whole per-rank batches ahead of the
    # step (0: in the training process), batches each worker keeps ready, pinned host memory for
    # the copy to a GPU, and length bucketing (> 0: batches are cut from chunks of this many
    # batches sorted by motion length, so a batch pads less; 0: off).
    data_workers: int = 0
    prefetch_batches: int = 2
    pin_memory: bool = True
    length_bucketing: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    # Data: "builtin" (the 15 DeepMimic clips) or the path of a curated shard manifest.
    data: str = "builtin"
    split: str = "train"
    # A normaliser file (`vimogen data stats` / the normalisation_stats asset); empty: fitted on the
    # training split (or the built-in clips) when training starts.
    normalizer: str = ""
    # Folder of the motion files of a ViMoGen-228K annotation JSON given as `data` (default: the
    # JSON's own folder).
    data_root: str = ""
    builtin_min_frames: int = 100  # built-in clips are lengthened to this many frames first
    min_frames: int = 40  # training windows are 40-200 frames (2-10 s at 20 fps)
    max_frames: int = 200
    # Motions outside min..max frames: "crop" trains on a random 40-200 frame window of any motion
    # (a long take still teaches its every part); "redraw" trains on whole motions and replaces one
    # outside 40-200 by another drawn uniformly at random (the released loader).
    length_rule: str = "crop"
    # Which caption trains: "motion" (motion-style descriptions, the video-style one only as a
    # fallback: the project's prompts and MBench's prompt_motion_detailed are motion descriptions)
    # or "video" (video_text_annot, the released training caption).
    caption_field: str = "motion"
    # Probability that a drawn caption is replaced by one of its short forms, cut before a modifier
    # (curation/captions.py caption_short_forms: "a person walks forward at a relaxed pace." ->
    # "a person walks forward"), so that a prompt of the head clause alone asks for the same motion.
    short_caption_prob: float = 0.0
    mirror: bool = True
    # Losses in metres on the joints of the denoised estimate (train/geometry_loss.py), added to the
    # feature loss with this weight; 0 trains on the feature loss alone, as the released model was.
    geometry_weight: float = 0.0
    # The classifier-free guidance scale generation uses by default for a model of this preset.
    guidance_scale: float = 5.0
    # Training flow times are s = shift_time(u, time_shift) for u uniform on the grid (model/flow.py
    # FlowMatching): 5, as released, spends most samples at high noise (s > 0.83 for half of them);
    # 1 draws s uniformly, so the low-noise end, where feet and contacts are settled, trains as often.
    time_shift: float = 5.0
    # Conditioning (DESIGN.md section 7).
    text_drop: float = 0.5  # the text is replaced by the null context, for classifier-free guidance
    p_text: float = 0.8  # routing draw: probability that a sample trains the text branch
    p_text_noisy: float = 0.4  # the same for samples from noisier sources
    noisy_sources: tuple[str, ...] = ("in_the_wild_video",)
    # The same, for samples whose motion path contains one of these (the released subsets' names).
    noisy_path_markers: tuple[str, ...] = ()
    # Text-mode samples whose motion path contains one of these supervise only the local pose (dims
    # 0:126): their global channels come from video recovery and are masked out of the loss.
    local_loss_path_markers: tuple[str, ...] = ()
    # The sampler generation uses by default for a model of this preset (model/flow.py SAMPLERS).
    sampler: str = "project"
    # Corrupted self-reference for samples routed to the motion branch.
    ref_noise_max_fraction: float = 0.4  # Gaussian noise on a random 0-40% of the frames
    ref_noise_std: float = 0.1  # in normalised units
    # Noise std drawn from ref_noise_std +- this (the released: U[0.05, 0.15]); 0: always ref_noise_std,
    # the released draw's mean, with which the project's presets were trained and measured.
    ref_noise_std_spread: float = 0.0
    ref_blend_fraction: tuple[float, float] = (0.03, 0.08)  # frames replaced by a blend of neighbours
    # Blend weight of the previous frame: 0.5 + jitter (U[0, 1] - 0.5). 1: any mix of the two
    # neighbours; the released 0.3 keeps it within 0.35-0.65, near the midpoint.
    ref_blend_jitter: float = 1.0
    ref_dropout: float = 0.02  # frames dropped from the reference

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        values = json.loads(text)
        return cls(**{key: _coerce(cls, key, value) for key, value in values.items()})

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _field_types(cls) -> dict[str, typing.Any]:
    return typing.get_type_hints(cls)


def _coerce(cls, key: str, value):
    """JSON lists back to tuples where the field is a tuple."""
    hint = _field_types(cls)[key]
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        return tuple(value)
    return value


TRAIN_PRESETS: dict[str, TrainConfig] = {
    # A few minutes on a laptop CPU: the text-conditioning demo on the built-in clips.
    # tiny learns the body from the joint-space losses (benchmarks/generation_quality.py, 1500 demo
    # steps: the raw output's Jitter_Degree 2.8x -> 0.9x the real clips', Foot_Sliding 5.8x -> 2.0x)
    # and floats its feet less under milder guidance than the released 5 (Foot_Floating 4.9x at 2.5
    # against 6.0x at 5). Flow times drawn uniformly (time_shift 1) step more and slide less than
    # shift 5's (demo data and budget, 1500 steps at batch 16: Foot_Sliding 2.37x / 2.13x over two
    # seeds against 3.01x, Foot_Floating 3.33x / 4.03x against 4.21x, walks change supporting foot
    # 2.1 / 1.7 times against 0.9; Dynamic_Degree 0.68x / 0.71x against 0.85x; shift 2: 2.59x,
    # 3.40x, 0.9).
    # Short captions at 0.3 (demo data and budget, two seeds, benchmarks/generation_quality.py):
    # Foot_Floating 1.36x / 1.22x -> 1.16x / 1.18x the real clips', Foot_Sliding 1.12x / 0.98x ->
    # 0.77x / 1.07x; "a person walks forward" stands up (mean pelvis 0.80-0.88 m -> 0.95-0.97 m, seed 0).
    "tiny": TrainConfig(model_preset="tiny", steps=2000, batch_size=32, lr=1e-3, warmup_steps=100, ema_decay=0.995,
                        checkpoint_every=500, geometry_weight=0.01, guidance_scale=2.5, time_shift=1.0,
                        short_caption_prob=0.3),
    "small": TrainConfig(model_preset="small", steps=3000, batch_size=32, lr=5e-4, warmup_steps=200, ema_decay=0.998,
                         checkpoint_every=500),
    # One GPU: a few hundred million parameters (dim 1024, 16 layers; 8 reference-encoder layers)
    # on MiniLM text features, wide enough to predict the velocity like the released network.
    "base": TrainConfig(model_preset="small", model_overrides={"dim": 1024, "ffn_dim": 4096, "num_heads": 16,
                                                               "num_layers": 16, "prediction": "velocity"},
                        steps=20_000, batch_size=128, lr=2e-4, weight_decay=1e-4, adam_betas=(0.9, 0.95),
                        warmup_steps=500, grad_clip=0.1, ema_decay=0.9999, device="auto", checkpoint_every=1000,
                        log_every=50, data_workers=4, length_bucketing=8),
    # The paper's run, point by point as RELEASED_RECIPE.md states it: the released architecture,
    # 40k steps at global batch 1024, AdamW lr 2e-4, betas (0.9, 0.95), weight decay 1e-4, 100
    # warm-up steps, clipping 0.1, EMA 0.9999 every step; video_text_annot captions; whole 40-200
    # frame motions (others redrawn); the text branch at 0.4 for motion31/mogen_db paths, else 0.8;
    # only the local pose supervised for mogen_db/vigen text-mode samples; reference noise std
    # U[0.05, 0.15], blend weights 0.5 +- 0.15, no frame dropout; the released sampler. The text
    # encoder is umT5-XXL from a local directory.
    "released": TrainConfig(model_preset="released", text_encoder="umt5", text_len=226, steps=40_000, batch_size=1024, lr=2e-4,
                            weight_decay=1e-4, adam_betas=(0.9, 0.95), warmup_steps=100, grad_clip=0.1,
                            ema_decay=0.9999, ema_ramp=False, data="data/curated/manifest.parquet",
                            device="cuda", parallel="fsdp", activation_checkpointing=True, data_workers=4,
                            length_bucketing=8, checkpoint_every=1000, log_every=50, mirror=False, length_rule="redraw",
                            caption_field="video", noisy_sources=(), noisy_path_markers=("motion31", "mogen_db"),
                            local_loss_path_markers=("mogen_db", "vigen"), ref_dropout=0.0, ref_noise_std_spread=0.05,
                            ref_blend_jitter=0.3, sampler="released"),
}


def get_train_preset(name: str) -> TrainConfig:
    try:
        return TRAIN_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown training preset {name!r}; choose one of: {', '.join(TRAIN_PRESETS)}") from None


def apply_overrides(config: TrainConfig, assignments: list[str] | dict[str, typing.Any],
                    where: str = "--set") -> TrainConfig:
    """`["steps=100", "lr=1e-3", "model.num_layers=2"]` (strings, from the CLI) or a dict of typed
    values (from code or Dagster config). `model.X` sets a DiTConfig field. The one implementation
    is `vimogen_core.config_overrides.apply_overrides`; this names the source and the `model.` prefix."""
    return _apply_overrides(config, assignments, where, kind="training setting",
                            prefixed={"model": "model_overrides"})
