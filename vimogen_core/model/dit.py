"""The ViMoGen diffusion transformer (RELEASED_MODEL.md): per-frame tokens, timestep adaLN,
self-attention with q/k RMSNorm, a per-sample cross-attention to text or to an encoded reference
motion, adaLN FFN and a modulated head. Parameter names equal the released state-dict keys."""
from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vimogen_core.errors import pickled_objects_refused
from vimogen_core.model.config import DiTConfig


def layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm without weight/bias, statistics in fp32, result in the input dtype."""
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype)


class AffineLayerNorm(nn.Module):
    """LayerNorm with weight and bias, computed in fp32 (norm3 / norm4)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), x.shape[-1:], self.weight.float(), self.bias.float(), self.eps).to(x.dtype)


class RMSNorm(nn.Module):
    """RMS over the full width (before the head split), in fp32, then a learned weight."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return normed * self.weight


class Attention(nn.Module):
    """Multi-head attention with q/k RMSNorm; keys limited by a boolean key mask."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def forward(self, xq: torch.Tensor, xkv: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        b, lq, d = xq.shape
        heads = lambda t: t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # noqa: E731 (B, H, L, h)
        v = heads(self.v(xkv))
        # Under autocast the fp32 RMSNorm weights promote q and k; attend in the dtype of v.
        q = heads(self.norm_q(self.q(xq))).to(v.dtype)
        k = heads(self.norm_k(self.k(xkv))).to(v.dtype)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, Lk)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, Lq, h)
        return self.o(out.transpose(1, 2).reshape(b, lq, d))


def feed_forward(dim: int, ffn_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))


class PositionTable(nn.Module):
    """Interleaved sinusoidal positions (even channels sin, odd cos) as a (max_frames, 1, d) buffer,
    all in fp32 as in the released code (the checkpoint's own table wins when loaded)."""

    def __init__(self, dim: int, max_frames: int):
        super().__init__()
        position = torch.arange(max_frames, dtype=torch.float32)[:, None]  # (P, 1)
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (d/2,)
        pe = torch.zeros(max_frames, 1, dim)
        pe[:, 0, 0::2] = torch.sin(position * freq)
        pe[:, 0, 1::2] = torch.cos(position * freq)
        self.register_buffer("pe", pe)

    def forward(self, n_frames: int) -> torch.Tensor:
        return self.pe[:n_frames, 0]  # (T, d)


def timestep_sinusoid(timestep: torch.Tensor, freq_dim: int) -> torch.Tensor:
    """(B,) flow time x 1000 -> (B, freq_dim): [cos ..., sin ...] computed in float64."""
    half = freq_dim // 2
    omega = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timestep.device) / half)
    angle = timestep.to(torch.float64)[:, None] * omega[None]
    return torch.cat([torch.cos(angle), torch.sin(angle)], dim=-1).float()


def _chunks(modulation: torch.Tensor, n: int) -> list[torch.Tensor]:
    """(B, n, d) -> n tensors of shape (B, 1, d) that broadcast over frames."""
    return [modulation[:, i:i + 1] for i in range(n)]


class Routing:
    """Which samples take the text branch and which the reference branch.

    Each branch runs only on its own samples (a sample's other branch would be discarded, so this
    is exact and saves the unused half). A branch with no samples still runs on an empty batch, so
    every parameter stays in the autograd graph (zero gradients) and DDP never sees unused ones.
    """

    def __init__(self, use_text: torch.Tensor):  # (B,) bool
        self.text_index = use_text.nonzero().squeeze(1)  # (B_text,)
        self.ref_index = (~use_text).nonzero().squeeze(1)  # (B_ref,)
        mixed = self.text_index.numel() and self.ref_index.numel()
        # Where each sample sits in cat([text rows, reference rows]); None when already in order.
        self.restore = torch.argsort(torch.cat([self.text_index, self.ref_index])) if mixed else None

    def text_rows(self, per_sample: torch.Tensor | None) -> torch.Tensor | None:
        if per_sample is None or not self.ref_index.numel():
            return per_sample
        return per_sample.index_select(0, self.text_index)

    def ref_rows(self, per_sample: torch.Tensor | None) -> torch.Tensor | None:
        if per_sample is None or not self.text_index.numel():
            return per_sample
        return per_sample.index_select(0, self.ref_index)

    def merge(self, from_text: torch.Tensor, from_ref: torch.Tensor) -> torch.Tensor:
        both = torch.cat([from_text, from_ref])  # (B, ...) text rows first
        return both if self.restore is None else both.index_select(0, self.restore)


