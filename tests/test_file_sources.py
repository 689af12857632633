"""File-based motion sources built from a real clip convert back to the same motion;
bad files fail with the file name and the reason."""
import json
import pickle

import numpy as np
import pytest
import torch

from vimogen_core.errors import MotionDataError
from vimogen_core.motion import rotations as rot
from vimogen_core.motion.motion import Motion, resample
from vimogen_core.motion.skeleton import FPS, bone_lengths
from vimogen_core.body import default_body_model
from vimogen_core.motion.export import smpl_params_of, write_amass_npz
from vimogen_core.sources.amass import load_amass_npz
from vimogen_core.sources.deepmimic import load_builtin_clip
from vimogen_core.sources.hmr import CAMERA_TO_WORLD, load_hmr_output, write_hmr_npz
from vimogen_core.sources.vimogen228k import iter_vimogen228k, load_vimogen_motion


@pytest.fixture(scope="module")
def walk() -> Motion:
    return load_builtin_clip("walk", min_frames=60).motion


def _moved(motion: Motion, yaw: float, shift) -> Motion:
    """The same motion turned about the vertical and moved: what an uncanonicalised file holds."""
    turn = rot.rotation_about_z(torch.tensor(yaw, dtype=torch.float64))
    local = motion.local_rotmats.clone()
    local[:, 0] = turn @ local[:, 0]
    pelvis = motion.joints[:, 0] @ turn.T + torch.tensor(shift, dtype=torch.float64)
    return Motion.from_rotations(local, pelvis - torch.as_tensor(motion.offsets[0]), motion.fps, motion.offsets)


def test_amass_npz_at_60fps_converts_back_to_the_clip(walk, tmp_path):
    path = write_amass_npz(tmp_path / "walk_poses.npz", resample(_moved(walk, 2.0, (3.0, -1.0, 0.0)), 60.0))
    with np.load(path) as data:
        assert data["poses"].shape == (3 * (walk.n_frames - 1) + 1, 72) and float(data["mocap_framerate"]) == 60.0
    back = load_amass_npz(path)
    assert back.fps == FPS and back.n_frames == walk.n_frames
    assert float((back.joints - walk.joints).abs().max()) < 1e-4
    assert float((back.features() - walk.features()).abs().max()) < 1e-4


def test_amass_betas_shape_the_skeleton(walk, tmp_path):
    betas = np.zeros(16)
    betas[0] = 2.0  # 10 % taller in the procedural model
    path = write_amass_npz(tmp_path / "tall.npz", walk, betas=betas)
    tall = load_amass_npz(path)
    ratio = bone_lengths(tall.joints).mean(0) / bone_lengths(walk.joints).mean(0)
    assert torch.allclose(ratio, torch.full_like(ratio, 1.1), atol=1e-6)


def _camera_params(motion: Motion, cam_rot: torch.Tensor, cam_t: torch.Tensor) -> dict:
    """World motion -> SMPL parameters in camera coordinates, x_cam = R x_world + t (per frame)."""
    local = motion.local_rotmats.clone()
    local[:, 0] = cam_rot @ local[:, 0]
    pelvis = (cam_rot @ motion.joints[:, 0, :, None])[..., 0] + cam_t
    in_camera = Motion.from_rotations(local, pelvis - torch.as_tensor(motion.offsets[0]), motion.fps, motion.offsets)
    return smpl_params_of(in_camera), in_camera


@pytest.mark.parametrize("fmt", ["npz", "json"])
def test_hmr_output_from_a_static_camera_converts_back(walk, tmp_path, fmt):
    source = resample(walk, 40.0)
    cam_rot = (CAMERA_TO_WORLD.T @ rot.rotation_about_z(torch.tensor(2.5, dtype=torch.float64))).expand(source.n_frames, 3, 3)
    cam_t = torch.tensor([0.2, 1.1, 5.0], dtype=torch.float64).expand(source.n_frames, 3)
    params, in_camera = _camera_params(source, cam_rot, cam_t)
    if fmt == "npz":
        path = write_hmr_npz(tmp_path / "hmr.npz", params, fps=40, focal_length=1100, image_size=(1280, 720))
    else:
        path = tmp_path / "hmr.json"
        path.write_text(json.dumps({**{k: v.tolist() for k, v in params.items()}, "fps": 40,
                                    "focal_length": [1100, 1100], "image_size": [1280, 720]}))
    back, extrinsic, intrinsic = load_hmr_output(path)
    assert back.fps == FPS and back.n_frames == walk.n_frames
    assert float((back.joints - walk.joints).abs().max()) < 1e-4
    np.testing.assert_allclose(intrinsic, [[1100, 0, 640], [0, 1100, 360], [0, 0, 1]])
    # The returned camera sees the canonical joints where the recovery saw them.
    r, t = rot.rot6d_to_matrix(torch.as_tensor(extrinsic[:, :6])), torch.as_tensor(extrinsic[:, 6:])
    seen = (r[:, None] @ back.joints[..., None])[..., 0] + t[:, None]
    assert extrinsic.shape == (walk.n_frames, 9)
    assert float((seen - in_camera.joints[::2]).abs().max()) < 1e-4


def test_hmr_output_with_a_panning_camera_converts_back(walk):
    n = walk.n_frames
    pan = rot.rotation_about_z(torch.linspace(0.0, 0.8, n, dtype=torch.float64))  # (T, 3, 3)
    cam_rot = CAMERA_TO_WORLD.T @ pan
    cam_t = torch.stack([torch.linspace(0.0, 1.0, n), torch.full((n,), 1.2), torch.full((n,), 4.0)], -1).double()
    params, _ = _camera_params(walk, cam_rot, cam_t)
    extrinsic = torch.cat([rot.matrix_to_rot6d(cam_rot), cam_t], -1).numpy()
    back, _, _ = load_hmr_output(params, fps=20, extrinsic=extrinsic, body_model=default_body_model())
    assert float((back.joints - walk.joints).abs().max()) < 1e-4


