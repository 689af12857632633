"""Flow matching: path, shifted grid, loss weighting and masking, Euler sampler, guidance, smoothing."""
import pytest
import torch

from vimogen_core.model.config import get_preset
from vimogen_core.model.dit import ViMoGenDiT
from vimogen_core.model.flow import (
    ClassifierFreeGuidance, FlowMatching, as_velocity, denoised, euler_sample, inference_times, project_denoised,
    smooth_features,
)


def test_path_target_and_grid():
    flow = FlowMatching(shift=5.0)
    x0, e = torch.randn(3, 4, 276), torch.randn(3, 4, 276)
    s = torch.tensor([0.0, 0.5, 1.0])
    xt = flow.interpolate(x0, e, s)
    assert torch.allclose(xt[0], x0[0]) and torch.allclose(xt[2], e[2])
    assert torch.allclose(xt[1], 0.5 * (x0[1] + e[1]))
    assert flow.grid.shape == (1000,) and 0 < float(flow.grid.min()) and float(flow.grid.max()) == 1.0
    # shift 5 puts half of the grid above s = 5/6
    assert abs(float((flow.grid > 5 / 6).float().mean()) - 0.5) < 0.01
    assert abs(float(flow.grid_weight.mean()) - 1.0) < 1e-5


@pytest.mark.parametrize("weighting, peak", [("time", 0.5), ("schedule", 5 / 6)])
def test_loss_weight_is_a_bell_over_time(weighting, peak):
    flow = FlowMatching(weighting=weighting)
    w = flow.grid_weight
    assert abs(float(w.mean()) - 1.0) < 1e-5 and float(w.min()) >= 0.0
    assert abs(float(flow.grid[w.argmax()]) - peak) < 0.01
    assert float(w[-1]) < 0.01 * float(w.max())  # pure noise (s = 1) carries no weight
    s = torch.tensor([0.2, 0.45, peak, 0.95])
    weights = flow.time_weight(s)
    assert weights.shape == (4,) and float(weights[2]) == pytest.approx(float(w.max()), rel=1e-3)
    inside = (s - peak).abs()
    assert bool((weights[inside.argsort()][:-1] >= weights[inside.argsort()][1:]).all())  # falls off both ways
    with pytest.raises(ValueError, match="unknown loss weighting"):
        FlowMatching(weighting="flat")


def test_loss_weights_root_dims_three_times_and_ignores_padding():
    flow = FlowMatching()
    x0, e = torch.zeros(1, 4, 276), torch.zeros(1, 4, 276)
    s = flow.grid[500:501]
    w = float(flow.time_weight(s))
    pred = torch.zeros(1, 4, 276)
    pred[..., 0] = 1.0
    body = float(flow.loss(pred, x0, e, s, None))
    pred = torch.zeros(1, 4, 276)
    pred[..., 260] = 1.0
    root = float(flow.loss(pred, x0, e, s, None))
    assert abs(body - w / 276) < 1e-6 and abs(root - 3 * w / 276) < 1e-6
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    pred = torch.zeros(1, 4, 276)
    pred[:, 2:] = 1000.0  # errors on padded frames must not count
    assert float(flow.loss(pred, x0, e, s, mask)) == 0.0


def test_euler_sampler_recovers_the_data_for_the_exact_velocity():
    target = torch.randn(2, 10, 276)
    noise = torch.randn(2, 10, 276)
    # For a single data point the optimal velocity at x_s is (x_s - target) / s.
    velocity = lambda x, s: (x - target) / s[:, None, None]  # noqa: E731
    out = euler_sample(velocity, noise, steps=10)
    assert torch.allclose(out, target, atol=1e-4)
    times = inference_times(10)
    assert float(times[0]) == 1.0 and float(times[-1]) == 0.0 and bool((times[1:] < times[:-1]).all())
    # A shape instead of noise: drawn from the generator, reproducibly.
    a = euler_sample(velocity, (2, 10, 276), steps=4, generator=torch.Generator().manual_seed(3))
    b = euler_sample(velocity, (2, 10, 276), steps=4, generator=torch.Generator().manual_seed(3))
    assert a.shape == (2, 10, 276) and torch.equal(a, b)
    mask = torch.ones(2, 10)
    mask[1, 6:] = 0
    assert bool((euler_sample(velocity, noise, steps=2, x_mask=mask)[1, 6:] == 0).all())