class ReferenceEncoderBlock(nn.Module):
    """Self-attention + FFN, both adaLN-modulated and gated."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.eps = cfg.eps
        self.modulation = nn.Parameter(torch.randn(1, 6, cfg.dim) / cfg.dim**0.5)
        self.self_attn = Attention(cfg.dim, cfg.num_heads, cfg.eps)
        self.ffn = feed_forward(cfg.dim, cfg.ffn_dim)

    def forward(self, r: torch.Tensor, e0: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        sh_a, sc_a, g_a, sh_f, sc_f, g_f = _chunks(self.modulation + e0, 6)
        y = layer_norm(r, self.eps) * (1 + sc_a) + sh_a
        r = r + self.self_attn(y, y, key_mask) * g_a
        return r + self.ffn(layer_norm(r, self.eps) * (1 + sc_f) + sh_f) * g_f


class DiTBlock(nn.Module):
    """adaLN self-attention -> cross-attention to text or reference (ungated) -> adaLN FFN."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.eps = cfg.eps
        self.modulation = nn.Parameter(torch.randn(1, 6, cfg.dim) / cfg.dim**0.5)
        self.self_attn = Attention(cfg.dim, cfg.num_heads, cfg.eps)
        self.norm3 = AffineLayerNorm(cfg.dim, cfg.eps)
        self.cross_attn = Attention(cfg.dim, cfg.num_heads, cfg.eps)
        self.ffn = feed_forward(cfg.dim, cfg.ffn_dim)
        if cfg.reference_branch:
            self.ref_motion_cross_attn = Attention(cfg.dim, cfg.num_heads, cfg.eps)
            self.norm4 = AffineLayerNorm(cfg.dim, cfg.eps)

    def forward(
        self,
        h: torch.Tensor,  # (B, T, d)
        e0: torch.Tensor,  # (B or 1, 6, d)
        key_x: torch.Tensor,  # (B, T) valid motion frames
        text: torch.Tensor,  # (B_text, L, d) embedded text of the text-mode samples
        text_keys: torch.Tensor | None,  # (B_text, L) or None: every token is a key
        ref: torch.Tensor | None,  # (B_ref, T, d) encoded reference of the reference-mode samples; None: text only
        ref_keys: torch.Tensor | None,  # (B_ref, T) valid reference frames
        routing: Routing,
    ) -> torch.Tensor:
        sh_a, sc_a, g_a, sh_f, sc_f, g_f = _chunks(self.modulation + e0, 6)
        y = layer_norm(h, self.eps) * (1 + sc_a) + sh_a
        h = h + self.self_attn(y, y, key_x) * g_a
        from_text = self.cross_attn(self.norm3(routing.text_rows(h)), text, text_keys)  # (B_text, T, d)
        if ref is None:  # text-only network: every sample is a text-mode one
            h = h + from_text
        else:
            from_ref = self.ref_motion_cross_attn(self.norm4(routing.ref_rows(h)), ref, ref_keys)  # (B_ref, T, d)
            h = h + routing.merge(from_text, from_ref)  # plain residual: no gate, no modulation
        return h + self.ffn(layer_norm(h, self.eps) * (1 + sc_f) + sh_f) * g_f


class MotionHead(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.eps = cfg.eps
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)
        self.head = nn.Linear(cfg.dim, cfg.out_dim)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        shift, scale = _chunks(self.modulation + e[:, None, :], 2)  # the raw time embedding e
        return self.head(layer_norm(h, self.eps) * (1 + scale) + shift)


