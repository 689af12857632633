"""The DiT on small presets: padding masks, routing, gradients, bad input, bf16 autocast."""
import pytest
import torch

from vimogen_core.model.config import PRESETS, get_preset
from vimogen_core.model.dit import ViMoGenDiT


def randomised(cfg):
    """A model whose every weight matters: the zero-initialised output layers would make outputs trivially equal."""
    torch.manual_seed(0)
    model = ViMoGenDiT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model


@pytest.fixture(scope="module")
def tiny():
    return randomised(get_preset("tiny"))


@pytest.fixture(scope="module")
def released_quirks():
    """The released architecture (unmasked text) at a small width."""
    return randomised(get_preset("released", dim=64, ffn_dim=128, num_heads=4, num_layers=2, text_dim=384))


def inputs(batch, frames, text_len=6, seed=0, text_dim=384):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, frames, 276, generator=g), torch.rand(batch, generator=g) * 1000,
            torch.randn(batch, text_len, text_dim, generator=g), torch.randn(batch, frames, 138, generator=g))


@pytest.mark.parametrize("model_name", ["tiny", "released_quirks"])
@pytest.mark.parametrize("text_mode", [True, False])
def test_output_ignores_batch_mates_and_padding_values(request, model_name, text_mode):
    model = request.getfixturevalue(model_name)
    x, t, ctx, ref = inputs(1, 30, seed=1)
    ctx[:, 4:] = 0.0  # zero-padded text, as the data pipeline delivers it
    ones = torch.ones(1, 30)
    with torch.no_grad():
        alone = model(x, t, ctx, ones, ref, ones, torch.tensor([text_mode]))
        # Batch it (in second place) with a longer sample of the other mode; pad motion and reference with garbage.
        x2, t2, ctx2, ref2 = inputs(1, 50, seed=2)
        xb = torch.cat([x2, torch.cat([x, 99 * torch.randn(1, 20, 276)], 1)])
        refb = torch.cat([ref2, torch.cat([ref, -50 * torch.randn(1, 20, 138)], 1)])
        mask = torch.ones(2, 50)
        mask[1, 30:] = 0
        batched = model(xb, torch.cat([t2, t]), torch.cat([ctx2, ctx]), mask, refb, mask,
                        torch.tensor([not text_mode, text_mode]))
    assert (batched[1, :30] - alone[0]).abs().max() < 1e-5
    assert batched[1, :30].abs().max() > 1e-2  # a real output, not a degenerate one


def test_masks_act_as_prefix_lengths(tiny):
    x, t, ctx, ref = inputs(1, 12, seed=6)
    prefix = torch.zeros(1, 12)
    prefix[0, :8] = 1
    scattered = torch.zeros(1, 12)
    scattered[0, ::3] = 1
    scattered[0, 1::3] = 1  # 8 ones, not a prefix
    with torch.no_grad():
        a = tiny(x, t, ctx, prefix, ref, prefix, torch.tensor([False]))
        b = tiny(x, t, ctx, scattered, ref, scattered, torch.tensor([False]))
    assert torch.equal(a, b)


def test_masked_text_padding_in_own_presets(tiny):
    assert get_preset("tiny").mask_text_padding and not get_preset("released").mask_text_padding
    x, t, ctx, ref = inputs(1, 20, text_len=6, seed=3)
    ones = torch.ones(1, 20)
    with torch.no_grad():
        short = tiny(x, t, ctx, ones, ref, ones, torch.tensor([True]), torch.ones(1, 6, dtype=torch.bool))
        padded_ctx = torch.cat([ctx, 7 * torch.randn(1, 10, 384)], 1)
        padded_mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 10)], 1).bool()
        padded = tiny(x, t, padded_ctx, ones, ref, ones, torch.tensor([True]), padded_mask)
        unmasked = tiny(x, t, padded_ctx, ones, ref, ones, torch.tensor([True]))
    assert (short - padded).abs().max() < 1e-5
    assert (short - unmasked).abs().max() > 1e-3  # without the mask the padding tokens are attended


