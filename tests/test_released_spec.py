"""The `released` preset against RELEASED_MODEL.md: key names, shapes and counts, and the forward
pass compared with an independent functional implementation written from the specification."""
import math

import pytest
import torch

from vimogen_core.model.config import DiTConfig, get_preset
from vimogen_core.model.dit import ViMoGenDiT, load_released_state_dict, timestep_sinusoid


def expected_released_keys(d, f, n, text_dim, freq_dim=256, in_dim=276, ref_dim=138, out_dim=276):
    """Key -> shape, built from the specification's table (section 7), not from the module."""
    attn = lambda p: [(f"{p}.{w}.{s}", (d, d) if s == "weight" else (d,)) for w in "qkvo" for s in ("weight", "bias")] \
        + [(f"{p}.norm_q.weight", (d,)), (f"{p}.norm_k.weight", (d,))]
    ffn = lambda p: [(f"{p}.ffn.0.weight", (f, d)), (f"{p}.ffn.0.bias", (f,)), (f"{p}.ffn.2.weight", (d, f)),
                     (f"{p}.ffn.2.bias", (d,))]
    keys = [("motion_embedding.weight", (d, in_dim)), ("motion_embedding.bias", (d,)),
            ("text_embedding.0.weight", (d, text_dim)), ("text_embedding.0.bias", (d,)),
            ("text_embedding.2.weight", (d, d)), ("text_embedding.2.bias", (d,)),
            ("time_embedding.0.weight", (d, freq_dim)), ("time_embedding.0.bias", (d,)),
            ("time_embedding.2.weight", (d, d)), ("time_embedding.2.bias", (d,)),
            ("time_projection.1.weight", (6 * d, d)), ("time_projection.1.bias", (6 * d,)),
            ("motion_pos_embedding.pe", (5000, 1, d)),
            ("ref_motion_embedding.weight", (d, ref_dim)), ("ref_motion_embedding.bias", (d,)),
            ("ref_motion_pos_embedding.pe", (5000, 1, d))]
    for k in range(n // 2):
        p = f"ref_motion_encoder.{k}"
        keys += [(f"{p}.modulation", (1, 6, d))] + attn(f"{p}.self_attn") + ffn(p)
    for k in range(n):
        p = f"blocks.{k}"
        keys += [(f"{p}.modulation", (1, 6, d))] + attn(f"{p}.self_attn") + [(f"{p}.norm3.weight", (d,)),
                 (f"{p}.norm3.bias", (d,))] + attn(f"{p}.cross_attn") + ffn(p) + attn(f"{p}.ref_motion_cross_attn") \
            + [(f"{p}.norm4.weight", (d,)), (f"{p}.norm4.bias", (d,))]
    keys += [("motion_head.modulation", (1, 2, d)), ("motion_head.head.weight", (out_dim, d)),
             ("motion_head.head.bias", (out_dim,))]
    return dict(keys)


def test_released_preset_parameter_count_and_state_dict_names():
    with torch.device("meta"):
        model = ViMoGenDiT(get_preset("released"))
    assert sum(p.numel() for p in model.parameters()) == 2_258_214_420
    state = model.state_dict()
    expected = expected_released_keys(1536, 8960, 30, 4096)
    assert len(state) == len(expected) == 1414
    assert list(state) == list(expected)  # same names, same order as the released file
    assert {k: tuple(v.shape) for k, v in state.items()} == expected


SMALL_RELEASED = dict(dim=64, ffn_dim=96, num_heads=4, num_layers=3, text_dim=32)


def test_released_naming_loads_with_no_missing_or_unexpected_keys(tmp_path):
    cfg = get_preset("released", **SMALL_RELEASED)
    source = ViMoGenDiT(cfg)
    # The released checkpoint most likely holds bf16 tensors, position tables included.
    saved = {k: v.to(torch.bfloat16) for k, v in source.state_dict().items()}
    saved["motion_pos_embedding.pe"] += 0.01  # a table that differs from the recomputed one must win
    torch.save(saved, tmp_path / "released.pt")
    target = ViMoGenDiT(cfg)
    report = load_released_state_dict(target, tmp_path / "released.pt")
    assert report.ok and (report.missing, report.unexpected, report.mismatched) == ([], [], []), str(report)
    assert torch.equal(target.blocks[2].ffn[2].weight, saved["blocks.2.ffn.2.weight"].float())
    assert torch.equal(target.motion_pos_embedding.pe, saved["motion_pos_embedding.pe"].float())

    # safetensors, without the position tables: they are recomputed, not reported missing.
    from safetensors.torch import save_file

    no_tables = {k: v.contiguous() for k, v in saved.items() if not k.endswith(".pe")}
    save_file(no_tables, str(tmp_path / "released.safetensors"))
    fresh = ViMoGenDiT(cfg)
    assert load_released_state_dict(fresh, tmp_path / "released.safetensors").ok
    assert torch.equal(fresh.motion_pos_embedding.pe, source.motion_pos_embedding.pe)
    assert torch.equal(fresh.motion_head.head.weight, saved["motion_head.head.weight"].float())

    # A DDP-style wrapped file loads by name too.
    torch.save({"state_dict": {f"module.{k}": v for k, v in saved.items()}}, tmp_path / "wrapped.pt")
    assert load_released_state_dict(ViMoGenDiT(cfg), tmp_path / "wrapped.pt").ok


def test_a_state_dict_built_from_the_specification_loads_by_name():
    # Names and shapes from section 7's rules (not from the module), at a reduced width.
    spec = expected_released_keys(64, 96, 3, 32)
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=g).to(torch.bfloat16) for k, shape in spec.items()}
    model = ViMoGenDiT(get_preset("released", **SMALL_RELEASED))
    report = load_released_state_dict(model, state, strict=True)
    assert report.ok
    assert all(torch.equal(v, state[k].float()) for k, v in model.state_dict().items())


