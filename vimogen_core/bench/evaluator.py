"""A small contrastive text-motion model: the local MBench judge and the classic-metrics evaluator.

Motion side: per-frame features of the joints (heading-normalised root-relative positions, pelvis
height and velocities) -> dilated temporal convolutions -> masked mean+max pooling -> embedding.
Text side: MiniLM sentence embeddings (mean of the token states, vimogen_core.text.encoders) ->
MLP -> embedding. Trained with a symmetric InfoNCE loss on captioned real motion; weights are
saved as safetensors next to a JSON config (no pickle).
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vimogen_core.errors import MotionDataError
from vimogen_core.files import atomic_path, atomic_write_json

LEFT_HIP, RIGHT_HIP = 1, 2
TEXT_DIM = 384  # all-MiniLM-L6-v2
FRAME_FEATURE_DIM = 22 * 3 * 2 + 1  # positions, velocities, pelvis height
WEIGHTS_FILE = "evaluator.safetensors"
CONFIG_FILE = "evaluator.json"


@dataclass(frozen=True)
class EvaluatorConfig:
    width: int = 128
    embed_dim: int = 128
    steps: int = 400
    lr: float = 2e-3
    batch_size: int = 32
    min_window: int = 40
    max_window: int = 120
    seed: int = 0

    @classmethod
    def preset(cls, name: str) -> EvaluatorConfig:
        presets = {"default": cls(), "quick": cls(width=64, embed_dim=64, steps=120, max_window=80), "curated": cls(width=256, embed_dim=256, steps=3000)}
        if name not in presets:
            raise ValueError(f"unknown evaluator preset {name!r}; choose from {sorted(presets)}")
        return presets[name]


@dataclass
class CaptionedMotion:
    """Training/evaluation sample: joints (T, 22, 3) Z up, and its captions."""

    name: str
    joints: np.ndarray
    captions: list[str] = field(default_factory=list)


def motion_frame_features(joints: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, 22, 3) joints -> (T, 133) per-frame features invariant to the start position and heading.

    Frame 0's hips define the heading: the motion is turned so its left->right hip axis is +x
    (facing +y) and shifted so the frame-0 pelvis is over the origin; positions are then relative
    to each frame's pelvis ground point, plus pelvis height and per-frame velocities (padded).
    """
    j = np.asarray(joints, dtype=np.float32)  # (T, 22, 3)
    if len(j) < 2:
        raise ValueError("motion features need at least 2 frames")
    across = j[0, RIGHT_HIP] - j[0, LEFT_HIP]
    c, s = np.cos(np.arctan2(across[1], across[0])), np.sin(np.arctan2(across[1], across[0]))
    turn = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)  # undoes the heading
    j = (j - j[0, 0] * np.array([1.0, 1.0, 0.0], dtype=np.float32)) @ turn.T
    ground = j[:, :1] * np.array([1.0, 1.0, 0.0], dtype=np.float32)  # pelvis projected on the floor
    relative = (j - ground).reshape(len(j), -1)  # (T, 66)
    velocity = np.empty_like(j)
    velocity[:-1] = j[1:] - j[:-1]
    velocity[-1] = velocity[-2]
    frames = np.concatenate([relative, velocity.reshape(len(j), -1), j[:, 0, 2:3]], axis=1)
    return torch.from_numpy(frames)


class MotionEncoder(nn.Module):
    def __init__(self, width: int, embed_dim: int):
        super().__init__()
        self.input = nn.Linear(FRAME_FEATURE_DIM, width)
        self.convs = nn.ModuleList(
            nn.Conv1d(width, width, kernel_size=5, padding=2 * d, dilation=d) for d in (1, 2, 4)
        )
        self.head = nn.Sequential(nn.LayerNorm(2 * width), nn.Linear(2 * width, embed_dim))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """frames (B, T, F) normalised, mask (B, T) bool -> (B, E) unit vectors."""
        h = self.input(frames).transpose(1, 2)  # (B, W, T)
        m = mask[:, None, :].to(h.dtype)
        for conv in self.convs:
            h = h + F.gelu(conv(h * m))
        mean = (h * m).sum(-1) / m.sum(-1).clamp_min(1.0)
        peak = h.masked_fill(m == 0, -1e4).amax(-1)
        return F.normalize(self.head(torch.cat([mean, peak], dim=1)), dim=-1)