class ViMoGenDiT(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.dim
        self.motion_embedding = nn.Linear(cfg.in_dim, d)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.motion_pos_embedding = PositionTable(d, cfg.max_frames)
        if cfg.reference_branch:
            self.ref_motion_embedding = nn.Linear(cfg.ref_dim, d)
            self.ref_motion_pos_embedding = PositionTable(d, cfg.max_frames)
            self.ref_motion_encoder = nn.ModuleList(ReferenceEncoderBlock(cfg) for _ in range(cfg.num_ref_layers))
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.num_layers))
        self.motion_head = MotionHead(cfg)
        self._init_output_layers()

    def _init_output_layers(self):
        # Start as the zero velocity: residual gates' source (the time projection) and the head.
        nn.init.zeros_(self.time_projection[1].weight)
        nn.init.zeros_(self.time_projection[1].bias)
        nn.init.zeros_(self.motion_head.head.weight)
        nn.init.zeros_(self.motion_head.head.bias)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, 276) noisy normalised motion
        timestep: torch.Tensor,  # (B,) or (1,) flow time x 1000
        context: torch.Tensor,  # (B, L, text_dim)
        x_mask: torch.Tensor | None,  # (B, T) 1 = valid frame
        ref_motion: torch.Tensor,  # (B, T, 138)
        ref_motion_mask: torch.Tensor,  # (B, T)
        attend_to_text_mask: torch.Tensor | None = None,  # (B,) True -> text branch
        context_mask: torch.Tensor | None = None,  # (B, L), used only with config.mask_text_padding
    ) -> torch.Tensor:
        cfg = self.config
        b, t, _ = x.shape
        self._check_inputs(x, timestep, context, x_mask, ref_motion, ref_motion_mask, attend_to_text_mask,
                           context_mask)
        frames = torch.arange(t, device=x.device)
        # Masks count as prefix lengths (their row sums), as in the released model.
        len_x = x_mask.sum(1) if x_mask is not None else torch.full((b,), t, device=x.device)
        len_ref = ref_motion_mask.sum(1)
        key_x = frames[None] < len_x[:, None]  # (B, T)
        key_ref = frames[None] < len_ref[:, None]  # (B, T)
        if attend_to_text_mask is None:  # released rule: an all-zero raw reference means text mode
            use_text = ref_motion.float().pow(2).sum((1, 2)) == 0
        else:
            use_text = attend_to_text_mask.reshape(b).bool().to(x.device)
        routing = Routing(use_text)

        h = self.motion_embedding(x) + self.motion_pos_embedding(t)  # (B, T, d)
        e = self.time_embedding(timestep_sinusoid(timestep.reshape(-1), cfg.freq_dim))  # (B or 1, d)
        e0 = self.time_projection(e).unflatten(1, (6, cfg.dim))  # (B or 1, 6, d)

        # Text tokens, embedded only for the text-mode samples; the released model attends all of them.
        c = self.text_embedding(routing.text_rows(context))  # (B_text, L, d)
        text_keys = routing.text_rows(context_mask.bool()) if cfg.mask_text_padding and context_mask is not None \
            else None  # (B_text, L)

        r, ref_keys = None, None
        if cfg.reference_branch:
            # The reference encoder, only for reference-mode samples (text-mode ones discard its result).
            r = self.ref_motion_embedding(routing.ref_rows(ref_motion)) + self.ref_motion_pos_embedding(t)  # (B_ref, T, d)
            e0_ref = e0 if e0.shape[0] == 1 else routing.ref_rows(e0)
            ref_self_keys = routing.ref_rows(key_x)  # released quirk: encoder keys limited by the MOTION length
            for block in self.ref_motion_encoder:
                r = block(r, e0_ref, ref_self_keys)
            ref_keys = routing.ref_rows(key_ref)  # (B_ref, T)
        elif routing.ref_index.numel():
            raise ValueError(f"{routing.ref_index.numel()} reference-mode sample(s) given to a text-only network "
                             "(ViMoGen-light has no reference branch)")

        for block in self.blocks:
            h = block(h, e0, key_x, c, text_keys, r, ref_keys, routing)
        return self.motion_head(h, e)  # (B, T, 276)

    def _check_inputs(self, x, timestep, context, x_mask, ref_motion, ref_motion_mask, attend_to_text_mask,
                      context_mask):
        cfg = self.config
        if x.dim() != 3 or x.shape[-1] != cfg.in_dim:
            raise ValueError(f"motion input must be (B, T, {cfg.in_dim}), got {tuple(x.shape)}")
        b, t = x.shape[:2]
        if t > cfg.max_frames:
            raise ValueError(f"{t} frames exceed the position table ({cfg.max_frames})")
        if x_mask is not None and tuple(x_mask.shape) != (b, t):
            raise ValueError(f"motion mask must be {(b, t)}, got {tuple(x_mask.shape)}")
        if ref_motion.dim() != 3 or ref_motion.shape[:2] != x.shape[:2] or ref_motion.shape[-1] != cfg.ref_dim:
            raise ValueError(f"reference motion must be (B, T, {cfg.ref_dim}) matching the motion's "
                             f"{(b, t)}, got {tuple(ref_motion.shape)}")
        if tuple(ref_motion_mask.shape) != (b, t):
            raise ValueError(f"reference mask must be {(b, t)}, got {tuple(ref_motion_mask.shape)}")
        if context.dim() != 3 or context.shape[-1] != cfg.text_dim or context.shape[0] != b:
            raise ValueError(f"text context must be (B, L, {cfg.text_dim}) with B = {b}, got {tuple(context.shape)}")
        if context_mask is not None and tuple(context_mask.shape) != tuple(context.shape[:2]):
            raise ValueError(f"text mask must be {tuple(context.shape[:2])}, got {tuple(context_mask.shape)}")
        if attend_to_text_mask is not None and attend_to_text_mask.numel() != b:
            raise ValueError(f"attend_to_text_mask must hold one flag per sample ({b}), "
                             f"got {tuple(attend_to_text_mask.shape)}")
        if timestep.dim() != 1 or timestep.shape[0] not in (1, b):
            raise ValueError(f"timestep must be 1-D of length 1 or B = {b}, got {tuple(timestep.shape)}")
        if not torch.isfinite(ref_motion).all():
            raise ValueError("reference motion contains non-finite values (NaN or inf)")