def test_reference_mode_ignores_text_and_text_mode_ignores_reference(tiny):
    x, t, ctx, ref = inputs(1, 16, seed=4)
    ones = torch.ones(1, 16)
    with torch.no_grad():
        a = tiny(x, t, ctx, ones, ref, ones, torch.tensor([False]))
        b = tiny(x, t, torch.randn_like(ctx), ones, ref, ones, torch.tensor([False]))
        c = tiny(x, t, ctx, ones, ref, ones, torch.tensor([True]))
        d = tiny(x, t, ctx, ones, torch.zeros_like(ref), ones, torch.tensor([True]))
        derived = tiny(x, t, ctx, ones, torch.zeros_like(ref), ones, None)  # all-zero reference -> text mode
    assert torch.equal(a, b)
    assert torch.equal(c, d) and torch.equal(c, derived)
    assert (a - c).abs().max() > 1e-2


def test_every_parameter_gets_a_gradient_whatever_the_routing():
    # DDP without find_unused_parameters needs all parameters in every step's graph, even when a
    # process's local batch routes no sample to one of the branches.
    model = ViMoGenDiT(get_preset("tiny"))
    x, t, ctx, ref = inputs(3, 10, seed=7)
    ones = torch.ones(3, 10)
    for flags in ([True, True, True], [False, False, False], [False, True, False]):
        model.zero_grad(set_to_none=True)
        model(x, t, ctx, ones, ref, ones, torch.tensor(flags)).pow(2).mean().backward()
        assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_bad_inputs_are_rejected_with_a_reason(tiny):
    x, t, ctx, ref = inputs(1, 10)
    ones = torch.ones(1, 10)
    with pytest.raises(ValueError, match=r"reference motion must be \(B, T, 138\)"):
        tiny(x, t, ctx, ones, torch.zeros(1, 10, 137), ones, None)
    with pytest.raises(ValueError, match="reference motion must be"):
        tiny(x, t, ctx, ones, torch.zeros(1, 9, 138), ones, None)
    with pytest.raises(ValueError, match="non-finite"):
        bad = ref.clone()
        bad[0, 3, 7] = float("nan")
        tiny(x, t, ctx, ones, bad, ones, None)
    with pytest.raises(ValueError, match=r"\(B, T, 276\)"):
        tiny(torch.zeros(1, 10, 275), t, ctx, ones, ref, ones, None)
    with pytest.raises(ValueError, match="text context"):
        tiny(x, t, torch.zeros(1, 4, 10), ones, ref, ones, None)
    with pytest.raises(ValueError, match="motion mask"):
        tiny(x, t, ctx, torch.ones(1, 11), ref, ones, None)
    with pytest.raises(ValueError, match="one flag per sample"):
        tiny(x, t, ctx, ones, ref, ones, torch.tensor([True, False]))
    with pytest.raises(ValueError, match="timestep"):
        tiny(x, torch.zeros(1, 1), ctx, ones, ref, ones, None)
    with pytest.raises(ValueError, match="unknown model preset 'huge'.*released, tiny, small"):
        get_preset("huge")
    with pytest.raises(ValueError, match="unknown model config field"):
        get_preset("tiny", width=3)
    with pytest.raises(ValueError, match="not divisible"):
        get_preset("tiny", num_heads=3)


@pytest.mark.parametrize("text_mode", [True, False])
def test_bf16_autocast_forward_on_cpu_is_close_to_fp32(tiny, text_mode):
    x, t, ctx, ref = inputs(2, 40, seed=5)
    ones = torch.ones(2, 40)
    with torch.no_grad():
        full = tiny(x, t, ctx, ones, ref, ones, torch.tensor([text_mode, text_mode]))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = tiny(x, t, ctx, ones, ref, ones, torch.tensor([text_mode, text_mode]))
    assert torch.isfinite(half).all()
    rel = (half.float() - full).norm() / full.norm()
    assert rel < 0.05, float(rel)


def test_presets_are_frozen_and_sized_for_cpu():
    with pytest.raises(Exception):
        PRESETS["tiny"].dim = 3
    assert get_preset("small", num_layers=2).num_layers == 2 and PRESETS["small"].num_layers == 8
    n_tiny = sum(p.numel() for p in ViMoGenDiT(get_preset("tiny")).parameters())
    n_small = sum(p.numel() for p in ViMoGenDiT(get_preset("small")).parameters())
    assert n_tiny < n_small < 20_000_000
