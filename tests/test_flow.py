"""Flow matching: path, shifted grid, loss weighting and masking, Euler sampler, guidance, smoothing."""
import torch

from vimogen_core.model.flow import ClassifierFreeGuidance, FlowMatching, euler_sample, inference_times, smooth_features


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
    assert flow.grid_weight[500] > flow.grid_weight[0] and flow.grid_weight[500] > flow.grid_weight[-1]


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


def test_guidance_only_in_text_mode():
    cfg = ClassifierFreeGuidance(scale=5.0)
    vc, vu = torch.ones(2, 3, 4), torch.zeros(2, 3, 4)
    out = cfg.combine(vc, vu, torch.tensor([True, False]))
    assert torch.allclose(out[0], torch.full((3, 4), 5.0)) and torch.allclose(out[1], vc[1])


def test_smoothing_keeps_constants_and_damps_jitter():
    const = torch.full((1, 20, 3), 2.5)
    assert torch.allclose(smooth_features(const), const)
    jitter = torch.zeros(30, 2)
    jitter[::2] = 1.0
    smoothed = smooth_features(jitter)
    assert smoothed.shape == jitter.shape
    assert float(smoothed[5:-5].std()) < 0.2 * float(jitter[5:-5].std())