@dataclass
class LoadReport:
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]  # "key: checkpoint shape vs model shape"

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        if self.ok:
            return "all keys loaded"
        parts = [f"{len(v)} {name} (e.g. {v[0]})" for name, v in
                 (("missing", self.missing), ("unexpected", self.unexpected), ("shape-mismatched", self.mismatched))
                 if v]
        return "; ".join(parts)


POSITION_TABLE_KEYS = ("motion_pos_embedding.pe", "ref_motion_pos_embedding.pe")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or from a torch file read with weights_only=True (no pickle
    code runs). Accepts the usual wrappers ({"state_dict": ...}, {"model": ...}, {"module": ...})
    and a DDP "module." prefix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:  # a pickle that asks for code: never pass on torch's advice
            raise pickled_objects_refused(path, err) from None
        except Exception as err:  # truncated file, not a torch file ...
            raise ValueError(f"{path}: not a readable weights file ({type(err).__name__}: {err})") from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: does not hold a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_released_state_dict(model: ViMoGenDiT, state_dict_or_path, strict: bool = False) -> LoadReport:
    """Load a state dict in the released naming onto `model` by name and report missing, unexpected
    and shape-mismatched keys instead of ignoring them (the official loader uses strict=False
    silently). Values are cast to the model's dtype (bf16 -> fp32 is exact). The position tables
    are taken from the checkpoint when present, else the recomputed ones stay. With strict=True a
    report that is not clean raises ValueError and nothing is loaded."""
    source = state_dict_or_path
    state = read_state_dict(source) if isinstance(source, (str, os.PathLike)) else dict(source)
    own = model.state_dict()
    missing = [k for k in own if k not in state and k not in POSITION_TABLE_KEYS]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    report = LoadReport(missing, unexpected, mismatched)
    if strict and not report.ok:
        where = f"{source}: " if isinstance(source, (str, os.PathLike)) else ""
        raise ValueError(f"{where}weights do not fit the model: {report}")
    loadable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(loadable, strict=False)
    return report
