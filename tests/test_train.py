"""Training: configuration, deterministic data draws, conditioning rates, exact resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vimogen_core.curation.captions import caption_short_forms
from vimogen_core.errors import MotionDataError
from vimogen_core.motion.representation import REF_INDEX
from vimogen_core.sinks import RecordingSink
from vimogen_core.train.config import apply_overrides, get_train_preset
from vimogen_core.train.batches import rank_batches
from vimogen_core.train.data import BuiltinClipDataset, corrupt_reference, draw_sample
from vimogen_core.train.loop import train

# A very small network keeps the loop tests in seconds; everything else is the tiny preset.
FAST = ["batch_size=4", "bf16=false", "log_every=5", "warmup_steps=5",
        "model.dim=64", "model.ffn_dim=128", "model.num_heads=4", "model.num_layers=2"]


@pytest.fixture(scope="module")
def builtin_dataset():
    return BuiltinClipDataset(get_train_preset("tiny"))


def test_overrides_parse_types_and_reject_unknown_fields():
    config = apply_overrides(get_train_preset("tiny"), ["steps=7", "lr=3e-4", "bf16=off", "noisy_sources=a,b",
                                                        "model.num_layers=3"])
    assert (config.steps, config.lr, config.bf16, config.noisy_sources) == (7, 3e-4, False, ("a", "b"))
    assert config.model_overrides == {"num_layers": 3}
    assert get_train_preset("tiny").steps != 7  # presets are not mutated
    with pytest.raises(ValueError, match="unknown training setting 'stepz'"):
        apply_overrides(config, ["stepz=3"])
    with pytest.raises(ValueError, match="expected int"):
        apply_overrides(config, ["steps=many"])
    with pytest.raises(ValueError, match="unknown training preset"):
        get_train_preset("huge")


def test_builtin_windows_are_normalised_real_clips(builtin_dataset):
    assert len(builtin_dataset) == 30  # 15 clips and their mirror images
    rng = np.random.default_rng(0)
    lengths = []
    for index in range(len(builtin_dataset)):
        item = builtin_dataset.sample(index, rng)
        assert item.features.dtype == np.float32 and item.features.shape[1] == 276
        assert np.isfinite(item.features).all() and len(item.captions) >= 3
        lengths.append(len(item.features))
    assert min(lengths) >= 40 and max(lengths) <= 200
    stacked = np.concatenate([builtin_dataset.normalizer.normalize(f) for f in builtin_dataset.features])
    assert np.abs(stacked.mean(0)).max() < 1e-3  # the normaliser was fitted on these clips


def test_crop_windows_start_like_clips_do():
    """A window from the middle of the real run clip starts at x = y = 0 facing +Y, as every clip
    does and as sampling starts every motion; the motion itself (distances, speeds, poses) is the
    clip's. A window from frame 0, and every whole clip (`redraw`), is the clip as stored."""
    from vimogen_core.motion import rotations as rot
    from vimogen_core.motion.representation import (JOINT_VEL, POSE6D, ROOT_ROT6D, facing_turn_angle,
                                                     features_to_joints)
    from vimogen_core.train.data import training_window

    config = apply_overrides(get_train_preset("tiny"), ["min_frames=60", "max_frames=60"])
    clips = BuiltinClipDataset(config)
    run = clips.features[clips.names.index("run")]
    rng = np.random.default_rng(3)
    moved = 0  # windows that began metres along the run
    for _ in range(20):
        window, _ = training_window(run, rng, config)
        joints = features_to_joints(window)  # (60, 22, 3)
        assert np.abs(joints[0, 0, :2]).max() < 1e-5
        heading = facing_turn_angle(rot.rot6d_to_matrix(torch.from_numpy(window[0, ROOT_ROT6D]).double()))
        assert abs(float(heading)) < 1e-5
        # Where in the clip the window came from: the frame whose body pose it begins with.
        begin = int(np.abs(run[:, POSE6D] - window[0, POSE6D]).sum(1).argmin())
        original = features_to_joints(run[begin:begin + 60])
        moved += bool(np.abs(original[0, 0, :2]).max() > 1.0)
        pairwise = lambda j: np.linalg.norm(j[:, :, None] - j[:, None, :], axis=-1)  # noqa: E731
        assert np.abs(pairwise(joints) - pairwise(original)).max() < 1e-4
        assert np.allclose(np.linalg.norm(window[:, JOINT_VEL].reshape(60, 22, 3), axis=-1),
                           np.linalg.norm(run[begin:begin + 60, JOINT_VEL].reshape(60, 22, 3), axis=-1), atol=1e-5)
        assert np.array_equal(window[:, POSE6D], run[begin:begin + 60, POSE6D])
        if begin == 0:
            assert np.array_equal(window, run[:60])
    assert moved >= 10
    redraw = apply_overrides(config, ["length_rule=redraw"])
    assert np.array_equal(training_window(run, rng, redraw)[0], run)


