"""ViMoGen-light: prompt expansion, teacher-sample checks, the text-only student and its few-step
sampling, and the errors a user meets."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vimogen_core.cli import main as cli_main
from vimogen_core.curation.shards import MANIFEST_NAME, ManifestWriter, ShardSetWriter
from vimogen_core.distill.prompts import CompositionalExpander, caption_parts, normalise, training_captions
from vimogen_core.distill.teacher import gate_teacher_sample, validate_teacher_samples
from vimogen_core.errors import MotionDataError
from vimogen_core.model.config import DiTConfig
from vimogen_core.model.dit import ViMoGenDiT
from vimogen_core.model.flow import ClassifierFreeGuidance, euler_sample
from vimogen_core.motion.representation import FEATURE_DIM, JOINT_POS, Normalizer
from vimogen_core.train import checkpoint as ckpt
from vimogen_core.train.config import TrainConfig

SMALL = DiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=2, text_dim=384, mask_text_padding=True, prediction="skip")


# --- prompt expansion ---------------------------------------------------------------------------


def test_expander_never_repeats_a_training_caption_and_is_deterministic():
    from vimogen_core.curation.captions import mirror_caption

    captions = training_captions()
    first = CompositionalExpander(seed=3).expand(captions, 3000)
    assert first == CompositionalExpander(seed=3).expand(captions, 3000)
    assert first != CompositionalExpander(seed=4).expand(captions, 3000)
    assert len(first) == 3000 and len(set(map(normalise, first))) == 3000
    training = {normalise(c) for c in captions} | {normalise(mirror_caption(c)) for c in captions}
    assert not training & set(map(normalise, first))


def test_expander_skips_a_composition_equal_to_a_caption():
    captions = ["a person walks forward.", "someone runs quickly.", "a man jumps."]
    prompts = CompositionalExpander().expand(captions, 10_000)
    assert {"walks", "runs", "jumps"} <= set(caption_parts(captions).actions)
    assert "a person walks forward." not in prompts and "someone runs quickly." not in prompts
    assert any(p.endswith("runs forward quickly.") for p in prompts)  # parts of different captions mixed


# --- teacher-sample checks ----------------------------------------------------------------------


def _clip_features(n: int = 60) -> np.ndarray:
    from vimogen_core.sources.deepmimic import load_builtin_clip

    return load_builtin_clip("walk", min_frames=100).motion.features().numpy()[:n].astype(np.float32)


def _write_teacher_set(directory, corrupt=None) -> str:
    """Two gated teacher samples of a real clip; `corrupt(features)` damages the second as stored."""
    from vimogen_core.curation.gates import motion_statistics
    from vimogen_core.distill.teacher import TeacherSamplingConfig
    from vimogen_core.motion.representation import features_to_joints

    feats = _clip_features()
    directory.mkdir(parents=True, exist_ok=True)
    manifest = ManifestWriter(directory / MANIFEST_NAME)
    shards = ShardSetWriter(directory, "teacher", manifest)
    for i in range(2):
        stats = motion_statistics(features_to_joints(feats), 20.0)
        sample = gate_teacher_sample(f"teacher-{i:06d}", "a person walks forward.", feats, feats, stats, "test",
                                     {"noise_seed": i}, TeacherSamplingConfig().gates, None)
        if i == 1 and corrupt is not None:
            sample.features = corrupt(sample.features.copy())
        shards.add(sample)
    shards.close()
    manifest.close()
    return str(directory / MANIFEST_NAME)


def _with_nan(features):
    features[5, 10] = np.nan
    return features


def test_a_teacher_sample_outside_the_plausible_ranges_is_quarantined_with_its_reason():
    from vimogen_core.curation.gates import motion_statistics
    from vimogen_core.distill.teacher import TeacherSamplingConfig
    from vimogen_core.motion.representation import features_to_joints

    sunk = _clip_features()
    sunk[:, JOINT_POS] -= np.tile([0.0, 0.0, 1.5], 22)  # every joint 1.5 m below the floor
    stats = motion_statistics(features_to_joints(sunk), 20.0)
    result = gate_teacher_sample("teacher-000000", "a person walks forward.", sunk, sunk, stats, "test", {},
                                 TeacherSamplingConfig().gates, None)
    assert "plausible_range" in result.gates and any("min_height" in r for r in result.reasons)


def test_good_teacher_samples_pass_the_check(tmp_path):
    result = validate_teacher_samples(_write_teacher_set(tmp_path))
    assert result.success, result.failed


def test_teacher_samples_with_nans_fail_the_check_and_train_no_student(tmp_path):
    from vimogen_core.distill.student import StudentConfig, train_student

    manifest = _write_teacher_set(tmp_path / "set", corrupt=_with_nan)
    result = validate_teacher_samples(manifest)
    assert not result.success and "expect_column_values_to_be_between(n_nonfinite)" in result.failed
    with pytest.raises(MotionDataError, match="fail their checks.*no student is trained"):
        train_student("unused.pt", manifest, tmp_path / "student", StudentConfig(steps=1))
    assert not (tmp_path / "student").exists()


def test_teacher_samples_of_the_wrong_feature_size_fail_the_check(tmp_path):
    manifest = _write_teacher_set(tmp_path)
    shard = tmp_path / "teacher-00000.npy"
    rows = np.load(shard).shape[0]
    np.save(shard, np.zeros((rows, FEATURE_DIM - 6), np.float32))  # e.g. features without the root velocity
    result = validate_teacher_samples(manifest)
    assert not result.success and "expect_column_values_to_be_in_set(feature_dim)" in result.failed


# --- the student network and its sampler ---------------------------------------------------------


def test_text_only_network_has_no_reference_branch_and_refuses_reference_samples():
    light = ViMoGenDiT(dataclasses.replace(SMALL, reference_branch=False))
    full = ViMoGenDiT(SMALL)
    assert not any("ref_motion" in name or "norm4" in name for name, _ in light.named_parameters())
    assert set(light.state_dict()) < set(full.state_dict())
    x = torch.randn(2, 10, FEATURE_DIM)
    args = (torch.full((2,), 500.0), torch.randn(2, 4, 384), None, torch.zeros(2, 10, 138), torch.ones(2, 10, dtype=torch.bool))
    assert light(x, *args, torch.tensor([True, True])).shape == x.shape
    with pytest.raises(ValueError, match="no reference branch"):
        light(x, *args, torch.tensor([True, False]))


class CountingModel(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.config, self.calls, self.rows = model, model.config, 0, []

    def forward(self, x, *args):
        self.calls += 1
        self.rows.append(x.shape[0])
        return self.model(x, *args)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_few_step_sampler_evaluates_the_student_once_per_step(steps):
    model = CountingModel(ViMoGenDiT(dataclasses.replace(SMALL, reference_branch=False)).eval())
    b, t = 3, 12
    # Guidance built in: scale 1 means the conditional branch alone, one batch-sized forward per step.
    velocity = ClassifierFreeGuidance(1.0).wrap(model, torch.randn(b, 4, 384), torch.zeros(4, 384), None,
                                                torch.zeros(b, t, 138), torch.ones(b, t, dtype=torch.bool),
                                                torch.ones(b, dtype=torch.bool))
    out = euler_sample(velocity, torch.randn(b, t, FEATURE_DIM), steps)
    assert model.calls == steps and model.rows == [b] * steps and torch.isfinite(out).all()


# --- checkpoints and the errors a user meets ------------------------------------------------------


def _save(path, model_config: DiTConfig, preset: str, **train) -> str:
    torch.manual_seed(0)
    model = ViMoGenDiT(model_config)
    config = TrainConfig(model_preset=preset, **train)
    ckpt.save_checkpoint(path, step=1, train_config=config, model_config=model_config, text_encoder="minilm",
                         normalizer=Normalizer(np.zeros(FEATURE_DIM, np.float32), np.ones(FEATURE_DIM, np.float32)),
                         model_state=model.state_dict(), ema_state=model.state_dict(), optimizer_state=None)
    return str(path)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    teacher = _save(root / "teacher.pt", SMALL, "tiny", guidance_scale=2.5)
    student = _save(root / "light.pt", dataclasses.replace(SMALL, reference_branch=False), "light", guidance_scale=1.0,
                    text_drop=0.0)
    return teacher, student


def _run_cli(argv, capsys) -> tuple[int, str]:
    code = cli_main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def test_generate_one_step_on_a_light_checkpoint(checkpoints, tmp_path, capsys):
    import json

    code, err = _run_cli(["generate", "a person walks forward", "--checkpoint", checkpoints[1], "--steps", "1",
                          "--frames", "30", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    written = json.loads((tmp_path / "generated.json").read_text())
    assert written["steps"] == 1 and written["cfg"] == 1.0
    assert np.load(tmp_path / f"{written['motions'][0]['stem']}.features.npy").shape == (30, FEATURE_DIM)


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be at least 1, got 0"),
    (["--ref-motion", "REF"], "reference mode asked of a ViMoGen-light checkpoint"),
    (["--cfg", "5"], "guidance is built into a ViMoGen-light checkpoint"),
])
def test_light_generation_errors_are_one_line(checkpoints, tmp_path, capsys, argv, message):
    ref = tmp_path / "ref.npy"
    np.save(ref, _clip_features(30))
    argv = [str(ref) if a == "REF" else a for a in argv]
    code, err = _run_cli(["generate", "a person walks", "--checkpoint", checkpoints[1], "--out", str(tmp_path / "o"),
                          *argv], capsys)
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_teacher_passed_as_student_and_student_as_teacher_are_one_line_errors(checkpoints, tmp_path, capsys):
    teacher, student = checkpoints
    code, err = _run_cli(["distill", "score", "--teacher", teacher, "--student", teacher], capsys)
    assert code == 2 and "not a ViMoGen-light student" in err and len(err.splitlines()) == 1, err
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a person walks forward.\n")
    code, err = _run_cli(["distill", "sample", "--teacher", student, "--prompts", str(prompts), "--out",
                          str(tmp_path / "s")], capsys)
    assert code == 2 and "a teacher must be a full ViMoGen checkpoint" in err and len(err.splitlines()) == 1, err


def test_teacher_noise_is_the_noise_generation_draws(checkpoints, monkeypatch):
    """A student trains on the noise its teacher sample was drawn from (seed + row of the call)."""
    import vimogen_core.model.flow as flow
    from vimogen_core.distill.student import teacher_noise
    from vimogen_core.train.generate import load_generator

    drawn = {}

    def spy(velocity_fn, noise, steps, x_mask=None, **kwargs):
        drawn["noise"] = noise.clone()
        return noise

    monkeypatch.setattr(flow, "euler_sample", spy)
    load_generator(checkpoints[0]).sample(["a", "b"], [20, 20], [None, None], 1, 2.5, seed=7)
    assert torch.equal(drawn["noise"][1], torch.from_numpy(teacher_noise(20, 8)))


@pytest.mark.slow
def test_distil_end_to_end_on_a_small_teacher(checkpoints, tmp_path):
    """Teacher samples -> checks -> each method's student (2 steps) -> 1-step generation."""
    from vimogen_core.curation.gates import GateConfig
    from vimogen_core.distill.student import METHODS, StudentConfig, load_light_generator, train_student
    from vimogen_core.distill.teacher import TeacherSamplingConfig, sample_teacher
    from vimogen_core.train.generate import load_generator

    teacher = load_generator(checkpoints[0])
    loose = GateConfig(jitter_gated_sources=(), max_bone_deviation=1e9, max_joint_speed=1e9, femur_length_range=(0, 1e9))
    result = sample_teacher(teacher, ["a person walks forward.", "someone jumps."] * 2, tmp_path / "samples",
                            TeacherSamplingConfig(steps=2, frame_choices=(40,), gates=loose), judge=None)
    assert result.n_accepted + result.n_rejected == 4 and (tmp_path / "samples" / "quarantine.parquet").is_file()
    # An untrained teacher's motions fall outside the suite's plausible ranges: train on clip-made samples.
    manifest = _write_teacher_set(tmp_path / "clip_samples")
    for method in METHODS:
        student = train_student(checkpoints[0], manifest, tmp_path / method,
                                StudentConfig(method=method, steps=2, batch_size=2, teacher_share=1.0), progress=False)
        assert student.step == 2 and np.isfinite(student.final_loss)
        motion = load_light_generator(student.checkpoint).generate(["a person walks forward."], 40, steps=1)[0]
        assert motion.shape == (40, FEATURE_DIM) and np.isfinite(motion).all()