def test_loader_reports_what_does_not_fit(tmp_path):
    cfg = get_preset("released", **SMALL_RELEASED)
    state = ViMoGenDiT(cfg).state_dict()
    broken = {k: v for k, v in state.items() if k != "blocks.1.norm4.bias"}
    broken["blocks.9.extra"] = torch.zeros(1)
    report = load_released_state_dict(ViMoGenDiT(cfg), broken)
    assert report.missing == ["blocks.1.norm4.bias"] and report.unexpected == ["blocks.9.extra"]
    assert not report.ok and "1 missing (e.g. blocks.1.norm4.bias)" in str(report)

    other = ViMoGenDiT(get_preset("released", **{**SMALL_RELEASED, "dim": 32})).state_dict()  # another width
    torch.save(other, tmp_path / "other.pt")
    report = load_released_state_dict(ViMoGenDiT(cfg), tmp_path / "other.pt")
    assert "motion_embedding.weight: (32, 276) vs (64, 276)" in report.mismatched
    target = ViMoGenDiT(cfg)
    before = target.blocks[0].ffn[0].weight.clone()
    with pytest.raises(ValueError, match=r"other\.pt: weights do not fit the model: .*shape-mismatched"):
        load_released_state_dict(target, tmp_path / "other.pt", strict=True)
    assert torch.equal(target.blocks[0].ffn[0].weight, before)  # strict: nothing was loaded
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_released_state_dict(target, tmp_path / "nowhere.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt: refused to load: not a torch file"):
        load_released_state_dict(target, tmp_path / "garbage.pt")


