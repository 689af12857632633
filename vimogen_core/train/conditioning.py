"""Text conditioning shared by training and generation: captions -> fixed-length token contexts.

The released network attends to every text token, padding included (RELEASED_MODEL.md 4.4), so
the context length is part of the model's function: training and sampling must pad to the same
length. `TextContext` pads/cuts encoder tokens to `text_len`, supplies the null context, and gives
the token mask with every context, which presets with `mask_text_padding` use to ignore padding.
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


def fit_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    """(..., L) bool -> (..., length): padded with False or cut."""
    return fit_length(mask[..., None], length)[..., 0]


class TextContext:
    def __init__(self, encoder_name: str, text_len: int, cache_dir: str | Path | None = None):
        from vimogen_core.text.encoders import EmbeddingCache, get_text_encoder

        self.encoder = get_text_encoder(encoder_name)
        self.encoder_name = encoder_name
        self.cache = EmbeddingCache(self.encoder, cache_dir)
        self.text_len = text_len
        self.null = fit_length(torch.as_tensor(self.encoder.null_context(text_len)).float(), text_len)  # (L, D)
        # The null context is the empty prompt's tokens followed by zero rows; its first token is
        # always kept so a masked attention never has no key at all.
        self.null_mask = self.null.ne(0).any(-1)  # (L,)
        self.null_mask[0] = True
        # Prompt -> its tokens (L', D) computed ahead, used instead of encoding it (the released
        # MBench data ships umT5 embeddings: `*_wanvideot5_embed_path`).
        self.precomputed: dict[str, torch.Tensor] = {}

    def add_precomputed(self, text: str, tokens: torch.Tensor) -> None:
        """Use `tokens` (L', D), zero-padded like the released embeddings, for prompt `text`."""
        tokens = torch.as_tensor(tokens).float()
        if tokens.dim() != 2 or tokens.shape[-1] != self.dim:
            raise ValueError(f"precomputed tokens for {text[:40]!r} are {tuple(tokens.shape)}, expected (L, {self.dim})")
        self.precomputed[text] = tokens

    @property
    def dim(self) -> int:
        return int(self.null.shape[-1])

    def encode(self, texts: list[str], drop: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> tokens (B, L, D) float32 and their mask (B, L) bool, True on real tokens; rows
        where `drop` is True get the null context and its mask."""
        keep = [i for i in range(len(texts)) if drop is None or not bool(drop[i])]
        context = self.null.expand(len(texts), -1, -1).clone()  # (B, L, D)
        mask = self.null_mask.expand(len(texts), -1).clone()  # (B, L)
        given = [i for i in keep if texts[i] in self.precomputed]
        keep = [i for i in keep if texts[i] not in self.precomputed]
        if keep:
            tokens, token_mask = self.cache.encode([texts[i] for i in keep])  # (K, L', D), (K, L')
            context[keep] = fit_length(torch.as_tensor(tokens).float(), self.text_len)
            mask[keep] = fit_mask(torch.as_tensor(token_mask).bool(), self.text_len)
        for i in given:
            tokens = fit_length(self.precomputed[texts[i]], self.text_len)  # (L, D)
            context[i] = tokens
            mask[i] = tokens.ne(0).any(-1)  # the files hold zero rows after the real tokens
            mask[i, 0] = True
        return context, mask