def test_distill_prompts_and_validate_commands(tmp_path, capsys):
    out = tmp_path / "prompts.txt"
    code, err = _run_cli(["distill", "prompts", "--out", str(out), "--count", "25"], capsys)
    lines = out.read_text().splitlines()
    assert code == 0 and len(lines) == 25, err
    assert not {normalise(c) for c in training_captions()} & set(map(normalise, lines))
    manifest = _write_teacher_set(tmp_path / "bad", corrupt=_with_nan)
    assert cli_main(["distill", "validate", "--manifest", manifest, "--report", str(tmp_path / "report.json")]) == 1
    assert "n_nonfinite" in (tmp_path / "report.json").read_text()


def test_served_model_answers_with_a_light_checkpoint(checkpoints, tmp_path):
    """The pyfunc serves either kind: a light checkpoint samples in its own few steps, no guidance."""
    import json
    from types import SimpleNamespace

    import pandas as pd

    from orchestration.pyfunc_model import VimogenPyfunc

    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({}))
    model = VimogenPyfunc()
    model.load_context(SimpleNamespace(artifacts={"checkpoint": checkpoints[1], "settings": str(settings)}))
    assert model.steps == 4 and model.cfg_scale is None
    out = model.predict(None, pd.DataFrame({"prompt": ["a person walks forward"], "frames": [30]}))
    assert out["frames"].tolist() == [30] and len(json.loads(out["joints"][0])) == 30


