"""The DiT on small presets: padding masks, routing, bad input, bf16 autocast."""
import pytest
import torch

from vimogen_core.model.config import PRESETS, get_preset
from vimogen_core.model.dit import ViMoGenDiT


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = ViMoGenDiT(get_preset("tiny")).eval()
    with torch.no_grad():  # leave the zero-initialised output layers: outputs would be trivially equal
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model


def inputs(batch, frames, text_len=6, seed=0, text_dim=384):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, frames, 276, generator=g), torch.rand(batch, generator=g) * 1000,
            torch.randn(batch, text_len, text_dim, generator=g), torch.randn(batch, frames, 138, generator=g))


@pytest.mark.parametrize("text_mode", [True, False])
def test_output_ignores_batch_mates_and_padding_values(tiny, text_mode):
    x, t, ctx, ref = inputs(1, 30, seed=1)
    ones = torch.ones(1, 30)
    alone = tiny(x, t, ctx, ones, ref, ones, torch.tensor([text_mode]))
    # Batch it with a longer sample; pad it with garbage in motion and reference.
    x2, t2, ctx2, ref2 = inputs(1, 50, seed=2)
    xb = torch.cat([torch.cat([x, 99 * torch.randn(1, 20, 276)], 1), x2])
    refb = torch.cat([torch.cat([ref, -50 * torch.randn(1, 20, 138)], 1), ref2])
    mask = torch.ones(2, 50)
    mask[0, 30:] = 0
    batched = tiny(xb, torch.cat([t, t2]), torch.cat([ctx, ctx2]), mask, refb, mask, torch.tensor([text_mode, not text_mode]))
    assert (batched[0, :30] - alone[0]).abs().max() < 1e-5


def test_masked_text_padding_in_own_presets(tiny):
    assert get_preset("tiny").mask_text_padding and not get_preset("released").mask_text_padding
    x, t, ctx, ref = inputs(1, 20, text_len=6, seed=3)
    ones = torch.ones(1, 20)
    short = tiny(x, t, ctx, ones, ref, ones, torch.tensor([True]), torch.ones(1, 6, dtype=torch.bool))
    padded_ctx = torch.cat([ctx, 7 * torch.randn(1, 10, 384)], 1)
    padded_mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 10)], 1).bool()
    padded = tiny(x, t, padded_ctx, ones, ref, ones, torch.tensor([True]), padded_mask)
    assert (short - padded).abs().max() < 1e-5


def test_reference_mode_ignores_text_and_text_mode_ignores_reference(tiny):
    x, t, ctx, ref = inputs(1, 16, seed=4)
    ones = torch.ones(1, 16)
    a = tiny(x, t, ctx, ones, ref, ones, torch.tensor([False]))
    b = tiny(x, t, torch.randn_like(ctx), ones, ref, ones, torch.tensor([False]))
    assert torch.allclose(a, b)
    c = tiny(x, t, ctx, ones, ref, ones, torch.tensor([True]))
    d = tiny(x, t, ctx, ones, torch.zeros_like(ref), ones, torch.tensor([True]))
    assert torch.allclose(c, d, atol=1e-6)  # the reference encoder runs, but text mode discards it
    assert not torch.allclose(a, c)


def test_bad_inputs_are_rejected_with_a_reason(tiny):
    x, t, ctx, ref = inputs(1, 10)
    ones = torch.ones(1, 10)
    with pytest.raises(ValueError, match="reference motion must be"):
        tiny(x, t, ctx, ones, torch.zeros(1, 10, 137), ones, None)
    with pytest.raises(ValueError, match="non-finite"):
        tiny(x, t, ctx, ones, torch.full((1, 10, 138), float("nan")), ones, None)
    with pytest.raises(ValueError, match=r"\(B, T, 276\)"):
        tiny(torch.zeros(1, 10, 275), t, ctx, ones, ref, ones, None)
    with pytest.raises(ValueError, match="text context"):
        tiny(x, t, torch.zeros(1, 4, 10), ones, ref, ones, None)
    with pytest.raises(ValueError, match="unknown model preset"):
        get_preset("huge")


def test_bf16_autocast_forward_on_cpu_is_close_to_fp32(tiny):
    x, t, ctx, ref = inputs(2, 40, seed=5)
    ones = torch.ones(2, 40)
    full = tiny(x, t, ctx, ones, ref, ones, None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = tiny(x, t, ctx, ones, ref, ones, None)
    assert half.dtype in (torch.bfloat16, torch.float32)
    rel = (half.float() - full).norm() / full.norm()
    assert rel < 0.05, float(rel)


def test_presets_are_frozen_and_sized_for_cpu():
    with pytest.raises(Exception):
        PRESETS["tiny"].dim = 3
    n_tiny = sum(p.numel() for p in ViMoGenDiT(get_preset("tiny")).parameters())
    assert n_tiny < 5_000_000
