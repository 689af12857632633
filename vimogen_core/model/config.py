"""DiT hyperparameters as frozen dataclasses with named presets."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from vimogen_core.motion.representation import FEATURE_DIM, REF_FEATURE_DIM


@dataclass(frozen=True)
class DiTConfig:
    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    text_dim: int
    in_dim: int = FEATURE_DIM
    out_dim: int = FEATURE_DIM
    ref_dim: int = REF_FEATURE_DIM
    freq_dim: int = 256
    eps: float = 1e-6
    max_frames: int = 5000
    # The released model attends zero-padded text tokens; own presets may mask them instead.
    mask_text_padding: bool = False
    # What the network outputs: the flow velocity (the released model), the clean motion ("data"),
    # or the clean motion's residual over a scaled copy of its input ("skip", model/flow.py).
    # A network narrower than its 276 input features cannot carry the noise through its hidden
    # width, so it cannot output a velocity (which contains the noise); the clean motion lies on a
    # low-dimensional manifold and fits. The sampler turns a data prediction into a velocity.
    prediction: str = "velocity"
    # False: the text-to-motion branch alone (ViMoGen-light): no reference encoder, no reference
    # cross-attention, and reference-mode samples are refused.
    reference_branch: bool = True

    def __post_init__(self):
        if self.prediction not in ("velocity", "data", "skip"):
            raise ValueError(f"prediction must be 'velocity', 'data' or 'skip', got {self.prediction!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.freq_dim % 2:
            raise ValueError("freq_dim must be even")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def num_ref_layers(self) -> int:
        return self.num_layers // 2


PRESETS: dict[str, DiTConfig] = {
    # The released ViMoGen network (umT5-XXL text features), 2,258,214,420 parameters.
    "released": DiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, text_dim=4096),
    # CPU-trainable sizes on MiniLM (384-d) text features.
    # Both are narrower than the 276 motion features, hence data prediction; tiny's with the skip
    # (benchmarks/loss_breakdown.py: as plain data prediction its clean-motion error at s = 0.02 was
    # that at s = 0.5 - it could not pass its input through - and its walks glided without steps).
    "tiny": DiTConfig(dim=128, ffn_dim=512, num_heads=4, num_layers=4, text_dim=384, mask_text_padding=True,
                      prediction="skip"),
    "small": DiTConfig(dim=256, ffn_dim=1024, num_heads=8, num_layers=8, text_dim=384, mask_text_padding=True,
                       prediction="data"),
    # ViMoGen-light at tiny's size: the text branch only, with skip prediction like its teacher.
    "light": DiTConfig(dim=128, ffn_dim=512, num_heads=4, num_layers=4, text_dim=384, mask_text_padding=True,
                       prediction="skip", reference_branch=False),
}


def get_preset(name: str, **overrides) -> DiTConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}")
    known = {f.name for f in fields(DiTConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown model config field(s) {unknown}; fields: {sorted(known)}")
    return replace(PRESETS[name], **overrides)
