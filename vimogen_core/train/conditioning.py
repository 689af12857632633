"""Text conditioning shared by training and generation: captions -> fixed-length token contexts.

The released network attends to every text token, padding included (RELEASED_MODEL.md 4.4), so
the context length is part of the model's function: training and sampling must pad to the same
length. `TextContext` pads/cuts encoder tokens to `text_len` and supplies the null context.
"""
from __future__ import annotations

from pathlib import Path

import torch


def fit_length(tokens: torch.Tensor, length: int) -> torch.Tensor:
    """(..., L, D) -> (..., length, D): zero-padded or cut."""
    have = tokens.shape[-2]
    if have >= length:
        return tokens[..., :length, :]
    pad = tokens.new_zeros(*tokens.shape[:-2], length - have, tokens.shape[-1])
    return torch.cat([tokens, pad], dim=-2)


class TextContext:
    def __init__(self, encoder_name: str, text_len: int, cache_dir: str | Path | None = None):
        from vimogen_core.text.encoders import EmbeddingCache, get_text_encoder

        self.encoder = get_text_encoder(encoder_name)
        self.encoder_name = encoder_name
        self.cache = EmbeddingCache(self.encoder, cache_dir)
        self.text_len = text_len
        self.null = fit_length(torch.as_tensor(self.encoder.null_context(text_len)).float(), text_len)  # (L, D)

    @property
    def dim(self) -> int:
        return int(self.null.shape[-1])

    def encode(self, texts: list[str], drop: torch.Tensor | None = None) -> torch.Tensor:
        """Captions -> (B, L, D) float32; rows where `drop` is True get the null context."""
        keep = [i for i in range(len(texts)) if drop is None or not bool(drop[i])]
        context = self.null.expand(len(texts), -1, -1).clone()  # (B, L, D)
        if keep:
            tokens, _ = self.cache.encode([texts[i] for i in keep])  # (K, L', D)
            context[keep] = fit_length(torch.as_tensor(tokens).float(), self.text_len)
        return context