def test_guidance_only_in_text_mode():
    cfg = ClassifierFreeGuidance(scale=5.0)
    vc, vu = torch.ones(2, 3, 4), torch.zeros(2, 3, 4)
    out = cfg.combine(vc, vu, torch.tensor([True, False]))
    assert torch.allclose(out[0], torch.full((3, 4), 5.0)) and torch.allclose(out[1], vc[1])


def test_guidance_wrapper_around_the_model():
    torch.manual_seed(0)
    model = ViMoGenDiT(get_preset("tiny")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    calls = []

    def counted(*args):
        calls.append(args[0].shape[0])
        return model(*args)

    counted.config = model.config

    g = torch.Generator().manual_seed(1)
    b, t = 3, 12
    x, context = torch.randn(b, t, 276, generator=g), torch.randn(b, 5, 384, generator=g)
    null = torch.randn(5, 384, generator=g)
    ref, mask = torch.randn(b, t, 138, generator=g), torch.ones(b, t)
    use_text = torch.tensor([True, False, True])
    ref[use_text] = 0.0
    s = torch.full((b,), 0.7)
    velocity = ClassifierFreeGuidance(5.0).wrap(counted, context, null, mask, ref, mask, use_text)
    with torch.no_grad():
        got = velocity(x, s)
        v_c = model(x, s * 1000, context, mask, ref, mask, use_text)
        v_u = model(x, s * 1000, null.expand(b, -1, -1), mask, ref, mask, use_text)
    assert calls == [b + 2]  # one forward: the batch plus the two text-mode samples without text
    want = torch.where(use_text[:, None, None], v_u + 5.0 * (v_c - v_u), v_c)
    # The tiny network outputs a residual over its scaled input (skip); guidance is linear in it,
    # and the velocity is (x - x0) / s of the estimate it stands for.
    assert model.config.prediction == "skip"
    want = (x - denoised(want, x, s, "skip")) / 0.7
    assert (got - want).abs().max() < 1e-4 * want.abs().max()
    out = euler_sample(velocity, (b, t, 276), steps=3, x_mask=mask, generator=torch.Generator().manual_seed(0))
    assert out.shape == (b, t, 276) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="null context"):
        ClassifierFreeGuidance().wrap(model, context, null[:4], mask, ref, mask, use_text)


def test_smoothing_keeps_constants_and_damps_jitter():
    const = torch.full((1, 20, 3), 2.5)
    assert torch.allclose(smooth_features(const), const)
    jitter = torch.zeros(30, 2)
    jitter[::2] = 1.0
    smoothed = smooth_features(jitter)
    assert smoothed.shape == jitter.shape
    assert float(smoothed[5:-5].std()) < 0.2 * float(jitter[5:-5].std())


def test_data_prediction_loss_and_velocity():
    g = torch.Generator().manual_seed(2)
    x0, e = torch.randn(2, 8, 276, generator=g), torch.randn(2, 8, 276, generator=g)
    s = torch.tensor([0.3, 0.9])
    flow = FlowMatching(prediction="data")
    assert float(flow.loss(x0, x0, e, s, None)) == 0.0  # predicting the clean motion exactly costs nothing
    x_s = flow.interpolate(x0, e, s)
    # The exact data prediction turns into the exact velocity e - x0 at any time.
    assert torch.allclose(as_velocity(x0, x_s, s, "data"), e - x0, atol=1e-5)
    assert as_velocity(x0, x_s, s, "velocity") is x0
    with pytest.raises(ValueError, match="prediction"):
        FlowMatching(prediction="noise")


