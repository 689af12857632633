"""Body models: the procedural SMPL-format model through smplx agrees with the skeleton's FK;
user model files are read without running code from them."""
import pickle

import numpy as np
import pytest
import scipy.sparse
import smplx
import torch

from vimogen_core.body import SmplxBodyModel, default_body_model
from vimogen_core.body.model_files import load_model_arrays
from vimogen_core.body.procedural import SMPL_NUM_VERTICES, build_procedural_smpl, procedural_model_path
from vimogen_core.errors import MotionDataError
from vimogen_core.motion import rotations as rot
from vimogen_core.motion.kinematics import forward_kinematics, rest_joints24
from vimogen_core.motion.skeleton import SMPL24_PARENTS, rest_offsets
from vimogen_core.motion.export import smpl_params_of, write_amass_npz
from vimogen_core.sources.amass import load_amass_npz
from vimogen_core.sources.deepmimic import load_builtin_clip

SMPL_KEYS = {"v_template", "f", "J_regressor", "J", "kintree_table", "weights", "shapedirs", "posedirs"}


@pytest.fixture(scope="module")
def body():
    return default_body_model()


def test_procedural_model_is_an_smpl_file_loaded_by_smplx(body, tmp_path, monkeypatch):
    monkeypatch.setenv("VIMOGEN_STATE_DIR", str(tmp_path))
    path = procedural_model_path()
    assert path.parent == tmp_path / "body_models" and path.suffix == ".npz"
    with np.load(path, allow_pickle=False) as data:
        assert SMPL_KEYS <= set(data.files)
        assert data["v_template"].shape[0] >= SMPL_NUM_VERTICES
        assert data["shapedirs"].shape[1:] == (3, 10) and data["posedirs"].shape[1:] == (3, 207)
        assert data["J_regressor"].shape == (24, data["v_template"].shape[0])
    assert isinstance(body._model, smplx.SMPL)
    assert body.faces.max() < body._model.v_template.shape[0]
    np.testing.assert_allclose(body.rest_joints(), rest_joints24()[:22], atol=1e-6)


def test_joints_equal_forward_kinematics_on_a_real_clip(body):
    motion = load_builtin_clip("cartwheel").motion
    params = smpl_params_of(motion)
    out = body.forward(params["global_orient"], params["body_pose"], params["transl"])
    assert out.joints.shape == (motion.n_frames, 22, 3)
    assert out.vertices.shape == (motion.n_frames, body._model.v_template.shape[0], 3)
    aa = torch.cat([torch.as_tensor(params["global_orient"])[:, None],
                    torch.as_tensor(params["body_pose"]).reshape(-1, 21, 3)], dim=1)
    fk, _ = forward_kinematics(rot.axis_angle_to_matrix(aa), torch.as_tensor(params["transl"]), rest_offsets())
    assert float((out.joints - fk).abs().max()) < 1e-5
    assert float((out.joints - motion.joints).abs().max()) < 1e-5  # pelvis = transl + rest pelvis


def test_skinning_is_rigid_and_betas_change_height_and_girth(body):
    g = torch.Generator().manual_seed(0)
    pose = torch.randn(8, 66, generator=g, dtype=torch.float64) * 0.6
    out = body.forward(pose[:, :3], pose[:, 3:], torch.zeros(8, 3, dtype=torch.float64))
    weights = body._model.lbs_weights.numpy()
    owner = weights.argmax(1)
    rest = body.forward(np.zeros((1, 3)), np.zeros((1, 63)), np.zeros((1, 3)))
    posed_joints = torch.cat([out.joints, out.joints[:, [20, 21]]], 1)  # hands ride on the wrists
    rest_joints = torch.cat([rest.joints, rest.joints[:, [20, 21]]], 1)
    # Every vertex keeps its distance to the joint that carries it.
    d_posed = (out.vertices - posed_joints[:, owner]).norm(dim=-1)
    d_rest = (rest.vertices - rest_joints[:, owner]).norm(dim=-1)
    assert float((d_posed - d_rest).abs().max()) < 1e-5

    tall, wide = np.zeros(10), np.zeros(10)
    tall[0], wide[1] = 2.0, 2.0
    np.testing.assert_allclose(body.rest_joints(tall), rest_joints24()[:22] * 1.1, atol=1e-6)
    np.testing.assert_allclose(body.rest_joints(wide), rest_joints24()[:22], atol=1e-6)
    wide_mesh = body.forward(np.zeros((1, 3)), np.zeros((1, 63)), np.zeros((1, 3)), betas=wide).vertices
    d_wide = (wide_mesh - rest_joints[:, owner]).norm(dim=-1)
    assert bool((d_wide >= d_rest - 1e-9).all()) and float(d_wide.mean() / d_rest.mean()) > 1.05


def test_user_pickle_with_sparse_regressor_and_npz_with_object_entries_load(body, tmp_path):
    arrays = build_procedural_smpl()
    pkl = dict(arrays, J_regressor=scipy.sparse.csc_matrix(arrays["J_regressor"]))
    (tmp_path / "SMPL_MALE.pkl").write_bytes(pickle.dumps(pkl, protocol=2))
    npz_arrays = dict(arrays, joint2num=np.array({"pelvis": 0}, dtype=object))
    np.savez(tmp_path / "SMPL_FEMALE.npz", **npz_arrays)

    pose = np.random.default_rng(1).normal(scale=0.4, size=(4, 66))
    expected = body.forward(pose[:, :3], pose[:, 3:], np.ones((4, 3))).joints
    for gender in ("male", "female"):
        model = SmplxBodyModel(tmp_path, model_type="smpl", gender=gender)
        joints = model.forward(pose[:, :3], pose[:, 3:], np.ones((4, 3)), return_vertices=False).joints
        assert float((joints - expected).abs().max()) < 1e-6, gender
    assert "joint2num" not in load_model_arrays(tmp_path / "SMPL_FEMALE.npz")


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/should-not-exist",))