@pytest.mark.parametrize("breakage, reason", [
    (lambda d: d.update(poses=np.where(np.arange(d["poses"].size).reshape(d["poses"].shape) == 7, np.nan, d["poses"])),
     "'poses' has non-finite values"),
    (lambda d: d.update(poses=d["poses"][:, :30]), "'poses' has shape"),
    (lambda d: d.update(trans=d["trans"][:-3]), "frame counts differ"),
    (lambda d: d.pop("mocap_framerate"), "missing the frame rate"),
    (lambda d: d.pop("trans"), "missing 'trans'"),
])
def test_bad_amass_files_name_the_file_and_the_reason(walk, tmp_path, breakage, reason):
    path = write_amass_npz(tmp_path / "good.npz", walk)
    with np.load(path) as data:
        arrays = dict(data)
    breakage(arrays)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(MotionDataError, match=reason) as err:
        load_amass_npz(bad)
    assert str(err.value).startswith(str(bad))


def test_truncated_and_missing_files_are_reported(walk, tmp_path):
    path = write_amass_npz(tmp_path / "walk.npz", walk)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(MotionDataError, match="truncated or corrupt") as err:
        load_amass_npz(cut)
    assert str(cut) in str(err.value)
    with pytest.raises(MotionDataError, match="file not found"):
        load_amass_npz(tmp_path / "missing.npz")
    broken_json = tmp_path / "hmr.json"
    broken_json.write_text('{"global_orient": [[0, 0')
    with pytest.raises(MotionDataError, match="not valid JSON"):
        load_hmr_output(broken_json, fps=30)
    params = smpl_params_of(walk)
    with pytest.raises(MotionDataError, match="no frame rate"):
        load_hmr_output(dict(params), source="take.npz")
    params["body_pose"] = params["body_pose"][:, :60]
    with pytest.raises(MotionDataError, match=r"take.npz: 'body_pose' has shape"):
        load_hmr_output(params, fps=30, source="take.npz")


# ---- the released ViMoGen-228K layout ----

class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned-by-pickle",))


def _write_release(root, walk):
    feats = walk.features()  # (T-1, 276)
    (root / "mocap").mkdir(parents=True)
    (root / "video").mkdir()
    torch.save(feats, root / "mocap" / "walk.pt")
    camera = {"motion": feats, "extrinsic": torch.zeros(len(feats), 9), "intrinsic": torch.eye(3)}
    torch.save(camera, root / "video" / "walk_cam.pt")
    entries = [
        {"id": "m0", "subset": "mocap", "split": "train", "motion_text_annot": ["a person walks forward"],
         "video_text_annot": "A person in grey walks.", "motion_path": "mocap/walk.pt", "source_fps": 30},
        {"id": "v0", "subset": "in_the_wild", "split": "test", "motion_text_annot": "walks",
         "video_text_annot": "walks", "motion_path": "video/walk_cam.pt", "video_path": "video/walk.mp4",
         "ref_motion_path": "mocap/walk.pt"},
    ]
    return feats, entries


def test_release_records_keep_every_field_and_load_motions(walk, tmp_path):
    feats, entries = _write_release(tmp_path, walk)
    annotations = tmp_path / "annotations.json"
    annotations.write_text(json.dumps(entries))
    records = list(iter_vimogen228k(annotations, tmp_path))
    assert [r.id for r in records] == ["m0", "v0"]
    assert records[0].annotation == entries[0]  # the unknown field "source_fps" is kept
    assert records[0].motion_text_annot == ["a person walks forward"] and records[0].extrinsic is None
    assert records[1].video_path == "video/walk.mp4" and records[1].ref_motion_path == "mocap/walk.pt"
    np.testing.assert_array_equal(records[0].motion, feats.numpy())
    assert records[1].extrinsic.shape == (len(feats), 9) and records[1].intrinsic.shape == (3, 3)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the raw pickle written below
def test_release_bad_entries_and_files(walk, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    feats, entries = _write_release(tmp_path, walk)
    bad_motion = feats.clone()
    bad_motion[3, 5] = float("nan")
    torch.save(bad_motion, tmp_path / "nan.pt")
    torch.save(feats[:, :200], tmp_path / "narrow.pt")
    good = (tmp_path / "mocap" / "walk.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "code.pt").write_bytes(pickle.dumps({"motion": _RunsCode()}))
    cases = {"nan.pt": "non-finite", "narrow.pt": "expected features of shape", "cut.pt": "truncated or corrupt",
             "code.pt": "refused to load"}
    for name, reason in cases.items():
        with pytest.raises(MotionDataError, match=reason) as err:
            load_vimogen_motion(tmp_path / name)
        assert str(err.value).startswith(str(tmp_path / name)), name
    assert not (tmp_path / "pwned-by-pickle").exists()

    broken = [dict(entries[0], id="nomotion")]
    del broken[0]["motion_path"]
    broken.append(dict(entries[0], id="nan", motion_path="nan.pt"))
    broken.append(entries[1])
    annotations = tmp_path / "annotations.json"
    annotations.write_text(json.dumps(broken))
    with pytest.raises(MotionDataError, match=r"entry 0 \(id nomotion\) has no motion_path") as err:
        list(iter_vimogen228k(annotations, tmp_path))
    assert str(err.value).startswith(str(annotations))
    results = list(iter_vimogen228k(annotations, tmp_path, on_error="yield"))  # batch jobs quarantine and go on
    assert isinstance(results[0], MotionDataError) and isinstance(results[1], MotionDataError)
    assert "nan.pt" in str(results[1]) and results[2].id == "v0"
