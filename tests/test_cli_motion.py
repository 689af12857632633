"""`vimogen motion ...` end to end through the installed console script."""
import subprocess
from pathlib import Path

import numpy as np
import pytest

from vimogen_core.sources.deepmimic import load_builtin_clip

VIMOGEN = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "vimogen")


def run(*args):
    return subprocess.run([VIMOGEN, *args], capture_output=True, text=True)


def test_clips_lists_all_builtin_clips():
    out = run("motion", "clips")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip().splitlines()) == 15 and "cartwheel" in out.stdout


def test_convert_then_decode_a_builtin_clip(tmp_path):
    feats_path, joints_path, vel_path = tmp_path / "walk.npy", tmp_path / "j.npy", tmp_path / "jv.npy"
    assert run("motion", "convert", "walk", "--from", "deepmimic", "--out", str(feats_path)).returncode == 0
    feats = np.load(feats_path)
    expected = load_builtin_clip("walk").motion
    assert feats.shape == (expected.n_frames - 1, 276) and feats.dtype == np.float32
    assert run("motion", "joints", str(feats_path), "--out", str(joints_path)).returncode == 0
    assert run("motion", "joints", str(feats_path), "--out", str(vel_path), "--from-velocity").returncode == 0
    joints, integrated = np.load(joints_path), np.load(vel_path)
    assert np.abs(joints - expected.joints[:-1].numpy()).max() < 1e-5
    assert np.abs(integrated - joints).max() < 1e-4


@pytest.mark.parametrize("args, reason", [
    (("motion", "convert", "moonwalk", "--from", "deepmimic", "--out", "x.npy"), "unknown built-in clip"),
    (("motion", "convert", "missing.npz", "--from", "amass", "--out", "x.npy"), "file not found"),
    (("motion", "joints", "BAD", "--out", "x.npy"), None),
])
def test_cli_errors_are_one_readable_line(tmp_path, args, reason):
    args = tuple(str(tmp_path / "bad.npy") if a == "BAD" else a for a in args)
    if "BAD" in args or str(tmp_path / "bad.npy") in args:
        np.save(tmp_path / "bad.npy", np.full((10, 276), np.nan, dtype=np.float32))
        reason = "non-finite"
    out = run(*args)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vimogen: error:") and reason in lines[0]


def test_wrong_shape_features_are_rejected(tmp_path):
    bad = tmp_path / "wrong.npy"
    np.save(bad, np.zeros((10, 275), dtype=np.float32))
    out = run("motion", "joints", str(bad), "--out", str(tmp_path / "j.npy"))
    assert out.returncode == 2 and str(bad) in out.stderr and "(T, 276)" in out.stderr