def test_model_files_that_would_run_code_are_refused(tmp_path, monkeypatch):
    evil = tmp_path / "SMPL_NEUTRAL.pkl"
    evil.write_bytes(pickle.dumps({"v_template": _RunsCode()}))
    with pytest.raises(MotionDataError, match="refused to unpickle") as err:
        SmplxBodyModel(evil)
    assert str(evil) in str(err.value)

    chumpy = tmp_path / "chumpy.pkl"
    chumpy.write_bytes(b"cchumpy.ch\nCh\n)R.")  # a pickle whose only object is a chumpy array
    with pytest.raises(MotionDataError, match="chumpy"):
        load_model_arrays(chumpy)

    with pytest.raises(MotionDataError, match="no smplx male model file here"):
        SmplxBodyModel(tmp_path, model_type="smplx", gender="male")
    monkeypatch.delenv("VIMOGEN_BODY_MODEL_DIR", raising=False)
    with pytest.raises(MotionDataError, match="VIMOGEN_BODY_MODEL_DIR"):
        SmplxBodyModel()


def _family_file(n_joints: int, extra_parents: list[int], n_vertices: int) -> dict[str, np.ndarray]:
    """The procedural body laid out as an SMPL-H / SMPL-X file: extra (hand, face) joints sit on
    their parents and carry no vertices; vertices are padded to the count smplx samples from."""
    base = build_procedural_smpl()
    n_vertices = max(n_vertices, len(base["v_template"]))
    pad = n_vertices - len(base["v_template"])
    pad_rows = lambda a: np.concatenate([a, np.repeat(a[-1:], pad, axis=0)])  # noqa: E731
    regressor = np.zeros((n_joints, n_vertices))
    regressor[:22, : len(base["v_template"])] = base["J_regressor"][:22]
    parents = list(SMPL24_PARENTS[:22]) + extra_parents
    for joint in range(22, n_joints):
        regressor[joint] = regressor[parents[joint]]
    weights = np.zeros((n_vertices, n_joints))
    weights[:, :22] = pad_rows(base["weights"][:, :22])
    arrays = {
        "v_template": pad_rows(base["v_template"]), "f": base["f"], "J_regressor": regressor, "weights": weights,
        "kintree_table": np.array([[-1] + parents[1:], list(range(n_joints))]),
        "shapedirs": pad_rows(np.concatenate([base["shapedirs"], np.zeros_like(base["shapedirs"])], axis=2)),
        "posedirs": np.zeros((n_vertices, 3, 9 * (n_joints - 1))),
        "joint2num": np.array({"pelvis": 0}, dtype=object),  # real SMPL-X files carry pickled dicts like this
    }
    for side in "lr":
        arrays[f"hands_components{side}"] = np.eye(45)
        arrays[f"hands_mean{side}"] = np.zeros(45)
    if n_joints == 55:
        arrays["lmk_faces_idx"] = np.arange(51)
        arrays["lmk_bary_coords"] = np.full((51, 3), 1 / 3)
    return arrays


def _fingers(wrist: int, first: int) -> list[int]:
    return [wrist if k % 3 == 0 else first + k - 1 for k in range(15)]


@pytest.mark.parametrize("model_type", ["smplh", "smplx"])
def test_smplh_and_smplx_files_run_through_their_smplx_classes(body, model_type, tmp_path, monkeypatch):
    monkeypatch.setenv("VIMOGEN_STATE_DIR", str(tmp_path / "state"))
    if model_type == "smplh":
        arrays = _family_file(52, _fingers(20, 22) + _fingers(21, 37), 6890)
    else:
        arrays = _family_file(55, [15, 15, 15] + _fingers(20, 25) + _fingers(21, 40), 10475)
    np.savez(tmp_path / f"{model_type.upper()}_NEUTRAL.npz", **arrays)
    model = SmplxBodyModel(tmp_path, model_type=model_type)
    assert isinstance(model._model, smplx.SMPLX if model_type == "smplx" else smplx.SMPLH)
    motion = load_builtin_clip("walk").motion
    params = smpl_params_of(motion)
    joints = model.forward(params["global_orient"], params["body_pose"], params["transl"]).joints
    assert float((joints - motion.joints).abs().max()) < 1e-5
    if model_type == "smplx":  # smplx reads SMPL-X files itself, so it is handed a copy without pickled entries
        (clean,) = (tmp_path / "state" / "body_models").glob("SMPLX_*.npz")
        with np.load(clean, allow_pickle=False) as data:
            assert "joint2num" not in data.files and "v_template" in data.files
    else:  # AMASS files use the user's SMPL-H model; a gender the folder lacks falls back to neutral
        monkeypatch.setenv("VIMOGEN_BODY_MODEL_DIR", str(tmp_path))
        amass = write_amass_npz(tmp_path / "walk.npz", motion, gender="male")
        assert float((load_amass_npz(amass).joints - motion.joints).abs().max()) < 1e-5
