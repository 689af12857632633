"""The MBench runner on real motion-capture clips: files, errors, aggregates, report, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vimogen_core.motion import metrics
from vimogen_core.bench.prompts import ALL_DIMENSIONS, builtin_prompts, load_published_prompts
from vimogen_core.bench.report import PUBLISHED_TABLE
from vimogen_core.bench.runner import score_directory
from vimogen_core.cli import main
from vimogen_core.errors import MotionDataError
from vimogen_core.sources.deepmimic import load_builtin_clip

CLIPS = ("walk", "run", "jump", "kick")
MQ = metrics.MOTION_QUALITY_DIMENSIONS


@pytest.fixture(scope="module")
def clip_joints() -> dict[str, np.ndarray]:
    return {name: load_builtin_clip(name).motion.joints.numpy().astype(np.float32) for name in CLIPS}


@pytest.fixture()
def motion_folder(tmp_path, clip_joints):
    folder = tmp_path / "motions"
    folder.mkdir()
    for name, joints in clip_joints.items():
        np.save(folder / f"{name}.npy", joints)
    np.save(folder / "wrong_shape.npy", np.zeros((40, 24, 3), np.float32))
    nan = clip_joints["walk"].copy()
    nan[5, 3, 1] = np.nan
    np.save(folder / "has_nan.npy", nan)
    np.save(folder / "two_frames.npy", clip_joints["walk"][:2])
    (folder / "truncated.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    return folder


def read_rows(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "per_motion.jsonl").read_text().splitlines()]


def test_folder_scoring_records_bad_files_and_scores_the_rest(motion_folder, clip_joints, tmp_path):
    out = tmp_path / "scores"
    result = score_directory(motion_folder, MQ, out)

    rows = read_rows(out)
    assert len(rows) == 8 * len(MQ)
    errors = {r["id"]: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"wrong_shape", "has_nan", "two_frames", "truncated"}
    assert "shape (T, 22, 3)" in errors["wrong_shape"] and errors["wrong_shape"].endswith("got (40, 24, 3)")
    assert "NaN" in errors["has_nan"] and "at least 3" in errors["two_frames"]
    assert "truncated.npy: not a readable .npy" in errors["truncated"]

    # Good motions carry exactly the metric functions' values; aggregates are mean / population std.
    expected = metrics.motion_quality_scores([clip_joints[n].astype(np.float64) for n in sorted(CLIPS)])
    for i, name in enumerate(sorted(CLIPS)):
        for dimension in MQ:
            (row,) = [r for r in rows if r["id"] == name and r["dimension"] == dimension]
            assert row["value"] == pytest.approx(expected[dimension][i], rel=1e-5)
    jitter = result.aggregates["Jitter_Degree"]
    assert (jitter["count"], jitter["errors"]) == (4, 4)
    assert jitter["mean"] == pytest.approx(np.mean(expected["Jitter_Degree"]), rel=1e-5)
    assert jitter["std"] == pytest.approx(np.std(expected["Jitter_Degree"]), rel=1e-5)

    scores = json.loads((out / "scores.json").read_text())
    assert scores["aggregates"]["Foot_Sliding"]["count"] == 4
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["height_axis"] == "true" and metadata["n_motion_errors"] == 4
    assert metadata["timing_s"]["motion_quality"] > 0
    report = (out / "report.md").read_text()
    assert "| ViMoGen | 0.530 | 0.680 | 0.0108 |" in report
    assert report.count("\n| ") >= len(PUBLISHED_TABLE) + 2
    assert f"| **motions** | - | - | {jitter['mean']:.4f} |" in report
    assert "id truncated Jitter_Degree" in report


def test_pose_dimensions_name_their_mesh_and_prior_and_use_rotations_when_given(tmp_path, clip_joints):
    folder = tmp_path / "pose"
    folder.mkdir()
    walk = load_builtin_clip("walk").motion
    np.save(folder / "walk_joints.npy", clip_joints["walk"])
    np.save(folder / "walk_features.npy", walk.features().numpy())
    result = score_directory(folder, ["Body_Penetration", "Pose_Quality", "Jitter_Degree"], tmp_path / "out")
    rows = {(r["id"], r["dimension"]): r for r in result.per_motion}
    assert all(r["error"] is None for r in rows.values()), rows
    assert "procedural capsule body" in result.metadata["pose_scorer"]
    assert "knn-posebank" in result.metadata["pose_scorer"]
    # A walk does not intersect itself; its poses are in the bank (k=4 neighbours: small, not 0).
    assert rows[("walk_joints", "Body_Penetration")]["value"] == 0.0
    from_rotations = rows[("walk_features", "Pose_Quality")]["value"]
    from_ik = rows[("walk_joints", "Pose_Quality")]["value"]  # compared with the bank's IK re-fit
    assert 0 < from_rotations < 3.0 and 0 < from_ik < 3.0
    # The 276-d file is decoded to its joints: the same motion minus the last frame.
    assert rows[("walk_features", "Jitter_Degree")]["value"] == pytest.approx(
        metrics.jitter_degree(clip_joints["walk"][:-1].astype(np.float64)), rel=1e-4)


def test_builtin_prompts_cover_the_four_groups_with_ten_way_candidates():
    prompts = builtin_prompts()
    groups = {p.group for p in prompts}
    assert groups == {"Motion_Quality", "Pose_Quality", "Motion_Condition_Consistency", "Motion_Generalizability"}
    assert [p.global_id for p in prompts] == list(range(len(prompts)))
    for prompt in prompts:
        if prompt.group == "Motion_Condition_Consistency":
            assert len(prompt.candidates) == 10 and prompt.candidates[0] == prompt.text
            assert len(set(prompt.candidates)) == 10
        assert 40 <= prompt.n_frames <= 200


def test_published_prompt_files_are_read_in_place(shared):
    prompts = load_published_prompts(shared / "mbench" / "MBench_final.json", shared / "mbench" / "MBench_eval_info.json")
    assert len(prompts) == 450
    assert sum(len(p.dimensions) for p in prompts) == 1150
    by_id = {p.global_id: p for p in prompts}
    assert set(by_id[0].dimensions) == set(MQ) and by_id[0].n_frames == 100
    assert set(by_id[150].dimensions) == {"Body_Penetration", "Pose_Quality"}
    assert by_id[250].candidates[0] == "playing piano" and len(by_id[250].candidates) == 10
    assert by_id[350].dimensions == ("Motion_Generalizability",)


def test_broken_prompt_files_name_the_file(tmp_path):
    broken = tmp_path / "MBench_final.json"
    broken.write_text('[{"global_id": 0, "dimension": "Motion_Quality"')
    with pytest.raises(MotionDataError, match="MBench_final.json: not readable JSON"):
        load_published_prompts(broken)
    broken.write_text(json.dumps([{"global_id": 0, "dimension": "Dancing", "prompt": "x"}]))
    with pytest.raises(MotionDataError, match="unknown group 'Dancing'"):
        load_published_prompts(broken)


def test_prompt_mode_reports_missing_motions_and_the_height_mode(tmp_path, clip_joints):
    folder = tmp_path / "gen"
    folder.mkdir()
    for prompt in builtin_prompts()[:4]:  # Motion_Quality prompts 0..3; 4..9 missing
        np.save(folder / f"{prompt.global_id}.npy", clip_joints[CLIPS[prompt.global_id]])
    result = score_directory(folder, MQ, tmp_path / "out", prompts_path="builtin",
                             height_axis=metrics.HEIGHT_RELEASED_COMPAT)
    assert result.metadata["height_axis"] == "released_yup_index2"
    assert result.aggregates["Foot_Floating"]["count"] == 4 and result.aggregates["Foot_Floating"]["errors"] == 6
    missing = [r for r in result.per_motion if r["id"] == 7]
    assert all("7.npy: motion file not found" in r["error"] for r in missing)
    with pytest.raises(ValueError, match="need prompts"):
        score_directory(folder, ["Motion_Generalizability"], tmp_path / "out2")


def test_cli_scores_a_folder_and_reports_bad_arguments(motion_folder, tmp_path, capsys):
    out = tmp_path / "cli_out"
    assert main(["bench", "score", str(motion_folder), "--dimension", "Jitter_Degree",
                 "--dimension", "Foot_Sliding", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Jitter_Degree" in printed and "n=4 errors=4" in printed
    aggregates = json.loads((out / "scores.json").read_text())["aggregates"]
    assert set(aggregates) == {"Jitter_Degree", "Foot_Sliding"}
    assert main(["bench", "score", str(tmp_path / "nowhere")]) == 2
    assert "vimogen: error:" in capsys.readouterr().err
    assert set(ALL_DIMENSIONS) >= set(aggregates)