def test_any_length_generation_of_a_light_checkpoint_uses_its_few_steps(checkpoints, monkeypatch):
    """MBench and the served model generate through generate_any_length without a step count."""
    import vimogen_core.model.flow as flow
    from vimogen_core.control.timeline import generate_any_length, trained_window
    from vimogen_core.train.generate import load_generator

    generator = load_generator(checkpoints[1])
    used = []
    original = flow.euler_sample

    def spy(velocity_fn, noise, steps, *args, **kwargs):
        used.append(steps)
        return original(velocity_fn, noise, steps, *args, **kwargs)

    monkeypatch.setattr(flow, "euler_sample", spy)
    generate_any_length(generator, ["a person walks", "a person runs"], [30, trained_window(generator) + 10])
    assert used and set(used) == {4}


def test_distill_commands_read_their_params_sections_and_the_command_line_wins(tmp_path, capsys):
    from pathlib import Path

    from vimogen_core.distill.settings import distill_settings

    repo_params = Path(__file__).resolve().parents[1] / "params.yaml"
    assert distill_settings("train", repo_params).method == "reflow"  # the repository's sections are valid
    assert distill_settings("sample", repo_params).steps == 50
    params = tmp_path / "params.yaml"
    params.write_text("distill_prompts:\n  count: 7\n  seed: 2\ndistill_train:\n  steps: 5\n  batch_size: 3\n")
    out = tmp_path / "prompts.txt"
    assert _run_cli(["distill", "prompts", "--params", str(params), "--out", str(out)], capsys)[0] == 0
    assert len(out.read_text().splitlines()) == 7
    assert _run_cli(["distill", "prompts", "--params", str(params), "--count", "3", "--out", str(out)], capsys)[0] == 0
    assert len(out.read_text().splitlines()) == 3
    config = distill_settings("train", params, {"steps": 9, "lr": None})
    assert (config.steps, config.batch_size, config.lr) == (9, 3, 5e-4)
    params.write_text("distill_train:\n  stepz: 5\n")
    code, err = _run_cli(["distill", "train", "--params", str(params), "--teacher", "t.pt", "--samples", "m.parquet",
                          "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "distill_train: unknown setting 'stepz'" in err and len(err.splitlines()) == 1, err


def test_teacher_estimates_take_their_path_from_the_velocities_and_a_student_s_do_not(checkpoints, monkeypatch):
    """The project sampler moves a full model's high-noise estimates onto their velocity path; a
    student, distilled onto its teacher's finished samples, samples as it was trained."""
    from vimogen_core.distill.student import load_light_generator
    from vimogen_core.train import generate

    calls = []
    original = generate.path_from_root_velocities
    monkeypatch.setattr(generate, "path_from_root_velocities", lambda feats: calls.append(feats.shape) or original(feats))
    teacher, student = checkpoints
    generate.load_generator(teacher).generate(["a person walks forward."], 30, steps=10)
    assert len(calls) == 6  # the steps from s = 1 down to 0.83 of the shifted 10-step grid: s >= 0.8
    calls.clear()
    load_light_generator(student).generate(["a person walks forward."], 30, steps=1)
    assert calls == []