def spec_forward(sd, cfg: DiTConfig, x, timestep, context, x_mask, ref, ref_mask, attend):
    """RELEASED_MODEL.md section 4 written as plain tensor maths, one sample at a time."""
    d, heads, eps = cfg.dim, cfg.num_heads, 1e-6
    hd = d // heads
    lin = lambda z, p: z @ sd[p + ".weight"].T + sd[p + ".bias"]
    ln = lambda z: (z - z.mean(-1, keepdim=True)) / torch.sqrt(z.var(-1, unbiased=False, keepdim=True) + eps)
    ln_affine = lambda z, p: ln(z) * sd[p + ".weight"] + sd[p + ".bias"]
    rms = lambda z, w: z / torch.sqrt(z.pow(2).mean(-1, keepdim=True) + eps) * w
    gelu = lambda z: 0.5 * z * (1 + torch.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))
    silu = lambda z: z * torch.sigmoid(z)

    def attention(p, xq, xkv, n_keys):
        q = rms(lin(xq, p + ".q"), sd[p + ".norm_q.weight"])
        k = rms(lin(xkv, p + ".k"), sd[p + ".norm_k.weight"])[:n_keys]
        v = lin(xkv, p + ".v")[:n_keys]
        outs = []
        for j in range(heads):
            cols = slice(j * hd, (j + 1) * hd)
            w = torch.softmax(q[:, cols] @ k[:, cols].T / math.sqrt(hd), dim=-1)
            outs.append(w @ v[:, cols])
        return lin(torch.cat(outs, -1), p + ".o")

    half = cfg.freq_dim // 2
    omega = 10000.0 ** (-torch.arange(half, dtype=torch.float64) / half)
    outputs = []
    t_frames = x.shape[1]
    for b in range(x.shape[0]):
        tb = timestep[b if timestep.numel() > 1 else 0].double()
        sinus = torch.cat([torch.cos(tb * omega), torch.sin(tb * omega)]).float()
        e = lin(silu(lin(sinus, "time_embedding.0")), "time_embedding.2")
        e0 = lin(silu(e), "time_projection.1").reshape(6, d)
        len_x = int(x_mask[b].sum()) if x_mask is not None else t_frames
        len_ref = int(ref_mask[b].sum())
        use_text = bool(attend[b]) if attend is not None else float((ref[b] ** 2).sum()) == 0.0
        c = lin(gelu(lin(context[b], "text_embedding.0")), "text_embedding.2")
        h = lin(x[b], "motion_embedding") + sd["motion_pos_embedding.pe"][:t_frames, 0]
        r = lin(ref[b], "ref_motion_embedding") + sd["ref_motion_pos_embedding.pe"][:t_frames, 0]
        for k in range(cfg.num_layers // 2):
            p = f"ref_motion_encoder.{k}"
            sh_a, sc_a, g_a, sh_f, sc_f, g_f = sd[p + ".modulation"][0] + e0
            y = ln(r) * (1 + sc_a) + sh_a
            r = r + attention(p + ".self_attn", y, y, len_x) * g_a
            r = r + lin(gelu(lin(ln(r) * (1 + sc_f) + sh_f, p + ".ffn.0")), p + ".ffn.2") * g_f
        for k in range(cfg.num_layers):
            p = f"blocks.{k}"
            sh_a, sc_a, g_a, sh_f, sc_f, g_f = sd[p + ".modulation"][0] + e0
            y = ln(h) * (1 + sc_a) + sh_a
            h = h + attention(p + ".self_attn", y, y, len_x) * g_a
            if use_text:
                h = h + attention(p + ".cross_attn", ln_affine(h, p + ".norm3"), c, c.shape[0])
            else:
                h = h + attention(p + ".ref_motion_cross_attn", ln_affine(h, p + ".norm4"), r, len_ref)
            h = h + lin(gelu(lin(ln(h) * (1 + sc_f) + sh_f, p + ".ffn.0")), p + ".ffn.2") * g_f
        sh, sc = sd["motion_head.modulation"][0] + e
        outputs.append(lin(ln(h) * (1 + sc) + sh, "motion_head.head"))
    return torch.stack(outputs)


@pytest.fixture(scope="module")
def small_released():
    """The released architecture, every quirk kept, at a size the test can afford."""
    cfg = get_preset("released", dim=64, ffn_dim=96, num_heads=4, num_layers=2, text_dim=32)
    torch.manual_seed(0)
    model = ViMoGenDiT(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.3 if "modulation" in name else 0.15)
    return cfg, model


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("mode", ["text", "reference", "mixed", "derived"])
def test_forward_matches_the_specification(small_released, batch, mode):
    cfg, model = small_released
    g = torch.Generator().manual_seed(batch * 7 + len(mode))
    t, length = 12, 7
    x = torch.randn(batch, t, 276, generator=g)
    context = torch.randn(batch, length, cfg.text_dim, generator=g)
    context[:, 5:] = 0.0  # zero-padded text, attended by the released model
    x_mask = torch.ones(batch, t)
    x_mask[-1, 9:] = 0  # padding in the last sample
    ref = torch.randn(batch, t, 138, generator=g)
    ref_mask = torch.ones(batch, t)
    ref_mask[0, 6:] = 0  # reference shorter than the motion
    attend = torch.full((batch,), mode == "text")
    if mode == "mixed":  # one sample per branch (with batch 1: the reference branch)
        attend[0] = batch > 1
    if mode == "derived":  # routing from "reference entirely zero"
        ref[0] = 0.0
        attend = None
    timestep = torch.rand(batch, generator=g) * 1000
    with torch.no_grad():
        got = model(x, timestep, context, x_mask, ref, ref_mask, attend)
        want = spec_forward(model.state_dict(), cfg, x, timestep, context, x_mask, ref, ref_mask, attend)
    rel = (got - want).norm() / want.norm()
    assert rel < 1e-5, float(rel)


def test_length_one_timestep_broadcasts(small_released):
    cfg, model = small_released
    x, ctx = torch.randn(2, 8, 276), torch.randn(2, 5, cfg.text_dim)
    ref, mask = torch.zeros(2, 8, 138), torch.ones(2, 8)
    with torch.no_grad():
        one = model(x, torch.tensor([321.5]), ctx, mask, ref, mask, None)
        each = model(x, torch.tensor([321.5, 321.5]), ctx, mask, ref, mask, None)
    assert torch.allclose(one, each, rtol=1e-5, atol=1e-5)


def test_position_table_and_timestep_sinusoid_follow_the_recipes():
    d = 64
    model = ViMoGenDiT(get_preset("released", dim=d, ffn_dim=96, num_heads=4, num_layers=2, text_dim=32))
    pe = model.motion_pos_embedding.pe  # (5000, 1, d)
    assert pe.shape == (5000, 1, d) and pe.dtype == torch.float32
    # Section 4.2 in fp32: w_i = exp(2i * (-ln 10000 / d)); even channels sin(p w_i), odd cos(p w_i).
    factor = torch.tensor(-math.log(10000.0) / d, dtype=torch.float32)
    w = torch.exp((2 * torch.arange(d // 2)).float() * factor)  # (d/2,)
    angle = torch.arange(5000).float()[:, None] * w[None]  # (5000, d/2)
    table = torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).reshape(5000, 1, d)  # interleaved
    assert torch.equal(pe, table)
    assert torch.equal(model.ref_motion_pos_embedding.pe, table)
    angle64 = torch.arange(5000, dtype=torch.float64)[:, None] * torch.exp(
        (2 * torch.arange(d // 2)).double() * (-math.log(10000.0) / d))[None]
    table64 = torch.stack([torch.sin(angle64), torch.cos(angle64)], -1).reshape(5000, 1, d)
    assert (table64 - pe).abs().max() > 1e-5  # float64 differs: only the fp32 recipe gives the released table

    stamps = torch.tensor([0.0, 1.5, 777.25, 999.9])
    s = timestep_sinusoid(stamps, 256)  # (4, 256)
    omega = 10000.0 ** (-torch.arange(128, dtype=torch.float64) / 128)
    angle64 = stamps.double()[:, None] * omega
    assert s.dtype == torch.float32
    assert torch.equal(s, torch.cat([torch.cos(angle64), torch.sin(angle64)], -1).float())  # cos block, then sin
    angle32 = stamps[:, None] * omega.float()
    assert not torch.equal(s, torch.cat([torch.cos(angle32), torch.sin(angle32)], -1))  # fp32 would differ