def test_skip_estimate_passes_the_input_at_low_noise_and_its_target_recovers_the_data():
    from vimogen_core.sources.deepmimic import load_builtin_clip

    feats = torch.from_numpy(load_builtin_clip("walk").motion.features().numpy())
    x0 = ((feats - feats.mean(0)) / (feats.std(0) + 1e-4))[None]  # (1, T, 276) unit-variance data
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    flow = FlowMatching(prediction="skip")
    for s_value in (0.001, 0.3, 0.9):
        s = torch.tensor([s_value])
        x_t = flow.interpolate(x0, noise, s)
        target = flow.target(x0, noise, s)
        assert torch.allclose(denoised(target, x_t, s, "skip"), x0, atol=1e-4)
        assert float(flow.loss(target, x0, noise, s, None)) < 1e-8
    # Whatever a network outputs near s = 0, the estimate is its input: nothing to rebuild.
    s = torch.tensor([0.001])
    x_t = flow.interpolate(x0, noise, s)
    garbage = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    assert float((denoised(garbage, x_t, s, "skip") - x0).abs().mean()) < 0.01
    assert float((denoised(garbage, x_t, s, "data") - x0).abs().mean()) > 0.5


def test_denoised_estimates_whose_positions_lag_travel_as_their_velocities_say():
    """A sampler step's denoised estimate of a real walk whose position channels have settled on a
    third of its path (as the network's do at high noise): projected at every step, the sample walks
    the clip's 3.7 m; without, or only above the last step's flow time, it walks the third."""
    from vimogen_core.motion.representation import (
        JOINT_POS, ROOT_TRANS, features_to_joints, features_to_joints_integrated, path_from_root_velocities,
    )
    from vimogen_core.sources.deepmimic import load_builtin_clips

    walk = next(c for c in load_builtin_clips(min_frames=100) if c.name == "walk").motion.features()[:80]
    assert torch.allclose(path_from_root_velocities(walk), walk, atol=1e-5)  # a clip already agrees
    lagging = walk.clone()
    for block in (JOINT_POS, ROOT_TRANS):
        vectors = lagging[:, block].reshape(80, -1, 3)
        vectors[..., :2] = vectors[..., :2] - (2 / 3) * walk[:, ROOT_TRANS][:, None, :2]  # a third of the path
        lagging[:, block] = vectors.reshape(80, -1)
    velocity = lambda x, s: (x - lagging[None]) / s[:, None, None]  # noqa: E731
    noise = torch.randn(1, 80, 276, generator=torch.Generator().manual_seed(0))
    travel = lambda f: float(features_to_joints(f)[-1, 0, 1] - features_to_joints(f)[0, 0, 1])  # noqa: E731
    plain = euler_sample(velocity, noise, steps=10)[0]
    projected = euler_sample(project_denoised(velocity, path_from_root_velocities), noise, steps=10)[0]
    assert abs(travel(plain) - travel(walk) / 3) < 0.01 and travel(walk) > 3.5
    assert abs(travel(projected) - travel(walk)) < 0.01
    # The last step (s = 0.36 -> 0) lands on its own estimate, not projected above s = 0.8.
    late = euler_sample(project_denoised(velocity, path_from_root_velocities, above=0.8), noise, steps=10)[0]
    assert abs(travel(late) - travel(walk) / 3) < 0.01
    # The body about its root and every height are the estimate's own.
    body = lambda f: features_to_joints(f) - features_to_joints(f)[:, :1]  # noqa: E731
    assert torch.allclose(body(projected), body(walk), atol=1e-4)
    gap = lambda f: float((features_to_joints(f) - features_to_joints_integrated(f)).norm(dim=-1).max())  # noqa: E731
    assert gap(plain) > 1.0 and gap(projected) < 0.01
