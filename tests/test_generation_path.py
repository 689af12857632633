"""The shared generation path: text padding masks reach the network in training and sampling,
generation runs the one guidance implementation, and training normalises with the given statistics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vimogen_core.model import flow
from vimogen_core.motion.representation import Normalizer
from vimogen_core.train.conditioning import TextContext
from vimogen_core.train.config import apply_overrides, get_train_preset
from vimogen_core.train.data import build_dataset
from vimogen_core.train.generate import load_generator
from vimogen_core.train.loop import build_flow, build_model_config, train

FAST = ["batch_size=4", "bf16=false", "steps=2", "warmup_steps=1", "checkpoint_every=2",
        "model.dim=64", "model.ffn_dim=128", "model.num_heads=4", "model.num_layers=2"]


def noisy_padding(monkeypatch, seed: int) -> None:
    """Fill every padded text token with noise, as an encoder with garbage past the prompt would."""
    real_encode = TextContext.encode

    def encode(self, texts, drop=None):
        context, mask = real_encode(self, texts, drop)
        noise = torch.randn(context.shape, generator=torch.Generator().manual_seed(seed))
        return torch.where(mask[..., None], context, noise), mask

    monkeypatch.setattr(TextContext, "encode", encode)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return train(apply_overrides(get_train_preset("tiny"), FAST), tmp_path_factory.mktemp("run"),
                 progress=False).checkpoint


def test_text_context_masks_the_padding():
    text = TextContext("minilm", 32)
    context, mask = text.encode(["a person walks forward", "a person walks forward"], drop=torch.tensor([False, True]))
    assert context.shape == (2, 32, 384) and mask.shape == (2, 32)
    assert 3 < int(mask[0].sum()) < 32  # the prompt's tokens, then padding
    assert torch.equal(mask[1], text.null_mask) and torch.equal(context[1], text.null)
    assert (context[0][~mask[0]] == 0).all()


def test_tiny_generation_ignores_the_values_in_its_text_padding(checkpoint, monkeypatch):
    generator = load_generator(checkpoint)
    assert generator.model_config.mask_text_padding  # what the tiny preset promises
    clean = generator.generate(["a person jumps", "a person does a cartwheel"], 30, steps=3, seed=1)
    noisy_padding(monkeypatch, seed=5)
    padded = generator.generate(["a person jumps", "a person does a cartwheel"], 30, steps=3, seed=1)
    for a, b in zip(clean, padded):
        assert np.abs(a - b).max() < 1e-5


def test_tiny_training_ignores_the_values_in_its_text_padding(tmp_path, monkeypatch):
    config = apply_overrides(get_train_preset("tiny"), FAST)
    clean = torch.load(train(config, tmp_path / "a", progress=False).checkpoint, weights_only=True)["model"]
    noisy_padding(monkeypatch, seed=9)
    padded = torch.load(train(config, tmp_path / "b", progress=False).checkpoint, weights_only=True)["model"]
    assert max(float((clean[k] - padded[k]).abs().max()) for k in clean) < 1e-6


def test_generation_guides_through_the_one_guidance_implementation(checkpoint, monkeypatch):
    calls = []
    real_wrap = flow.ClassifierFreeGuidance.wrap

    def wrap(self, *args, **kwargs):
        calls.append(self.scale)
        return real_wrap(self, *args, **kwargs)

    monkeypatch.setattr(flow.ClassifierFreeGuidance, "wrap", wrap)
    generator = load_generator(checkpoint)
    guided = generator.generate(["a person jumps"], 30, steps=3, cfg_scale=5.0)[0]
    plain = generator.generate(["a person jumps"], 30, steps=3, cfg_scale=1.0)[0]
    assert calls == [5.0, 1.0]
    assert np.abs(guided - plain).max() > 1e-3  # the scale changes what is generated


def test_training_normalises_with_the_given_statistics_file(tmp_path):
    fitted = build_dataset(get_train_preset("tiny")).normalizer
    given = Normalizer(fitted.mean + 0.5, fitted.std * 2.0)
    given.save(tmp_path / "normalizer.npz")
    config = get_train_preset("tiny").replace(normalizer=str(tmp_path / "normalizer.npz"))
    dataset = build_dataset(config)
    np.testing.assert_array_equal(dataset.normalizer.mean, given.mean)
    np.testing.assert_array_equal(dataset.normalizer.std, given.std)
    run = train(apply_overrides(config, FAST), tmp_path / "run", progress=False)
    np.testing.assert_array_equal(load_generator(run.checkpoint).normalizer.std, given.std)


def test_tiny_preset_trains_with_the_joint_space_losses(tmp_path):
    """geometry_weight, set by the tiny preset, changes what a training step does."""
    config = apply_overrides(get_train_preset("tiny"), FAST)
    assert config.geometry_weight > 0
    with_geometry = torch.load(train(config, tmp_path / "a", progress=False).checkpoint, weights_only=True)["model"]
    without = torch.load(train(config.replace(geometry_weight=0.0), tmp_path / "b", progress=False).checkpoint,
                         weights_only=True)["model"]
    assert max(float((with_geometry[k] - without[k]).abs().max()) for k in with_geometry) > 1e-4


def test_tiny_preset_draws_flow_times_uniformly_and_it_changes_training(tmp_path):
    """time_shift, set to 1 by the tiny preset, is the shift of the times a training step draws."""
    tiny, released = get_train_preset("tiny"), get_train_preset("released")
    model_config = build_model_config(tiny)
    tiny_times = build_flow(tiny, model_config).sample_time(20_000, torch.Generator().manual_seed(0))
    released_times = build_flow(released, model_config).sample_time(20_000, torch.Generator().manual_seed(0))
    assert float(tiny_times.median()) == pytest.approx(0.5, abs=0.02)  # uniform over (0, 1]
    assert float(released_times.median()) == pytest.approx(5 / 6, abs=0.02)  # shift 5: half above 5/6
    config = apply_overrides(tiny, FAST)
    uniform = torch.load(train(config, tmp_path / "a", progress=False).checkpoint, weights_only=True)["model"]
    shifted = torch.load(train(config.replace(time_shift=5.0), tmp_path / "b", progress=False).checkpoint,
                         weights_only=True)["model"]
    assert max(float((uniform[k] - shifted[k]).abs().max()) for k in uniform) > 1e-4


def test_generation_guides_with_the_presets_scale_unless_told(checkpoint):
    generator = load_generator(checkpoint)
    assert generator.train_config.guidance_scale == get_train_preset("tiny").guidance_scale != 5.0
    default = generator.generate(["a person jumps"], 30, steps=3)[0]
    preset = generator.generate(["a person jumps"], 30, steps=3, cfg_scale=generator.train_config.guidance_scale)[0]
    released = generator.generate(["a person jumps"], 30, steps=3, cfg_scale=5.0)[0]
    np.testing.assert_array_equal(default, preset)
    assert np.abs(default - released).max() > 1e-3