class TextProjection(nn.Module):
    def __init__(self, width: int, embed_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(TEXT_DIM, 2 * width), nn.GELU(), nn.Linear(2 * width, embed_dim))

    def forward(self, sentence: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(sentence), dim=-1)


def minilm_sentence_embeddings(texts: Sequence[str]) -> torch.Tensor:
    """(N, 384) mean-pooled MiniLM token states, through the project's text encoder and its
    in-memory cache (benchmark candidates repeat across prompts)."""
    if "cache" not in _MINILM:
        from vimogen_core.text.encoders import EmbeddingCache, MiniLMEncoder

        _MINILM["cache"] = EmbeddingCache(MiniLMEncoder())
    tokens, mask = _MINILM["cache"].encode(list(texts))  # (B, L, 384), (B, L)
    weights = torch.as_tensor(mask, dtype=torch.float32)[..., None]
    return (torch.as_tensor(tokens, dtype=torch.float32) * weights).sum(1) / weights.sum(1).clamp_min(1.0)


_MINILM: dict = {}  # one encoder per process, loaded on first use


class TextMotionEvaluator:
    """Embeds motions and texts into one space; cosine similarity says how well they match."""

    name = "local-contrastive"

    def __init__(self, config: EvaluatorConfig, motion_encoder: MotionEncoder, text_projection: TextProjection,
                 feature_mean: torch.Tensor, feature_std: torch.Tensor, logit_scale: float,
                 text_embedder: Callable[[Sequence[str]], torch.Tensor] = minilm_sentence_embeddings,
                 info: dict | None = None):
        self.config = config
        self.motion_encoder = motion_encoder.eval()
        self.text_projection = text_projection.eval()
        self.feature_mean = feature_mean
        self.feature_std = feature_std
        self.logit_scale = logit_scale
        self.text_embedder = text_embedder
        self.info = dict(info or {})

    # --- embeddings ---

    def _batch_frames(self, motions: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        frames = [motion_frame_features(m) for m in motions]
        length = max(len(f) for f in frames)
        batch = torch.zeros(len(frames), length, FRAME_FEATURE_DIM)
        mask = torch.zeros(len(frames), length, dtype=torch.bool)
        for i, f in enumerate(frames):
            batch[i, : len(f)] = (f - self.feature_mean) / self.feature_std
            mask[i, : len(f)] = True
        return batch, mask

    @torch.no_grad()
    def encode_motions(self, motions: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """joints (T, 22, 3) each -> (N, E) unit embeddings."""
        out = []
        for start in range(0, len(motions), batch_size):
            frames, mask = self._batch_frames(motions[start : start + batch_size])
            out.append(self.motion_encoder(frames, mask))
        return torch.cat(out).numpy() if out else np.zeros((0, self.config.embed_dim), np.float32)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, E) unit embeddings of the texts."""
        if not texts:
            return np.zeros((0, self.config.embed_dim), np.float32)
        return self.text_projection(self.text_embedder(list(texts))).numpy()

    def similarity(self, motions: Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
        """(M, N) cosine similarities."""
        return self.encode_motions(motions) @ self.encode_texts(texts).T

    # --- persistence (safetensors + JSON) ---

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"motion.{k}": v.contiguous() for k, v in self.motion_encoder.state_dict().items()}
        tensors |= {f"text.{k}": v.contiguous() for k, v in self.text_projection.state_dict().items()}
        tensors |= {"feature_mean": self.feature_mean, "feature_std": self.feature_std}
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp))
        meta = {"config": asdict(self.config), "logit_scale": self.logit_scale, "info": self.info, "name": self.name}
        atomic_write_json(directory / CONFIG_FILE, meta, indent=2)
        return directory

    @classmethod
    def load(cls, directory: str | Path, text_embedder=minilm_sentence_embeddings) -> TextMotionEvaluator:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        try:
            meta = json.loads((directory / CONFIG_FILE).read_text())
            tensors = load_file(str(directory / WEIGHTS_FILE))
        except FileNotFoundError as err:
            raise MotionDataError(directory, f"not an evaluator directory ({err.filename} missing)") from None
        except (json.JSONDecodeError, SafetensorError, OSError) as err:
            raise MotionDataError(directory, f"unreadable evaluator files ({err})") from None
        config = EvaluatorConfig(**meta["config"])
        motion, text = MotionEncoder(config.width, config.embed_dim), TextProjection(config.width, config.embed_dim)
        motion.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("motion.")})
        text.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("text.")})
        return cls(config, motion, text, tensors["feature_mean"], tensors["feature_std"], float(meta["logit_scale"]),
                   text_embedder, meta.get("info"))


def _random_window(joints: np.ndarray, rng: np.random.Generator, min_len: int, max_len: int) -> np.ndarray:
    length = int(rng.integers(min(min_len, len(joints)), min(max_len, len(joints)) + 1))
    start = int(rng.integers(0, len(joints) - length + 1))
    return joints[start : start + length]


def train_evaluator(samples: Sequence[CaptionedMotion], config: EvaluatorConfig = EvaluatorConfig(),
                    text_embedder: Callable[[Sequence[str]], torch.Tensor] = minilm_sentence_embeddings,
                    sink=None) -> TextMotionEvaluator:
    """Contrastive training: each step draws distinct samples, a random window and one caption each."""
    if len(samples) < 2:
        raise ValueError("contrastive training needs at least two captioned motions")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    captions = sorted({c for s in samples for c in s.captions})
    if any(not s.captions for s in samples):
        raise ValueError("every training motion needs at least one caption")
    sentence = dict(zip(captions, text_embedder(captions), strict=True))  # caption -> (384,)

    stacked = torch.cat([motion_frame_features(s.joints) for s in samples])
    mean, std = stacked.mean(0), stacked.std(0).clamp_min(1e-3)
    motion_encoder, text_projection = MotionEncoder(config.width, config.embed_dim), TextProjection(config.width, config.embed_dim)
    log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = [*motion_encoder.parameters(), *text_projection.parameters(), log_scale]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.steps, pct_start=0.1)
    evaluator = TextMotionEvaluator(config, motion_encoder, text_projection, mean, std, 0.0, text_embedder)
    batch = min(config.batch_size, len(samples))
    motion_encoder.train(), text_projection.train()
    for step in range(config.steps):
        chosen = rng.choice(len(samples), size=batch, replace=False)
        windows = [_random_window(samples[i].joints, rng, config.min_window, config.max_window) for i in chosen]
        texts = [samples[i].captions[int(rng.integers(len(samples[i].captions)))] for i in chosen]
        frames, mask = evaluator._batch_frames(windows)
        motion_emb = motion_encoder(frames, mask)  # (B, E)
        text_emb = text_projection(torch.stack([sentence[t] for t in texts]))  # (B, E)
        logits = log_scale.clamp(max=math.log(100.0)).exp() * motion_emb @ text_emb.T
        # Samples sharing a caption are not negatives of each other.
        same = torch.tensor([[a == b for b in texts] for a in texts])
        logits_mt = logits.masked_fill(same & ~torch.eye(batch, dtype=torch.bool), -1e4)
        target = torch.arange(batch)
        loss = 0.5 * (F.cross_entropy(logits_mt, target) + F.cross_entropy(logits_mt.T, target))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        if sink is not None and (step % 50 == 0 or step == config.steps - 1):
            sink.log_metrics({"evaluator/loss": float(loss)}, step)
    motion_encoder.eval(), text_projection.eval()
    evaluator.logit_scale = float(log_scale.detach().exp())
    evaluator.info = {"train_samples": len(samples), "train_captions": len(captions), "steps": config.steps}
    return evaluator
