"""Generation from a trained checkpoint: outputs, batch invariance, bad input, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vimogen_core.cli import main
from vimogen_core.errors import MotionDataError
from vimogen_core.motion.representation import features_to_joints
from vimogen_core.sources.deepmimic import load_builtin_clip
from vimogen_core.train.config import apply_overrides, get_train_preset
from vimogen_core.train.generate import load_generator
from vimogen_core.train.loop import train

FAST = ["batch_size=4", "bf16=false", "steps=3", "warmup_steps=1",
        "model.dim=64", "model.ffn_dim=128", "model.num_heads=4", "model.num_layers=2"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = apply_overrides(get_train_preset("tiny"), FAST)
    return train(config, tmp_path_factory.mktemp("run"), progress=False).checkpoint


@pytest.fixture(scope="module")
def generator(checkpoint):
    return load_generator(checkpoint)


@pytest.fixture(scope="module")
def walk_features():
    return load_builtin_clip("walk").motion.features().numpy()  # (T, 276) real features


def test_outputs_are_denormalised_features_of_the_requested_lengths(generator):
    motions = generator.generate(["a person walks forward", "a person does a cartwheel"], [30, 45], steps=4)
    assert [m.shape for m in motions] == [(30, 276), (45, 276)]
    assert all(m.dtype == np.float32 and np.isfinite(m).all() for m in motions)
    # De-normalised: the position channels are in metres around the training clips' statistics.
    pelvis_height = motions[0][:, 128]
    assert np.abs(pelvis_height - generator.normalizer.mean[128]).max() < 50 * generator.normalizer.std[128]


def test_a_motion_does_not_depend_on_its_batch(generator, walk_features):
    """Same seed and position: batched with longer motions (text and reference mode) or alone, same result."""
    alone = generator.generate(["a person jumps"], 30, steps=3, seed=7)[0]
    batched = generator.generate(["a person jumps", "a person crawls slowly on the floor", "x"], [30, 80, 60],
                                 ref_motions=[None, None, walk_features], steps=3, seed=7, batch_size=3)[0]
    assert np.abs(alone - batched).max() < 1e-4 * (1 + np.abs(alone).max())
    other_seed = generator.generate(["a person jumps"], 30, steps=3, seed=8)[0]
    assert np.abs(alone - other_seed).max() > 1e-2


def test_reference_mode_ignores_the_text(generator, walk_features):
    a = generator.generate(["a person walks"], 40, ref_motions=[walk_features], steps=3)[0]
    b = generator.generate(["a person does a backflip"], 40, ref_motions=[walk_features], steps=3)[0]
    assert np.abs(a - b).max() < 1e-5


def test_bad_requests_are_refused_with_clear_errors(generator, walk_features):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generator.generate(["a person walks", "   "], 20, steps=2)
    with pytest.raises(ValueError, match="no prompts"):
        generator.generate([], 20)
    with pytest.raises(ValueError, match="frame count 0 out of range"):
        generator.generate(["a person walks"], 0)
    with pytest.raises(MotionDataError, match=r"reference motion 0: expected features of shape \(T, 276\), got \(20, 138\)"):
        generator.generate(["a person walks"], 40, ref_motions=[walk_features[:20, :138]])
    broken = walk_features.copy()
    broken[5, 3] = np.nan
    with pytest.raises(MotionDataError, match="reference motion 0: non-finite values in 1 frame"):
        generator.generate(["a person walks"], 40, ref_motions=[broken])


def test_bad_checkpoints_are_refused_naming_the_file(checkpoint, tmp_path):
    with pytest.raises(MotionDataError, match=r"nothing\.pt: checkpoint file not found"):
        load_generator(tmp_path / "nothing.pt")
    with pytest.raises(MotionDataError, match=r"holds model preset 'tiny', expected 'small'"):
        load_generator(checkpoint, expected_preset="small")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:5000])
    with pytest.raises(MotionDataError, match=r"truncated\.pt: not a readable training checkpoint"):
        load_generator(truncated)
    # A checkpoint whose recorded preset is another size than its weights.
    payload = torch.load(checkpoint, weights_only=True)
    config = json.loads(payload["model_config"])
    config["num_layers"] += 1
    payload["model_config"] = json.dumps(config)
    mismatched = tmp_path / "mismatched.pt"
    torch.save(payload, mismatched)
    with pytest.raises(MotionDataError, match=r"mismatched\.pt: weights do not fit model preset 'tiny'.*missing"):
        load_generator(mismatched)


def test_cli_writes_features_joints_and_exports(checkpoint, tmp_path, walk_features, capsys):
    out = tmp_path / "gen"
    assert main(["generate", "a person does a cartwheel", "--frames", "24", "--steps", "2", "--checkpoint",
                 str(checkpoint), "--out", str(out), "--export", "bvh,npz,gif"]) == 0
    stem = "000_a_person_does_a_cartwheel"
    feats = np.load(out / f"{stem}.features.npy")
    joints = np.load(out / f"{stem}.joints.npy")
    assert feats.shape == (24, 276) and joints.shape == (24, 22, 3)
    assert np.allclose(joints, features_to_joints(torch.from_numpy(feats)).numpy(), atol=1e-6)
    assert (out / f"{stem}.bvh").read_text().startswith("HIERARCHY")
    assert set(np.load(out / f"{stem}.npz").files) >= {"poses", "trans"}
    assert (out / f"{stem}.gif").read_bytes()[:6] == b"GIF89a"

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a person walks\n\na person runs\n")
    ref = tmp_path / "walk.npy"
    np.save(ref, walk_features)
    assert main(["generate", "--prompts", str(prompts), "--ref-motion", str(ref), "--frames", "20", "--steps", "2",
                 "--checkpoint", str(checkpoint), "--out", str(out / "batch")]) == 0
    index = json.loads((out / "batch" / "generated.json").read_text())
    assert [m["prompt"] for m in index["motions"]] == ["a person walks", "a person runs"]
    assert {m["mode"] for m in index["motions"]} == {"reference"}

    capsys.readouterr()
    assert main(["generate", "", "--checkpoint", str(checkpoint), "--out", str(out / "x")]) == 2
    assert main(["generate", "hi", "--checkpoint", str(tmp_path / "gone.pt"), "--out", str(out / "x")]) == 2
    np.save(tmp_path / "bad.npy", walk_features[:, :100])
    assert main(["generate", "hi", "--ref-motion", str(tmp_path / "bad.npy"), "--checkpoint", str(checkpoint),
                 "--out", str(out / "x")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors[0] == "vimogen: error: prompt 0 is empty; text mode needs a description of the motion"
    assert errors[1] == f"vimogen: error: {tmp_path / 'gone.pt'}: checkpoint file not found"
    assert errors[2].startswith(f"vimogen: error: {tmp_path / 'bad.npy'}: expected features of shape (T, 276)")
