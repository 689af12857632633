"""Motion control: constraints from the real clips are met in centimetres, long timelines join
without teleports, and bad input is refused before any sampling."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vimogen_core.cli import main
from vimogen_core.control import files
from vimogen_core.control.constraints import (JOINT_GROUPS, ConstraintError, KeepJoints, Keyframes, Prefix,
                                              RootTrajectory, combine, pose_in_heading_frame)
from vimogen_core.control.sampling import generate_controlled, spread_correction
from vimogen_core.control.timeline import Segment, generate_timeline, windows
from vimogen_core.model.flow import euler_sample
from vimogen_core.motion import rotations as rot
from vimogen_core.motion.representation import encode_features, features_to_joints, turn_and_move_features
from vimogen_core.sources.deepmimic import load_builtin_clips
from vimogen_core.train.config import apply_overrides, get_train_preset
from vimogen_core.train.generate import load_generator
from vimogen_core.train.loop import train

FAST = ["batch_size=4", "bf16=false", "steps=2", "warmup_steps=1", "checkpoint_every=2",
        "model.dim=64", "model.ffn_dim=128", "model.num_heads=4", "model.num_layers=2"]
FRAMES = 100


@pytest.fixture(scope="module")
def clips():
    return {c.name: c.motion.features().numpy()[:FRAMES] for c in load_builtin_clips(min_frames=FRAMES + 1)}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return train(apply_overrides(get_train_preset("tiny"), FAST), tmp_path_factory.mktemp("run"),
                 progress=False).checkpoint


@pytest.fixture(scope="module")
def generator(checkpoint):
    return load_generator(checkpoint)


def joints(feats):
    return features_to_joints(np.asarray(feats, dtype=np.float64))


def test_turn_and_move_is_exactly_the_moved_motion_encoded():
    motion = load_builtin_clips()[0].motion
    turn = rot.rotation_about_z(torch.tensor(0.7, dtype=torch.float64)).to(motion.joints.dtype)
    moved_joints = motion.joints @ turn.T + torch.tensor([1.0, -2.0, 0.0], dtype=motion.joints.dtype)
    moved_local = motion.local_rotmats.clone()
    moved_local[:, 0] = turn @ moved_local[:, 0]
    expected = encode_features(moved_local, moved_joints)
    got = turn_and_move_features(encode_features(motion.local_rotmats, motion.joints), 0.7, (1.0, -2.0))
    assert float((got - expected).abs().max()) < 1e-9


def test_spread_correction_is_exact_where_pinned_and_continuous_elsewhere():
    offset = np.zeros((60, 1))
    pinned = np.zeros((60, 1), bool)
    pinned[30] = True
    offset[30] = 0.2
    out = spread_correction(offset, pinned)
    assert out[30, 0] == pytest.approx(0.2)
    assert np.abs(np.diff(out[:, 0])).max() < 0.02  # no pop: at most 2 cm per frame around a 20 cm correction
    assert abs(out[0, 0]) < 1e-3 and abs(out[-1, 0]) < 1e-3


def test_keyframes_trajectory_and_kept_joints_from_real_clips_are_met(generator, clips):
    walk, kick = clips["walk"], clips["kick"]
    frames = (25, 50, 75)
    keyframes = Keyframes(frames=frames, positions=joints(kick)[list(frames)][:, [0, 20, 21]],
                          joints=("pelvis", "left_wrist", "right_wrist"))
    theta = joints(walk)[:, 0, 1] / 3.0  # the walk's own path bent onto a 3 m arc
    path = np.stack([3.0 - (3.0 - joints(walk)[:, 0, 0]) * np.cos(theta), (3.0 - joints(walk)[:, 0, 0]) * np.sin(theta)], 1)
    keep = KeepJoints(kick, "upper")
    requests = [combine([keyframes], FRAMES), combine([RootTrajectory(xy=path)], FRAMES), combine([keep], FRAMES)]
    for method in ("inpaint", "guidance"):
        out = generate_controlled(generator, ["a person kicks", "a person walks forward", "a person walks"], requests,
                                  steps=3, method=method)
        kf = np.linalg.norm(joints(out[0])[list(frames)][:, [0, 20, 21]] - keyframes.positions, axis=-1)
        assert kf.max() < 0.02, (method, kf.max())
        traj = np.linalg.norm(joints(out[1])[:, 0, :2] - path, axis=-1)
        assert traj.mean() < 0.10 and traj.max() < 0.25, (method, traj.mean(), traj.max())
        upper = np.array(JOINT_GROUPS["upper"])
        # Without the pelvis the upper body is kept relative to it, turned with its heading.
        kept = np.linalg.norm(pose_in_heading_frame(out[2])[:, upper] - pose_in_heading_frame(kick)[:, upper], axis=-1)
        assert kept.max() < 0.01, (method, kept.max())
        # The features stay one consistent motion: velocities are differences of positions.
        f = out[1]
        assert np.abs(f[1:, 126:192] - f[:-1, 126:192] - f[:-1, 192:258]).max() < 1e-4


def test_kept_lower_body_stays_where_the_source_is(generator, clips):
    kick = clips["kick"]
    out = generate_controlled(generator, ["a person waves"], [combine([KeepJoints(kick, "lower")], FRAMES)], steps=3)[0]
    lower = np.array(JOINT_GROUPS["lower"])
    assert np.linalg.norm(joints(out)[:, lower] - joints(kick)[:, lower], axis=-1).max() < 0.01


def test_continuation_starts_with_the_source(generator, clips):
    prefix = clips["run"][:30]
    out = generate_controlled(generator, ["a person keeps running"], [combine([Prefix(prefix)], 80)], steps=3)[0]
    assert len(out) == 80
    assert np.linalg.norm(joints(out)[:30] - joints(prefix), axis=-1).max() < 0.01


def test_a_long_timeline_is_one_motion_without_teleports(generator):
    segments = [Segment("a person walks forward", 12), Segment("a person jumps", 4), Segment("a person runs", 14)]
    feats = generate_timeline(generator, segments, steps=2)
    assert feats.shape == (600, 276)
    pelvis_step = np.linalg.norm(np.diff(joints(feats)[:, 0], axis=0), axis=-1)
    assert pelvis_step.max() < 0.6  # 12 m/s at 20 fps: no window starts somewhere else
    assert joints(feats)[:, [7, 8, 10, 11], 2].min() >= -1e-6  # ankles and feet above the floor
    # Windows of at most 200 frames, none short, each after the first continuing 20 frames.
    plan = windows([240, 80, 280], 200, 20)
    assert [count for _, _, count in plan] == [120, 120, 80, 140, 140]


def never_sample(*args, **kwargs):
    raise AssertionError("sampling started before the input was checked")


@pytest.mark.parametrize("constraint, message", [
    (Keyframes(frames=(120,), positions=np.zeros((1, 22, 3))), "outside the motion's 0..99"),
    (Keyframes(frames=(10,), positions=np.full((1, 22, 3), np.nan)), "finite"),
    (RootTrajectory(xy=np.stack([np.linspace(0, 80, 100), np.zeros(100)], 1)), "at most 12 m/s"),
    (KeepJoints(np.zeros((50, 276)), ["left_tail"]), "unknown joint 'left_tail'"),
])
def test_bad_constraints_fail_before_sampling(generator, monkeypatch, constraint, message):
    monkeypatch.setattr(generator, "sample", never_sample)
    with pytest.raises(ConstraintError, match=message):
        generate_controlled(generator, ["a person walks"], [combine([constraint], FRAMES)])


def test_contradictory_constraints_and_an_empty_timeline_are_refused(generator, monkeypatch):
    monkeypatch.setattr(generator, "sample", never_sample)
    pinned = Keyframes(frames=(10,), positions=np.array([[[1.0, 1.0, 0.9]]]), joints=("pelvis",))
    path = RootTrajectory(xy=np.zeros((100, 2)))
    with pytest.raises(ConstraintError, match="contradictory constraints: keyframes and trajectory"):
        combine([pinned, path], FRAMES)
    with pytest.raises(ConstraintError, match="no segments"):
        generate_timeline(generator, [])


def test_cli_control_flags_read_the_documented_files(checkpoint, clips, tmp_path, capsys):
    np.save(tmp_path / "kick.npy", clips["kick"])
    (tmp_path / "poses.json").write_text(json.dumps({"frames": [10, 40], "poses": "kick.npy"}))
    assert np.array_equal(files.read_keyframes(tmp_path / "poses.json").poses, clips["kick"][[10, 40]])
    wrists = joints(clips["kick"])[[10, 40]][:, [20, 21]]
    (tmp_path / "keys.json").write_text(json.dumps({"frames": [10, 40], "joints": ["left_wrist", "right_wrist"],
                                                    "positions": wrists.tolist()}))
    (tmp_path / "path.json").write_text(json.dumps({"waypoints": [[0, 0], [0, 2.0]], "times": [0.5, 4.0]}))
    code = main(["generate", "a person walks", "--frames", "90", "--steps", "2", "--checkpoint", str(checkpoint),
                 "--keyframes", str(tmp_path / "keys.json"), "--trajectory", str(tmp_path / "path.json"),
                 "--out", str(tmp_path / "out")])
    assert code == 0
    index = json.loads((tmp_path / "out" / "generated.json").read_text())["motions"][0]
    feats = np.load(tmp_path / "out" / f"{index['stem']}.features.npy")
    assert index["control"] == ["Keyframes", "RootTrajectory"] and len(feats) == 90
    assert np.linalg.norm(joints(feats)[[10, 40]][:, [20, 21]] - wrists, axis=-1).max() < 0.02
    assert np.linalg.norm(joints(feats)[80, 0, :2] - [0.0, 2.0]) < 0.02

    (tmp_path / "timeline.json").write_text(json.dumps({"segments": [{"prompt": "walk", "seconds": 3},
                                                                     {"prompt": "jump", "seconds": 2}]}))
    assert main(["generate", "--timeline", str(tmp_path / "timeline.json"), "--steps", "2", "--checkpoint",
                 str(checkpoint), "--out", str(tmp_path / "long")]) == 0
    assert json.loads((tmp_path / "long" / "generated.json").read_text())["motions"][0]["frames"] == 100


def test_bad_control_files_name_the_file_before_the_model_loads(tmp_path, capsys):
    (tmp_path / "keys.json").write_text(json.dumps({"frames": [5], "position": [[[0, 0, 0]]]}))
    (tmp_path / "empty.json").write_text(json.dumps({"segments": []}))
    missing = str(tmp_path / "no_such_checkpoint.pt")
    for flags, message in ((["--keyframes", str(tmp_path / "keys.json")], "unknown key(s) position"),
                           (["--timeline", str(tmp_path / "empty.json")], "no segments given")):
        assert main(["generate", "walk", "--checkpoint", missing, "--out", str(tmp_path / "o"), *flags]) != 0
        err = capsys.readouterr().err
        assert message in err and "no_such_checkpoint" not in err
    with pytest.raises(ConstraintError, match="keys.json: unknown key"):
        files.read_keyframes(tmp_path / "keys.json")


def test_served_model_takes_the_control_columns(generator, clips):
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from orchestration.pyfunc_model import VimogenPyfunc

    served = VimogenPyfunc()
    served.generator, served.steps, served.cfg_scale = generator, 2, None
    path = {"waypoints": [[0, 0], [1.0, 2.0]], "times": [0.0, 3.0]}
    timeline = [{"prompt": "walk", "seconds": 2}, {"prompt": "jump", "seconds": 2}]
    out = served.predict(None, pd.DataFrame({"prompt": ["a person walks", "a person kicks", "a long take"],
                                             "frames": [80, 60, 1],
                                             "trajectory": [json.dumps(path), None, None],
                                             "timeline": [None, None, json.dumps(timeline)]}))
    assert out["frames"].tolist() == [80, 60, 80]
    walked = np.asarray(json.loads(out["joints"][0]))
    assert np.linalg.norm(walked[60, 0, :2] - [1.0, 2.0]) < 0.02
    with pytest.raises(MlflowException, match="row 0 trajectory: unknown key"):
        served.predict(None, pd.DataFrame({"prompt": ["walk"], "trajectory": [json.dumps({"path": []})]}))


def test_a_trajectory_heading_turns_the_body(generator):
    from vimogen_core.motion.representation import facing_turn_angle
    from vimogen_core.motion.representation import features_to_rotations

    path = RootTrajectory(waypoints=np.array([[0.0, 0.0], [0.0, 1.5]]), times=np.array([0.0, 3.0]),
                          heading_deg=np.array([0.0, 90.0]))
    out = generate_controlled(generator, ["a person walks"], [combine([path], 80)], steps=2)[0]
    local, _ = features_to_rotations(torch.from_numpy(out.astype(np.float64)))
    faces = np.degrees(-facing_turn_angle(local[:, 0]).numpy())
    wanted = np.linspace(0.0, 90.0, 61)
    assert np.abs(np.angle(np.exp(1j * np.radians(faces[:61] - wanted)), deg=True)).max() < 1.0
    assert np.linalg.norm(joints(out)[60, 0, :2] - [0.0, 1.5]) < 0.01


def test_motions_longer_than_the_training_windows_are_continued_in_windows(generator, monkeypatch):
    from vimogen_core.control import timeline

    window = timeline.trained_window(generator)  # 80% of the 200-frame training windows
    assert window == 160
    short = generator.generate(["a person walks"], 60, steps=2, seed=5)[0]
    calls = []
    real = timeline.generate_controlled
    monkeypatch.setattr(timeline, "generate_controlled", lambda *a, **k: calls.append(a[2][0].n_frames) or real(*a, **k))
    out = timeline.generate_any_length(generator, ["x", "a person walks", "a person runs"], [300, 60, 120], steps=2,
                                       seed=4)
    assert [len(f) for f in out] == [300, 60, 120]
    assert np.allclose(out[1], short, atol=1e-5)  # seeded by its position, as in one batch
    assert calls == [20 + 150]  # 300 frames: a 150-frame window, then 150 more after a 20-frame prefix