def test_draws_depend_only_on_seed_and_global_index(builtin_dataset):
    config = get_train_preset("tiny")
    a, b = draw_sample(builtin_dataset, config, 123), draw_sample(builtin_dataset, config, 123)
    assert np.array_equal(a.features, b.features) and a.caption == b.caption and a.time_seed == b.time_seed
    other = draw_sample(builtin_dataset, config.replace(seed=1), 123)
    assert other.time_seed != a.time_seed
    # A global batch split over two ranks holds exactly the samples of the single-process batch.
    config = config.replace(batch_size=6)
    whole = next(rank_batches(builtin_dataset, config, 3, 0, 1))
    halves = [next(rank_batches(builtin_dataset, config, 3, rank, 2)) for rank in (0, 1)]
    assert sum((h.captions for h in halves), []) == whole.captions
    for row, sample in enumerate(r for h in halves for r in range(len(h.captions))):
        half = halves[row // 3]
        n = int(half.x_mask[sample].sum())
        assert torch.equal(half.x0[sample, :n], whole.x0[row, :n])
    with pytest.raises(ValueError, match="does not split evenly"):
        next(rank_batches(builtin_dataset, config, 0, 0, 4))


def test_short_captions_train_the_head_clause_alone_at_their_rate(builtin_dataset):
    assert caption_short_forms("a person walks forward at a relaxed pace.") == ["a person walks forward"]
    assert caption_short_forms("someone strolls straight ahead, arms swinging gently.") == ["someone strolls straight ahead"]
    assert caption_short_forms("a person lying on their back gets up.") == []  # a participle is no head clause
    assert caption_short_forms("a person does a backflip.") == []
    short = get_train_preset("tiny")  # the demo's preset trains short forms
    assert short.short_caption_prob > 0
    plain = short.replace(short_caption_prob=0.0)
    shortened = same = 0
    for index in range(600):
        a, b = draw_sample(builtin_dataset, plain, index), draw_sample(builtin_dataset, short, index)
        # Everything but the caption is drawn as without the option.
        assert np.array_equal(a.features, b.features) and (a.drop_text, a.use_text, a.time_seed) == \
            (b.drop_text, b.use_text, b.time_seed)
        if caption_short_forms(a.caption):
            if b.caption == a.caption:
                same += 1
            else:
                assert b.caption in caption_short_forms(a.caption)
                shortened += 1
        else:
            assert b.caption == a.caption
    assert abs(shortened / (shortened + same) - short.short_caption_prob) < 0.07


def test_routing_and_text_drop_rates(builtin_dataset):
    config = get_train_preset("tiny")
    draws = [draw_sample(builtin_dataset, config, i) for i in range(1500)]
    p_text = np.mean([d.use_text for d in draws])
    p_drop = np.mean([d.drop_text for d in draws])
    assert abs(p_text - 0.8) < 0.04 and abs(p_drop - 0.5) < 0.05
    # Text samples carry an all-zero reference (the model's text-mode convention), motion samples
    # a corrupted copy of their own target.
    for d in draws[:50]:
        if d.use_text:
            assert not d.reference.any()
        else:
            assert np.corrcoef(d.reference.ravel(), d.features[:, REF_INDEX].ravel())[0, 1] > 0.8
    noisy = config.replace(noisy_sources=(builtin_dataset.source,))
    p_noisy = np.mean([draw_sample(builtin_dataset, noisy, i).use_text for i in range(1500)])
    assert abs(p_noisy - 0.4) < 0.05


def test_reference_corruption_touches_a_bounded_share_of_frames(builtin_dataset):
    config = get_train_preset("tiny")
    clean = builtin_dataset.normalizer.normalize(builtin_dataset.features[0][:100]).astype(np.float32)  # (100, 276)
    changed, zeroed = [], []
    for seed in range(200):
        ref = corrupt_reference(clean, np.random.default_rng(seed), config)  # (100, 138)
        assert ref.shape == (100, 138)
        diff = np.abs(ref - clean[:, REF_INDEX]).max(axis=1) > 1e-6
        changed.append(diff.mean())
        zeroed.append((~ref.any(axis=1)).mean())
    # Noise on 0-40% of frames plus 3-8% blended plus 2% dropped: on average about 27%.
    assert 0.15 < np.mean(changed) < 0.35 and max(changed) <= 0.55
    assert 0.005 < np.mean(zeroed) < 0.04


def test_resume_is_exact(tmp_path):
    """20 steps straight == 10 steps, stop, resume from the checkpoint, 10 more (CPU fp32)."""
    config = apply_overrides(get_train_preset("tiny"), FAST + ["steps=20", "checkpoint_every=10"])
    sink = RecordingSink()
    straight = train(config, tmp_path / "straight", sink=sink, progress=False)
    first = train(config.replace(steps=10), tmp_path / "split", progress=False)
    assert first.checkpoint.name == "step_00000010.pt"
    resumed = train(config, tmp_path / "split", resume="auto", progress=False)
    a = torch.load(straight.checkpoint, weights_only=True)
    b = torch.load(resumed.checkpoint, weights_only=True)
    assert a["step"] == b["step"] == 20
    for part in ("model", "ema"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after resume"
    for key, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], b["optimizer"]["state"][key]["exp_avg_sq"])
    # The run really trained: the weights moved and the loss was reported through the sink.
    init = train(config.replace(steps=0), tmp_path / "init", progress=False)
    moved = torch.load(init.checkpoint, weights_only=True)["model"]
    assert max((a["model"][k] - moved[k]).abs().max() for k in moved) > 1e-3
    assert [step for step, _ in sink.metrics] == [5, 10, 15, 20] and all(np.isfinite(m["loss"]) for _, m in sink.metrics)


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    config = apply_overrides(get_train_preset("tiny"), FAST + ["steps=2"])
    done = train(config, tmp_path / "a", progress=False)
    bigger = apply_overrides(config, ["model.num_layers=3", "steps=4"])
    with pytest.raises(MotionDataError, match=r"step_00000002\.pt: checkpoint is for model preset 'tiny'.*num_layers"):
        train(bigger, tmp_path / "b", resume=done.checkpoint, progress=False)
    with pytest.raises(MotionDataError, match="missing.pt: checkpoint file not found"):
        train(config, tmp_path / "c", resume=tmp_path / "missing.pt", progress=False)
