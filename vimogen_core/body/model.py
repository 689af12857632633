"""Body models: SMPL parameters (+ betas) -> the 22 body joints and, where a mesh exists, vertices.

One backend, `SmplxBodyModel`, runs the `smplx` package on a model file: a user's SMPL / SMPL-H /
SMPL-X file (`.npz`, or `.pkl` holding plain arrays; see `model_files`) or the project's
procedural SMPL-format file (`procedural`). Files are always read by `load_model_arrays`,
never by smplx's own loader, which unpickles whatever the file holds.

Point at user files with the `model_path` argument or $VIMOGEN_BODY_MODEL_DIR (a folder with
e.g. SMPL_NEUTRAL.npz, SMPLH_MALE.pkl, smplh/male/model.npz or SMPLX_FEMALE.npz).
"""
from __future__ import annotations

import abc
import contextlib
import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from vimogen_core.body.model_files import content_hash, load_model_arrays, write_npz_atomic
from vimogen_core.body.procedural import procedural_model_path
from vimogen_core.state import state_dir
from vimogen_core.errors import MotionDataError
from vimogen_core.motion.skeleton import NUM_JOINTS, offsets_from_rest_joints

MODEL_TYPES = ("smpl", "smplh", "smplx")
GENDERS = ("neutral", "male", "female")
BODY_MODEL_DIR_ENV = "VIMOGEN_BODY_MODEL_DIR"
_HAND_POSE_DIM = 45  # 15 hand joints x 3, full axis-angle (no PCA)


@dataclass(frozen=True)
class BodyOutput:
    joints: torch.Tensor  # (B, 22, 3) world, metres
    vertices: torch.Tensor | None  # (B, V, 3), None when not asked for
    faces: np.ndarray  # (F, 3) vertex indices


class BodyModel(abc.ABC):
    """SMPL parameters -> joints and vertices. Subclasses implement `forward` and `rest_joints`."""

    faces: np.ndarray  # (F, 3)
    num_betas: int

    @abc.abstractmethod
    def forward(self, global_orient, body_pose, transl, betas=None, return_vertices: bool = True) -> BodyOutput:
        """global_orient (B, 3), body_pose (B, 63) axis-angle, transl (B, 3), betas (B, n) | (n,) | None."""

    @abc.abstractmethod
    def rest_joints(self, betas=None) -> np.ndarray:
        """(22, 3) joint positions in the rest pose for the given shape (default: mean shape)."""

    def offsets(self, betas=None) -> np.ndarray:
        """(22, 3) rest offsets (row 0 = the rest pelvis), for `forward_kinematics` / `Motion`."""
        return offsets_from_rest_joints(self.rest_joints(betas))


class SmplxBodyModel(BodyModel):
    """An SMPL, SMPL-H or SMPL-X model file run by `smplx`, in float64.

    model_path: a model file or a folder holding one (None: $VIMOGEN_BODY_MODEL_DIR).
    Forward runs in chunks of `chunk` frames so long sequences with vertices fit in memory."""

    def __init__(self, model_path: str | os.PathLike | None = None, model_type: str = "smpl",
                 gender: str = "neutral", num_betas: int = 10, chunk: int = 256):
        import smplx

        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
        gender = gender.lower()
        if gender not in GENDERS:
            raise ValueError(f"gender must be one of {GENDERS}, got {gender!r}")
        self.model_type, self.gender, self.chunk = model_type, gender, chunk
        self.path = resolve_model_file(model_path, model_type, gender)
        arrays = load_model_arrays(self.path)
        missing = {"v_template", "f", "J_regressor", "kintree_table", "weights", "shapedirs", "posedirs"} - set(arrays)
        if missing:
            raise MotionDataError(self.path, f"not an SMPL-family model file: missing {sorted(missing)}")
        common = dict(gender=gender, num_betas=num_betas, dtype=torch.float64)
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a warning for every 10-beta model
            self._model = self._build(smplx, model_type, arrays, common)
        self._model.requires_grad_(False)
        self.num_betas = self._model.num_betas
        self.faces = np.asarray(self._model.faces, dtype=np.int64)

    def _build(self, smplx, model_type: str, arrays: dict[str, np.ndarray], common: dict):
        if model_type == "smplx":
            # smplx's SMPL-X class only reads files itself: hand it a copy holding the plain arrays only.
            clean = state_dir() / "body_models" / f"SMPLX_{content_hash(arrays)}.npz"
            if not clean.is_file():
                write_npz_atomic(clean, arrays)
            return smplx.SMPLX(str(clean), ext="npz", use_pca=False, flat_hand_mean=True, **common)
        struct = smplx.utils.Struct(**arrays)
        if model_type == "smplh":
            return smplx.SMPLH(str(self.path), data_struct=struct, use_pca=False, flat_hand_mean=True, **common)
        return smplx.SMPL(str(self.path), data_struct=struct, **common)

    def _betas(self, betas, batch: int) -> torch.Tensor:
        if betas is None:
            return torch.zeros(batch, self.num_betas, dtype=torch.float64)
        betas = torch.as_tensor(np.asarray(betas), dtype=torch.float64)
        betas = betas.reshape(-1, betas.shape[-1])[:, : self.num_betas]
        if betas.shape[1] < self.num_betas:
            betas = torch.nn.functional.pad(betas, (0, self.num_betas - betas.shape[1]))
        return betas.expand(batch, -1) if betas.shape[0] == 1 else betas

    def _extra_inputs(self, batch: int) -> dict[str, torch.Tensor]:
        """Zero hand / face inputs: smplx otherwise uses batch-1 member tensors that do not broadcast."""
        zeros = lambda dim: torch.zeros(batch, dim, dtype=torch.float64)  # noqa: E731
        extra = {}
        if self.model_type in ("smplh", "smplx"):
            extra.update(left_hand_pose=zeros(_HAND_POSE_DIM), right_hand_pose=zeros(_HAND_POSE_DIM))
        if self.model_type == "smplx":
            extra.update(jaw_pose=zeros(3), leye_pose=zeros(3), reye_pose=zeros(3),
                         expression=zeros(self._model.num_expression_coeffs))
        return extra

    def _full_body_pose(self, body_pose: torch.Tensor) -> torch.Tensor:
        """(B, 63) -> the model's body pose: SMPL proper also poses its two hand joints (kept at rest)."""
        return torch.nn.functional.pad(body_pose, (0, 3 * self._model.NUM_BODY_JOINTS - body_pose.shape[1]))

    @torch.no_grad()
    def forward(self, global_orient, body_pose, transl, betas=None, return_vertices: bool = True) -> BodyOutput:
        global_orient = torch.as_tensor(np.asarray(global_orient), dtype=torch.float64).reshape(-1, 3)
        batch = global_orient.shape[0]
        body_pose = torch.as_tensor(np.asarray(body_pose), dtype=torch.float64).reshape(batch, 63)
        transl = torch.as_tensor(np.asarray(transl), dtype=torch.float64).reshape(batch, 3)
        betas = self._betas(betas, batch)  # (B, num_betas)
        joints, vertices = [], []
        for start in range(0, batch, self.chunk):
            part = slice(start, start + self.chunk)
            n = global_orient[part].shape[0]
            out = self._model(global_orient=global_orient[part], body_pose=self._full_body_pose(body_pose[part]),
                              transl=transl[part],
                              betas=betas[part], return_verts=True, **self._extra_inputs(n))
            joints.append(out.joints[:, :NUM_JOINTS])
            if return_vertices:
                vertices.append(out.vertices)
        return BodyOutput(joints=torch.cat(joints), vertices=torch.cat(vertices) if return_vertices else None,
                          faces=self.faces)

    def rest_joints(self, betas=None) -> np.ndarray:
        zeros = np.zeros((1, 3))
        out = self.forward(zeros, np.zeros((1, 63)), zeros, self._betas(betas, 1)[:1], return_vertices=False)
        return out.joints[0].numpy()


def resolve_model_file(model_path: str | os.PathLike | None, model_type: str, gender: str) -> Path:
    """A model file from a file path, or the first matching file in a folder."""
    if model_path is None:
        model_path = os.environ.get(BODY_MODEL_DIR_ENV)
        if not model_path:
            raise MotionDataError(None, f"no body model given: pass model_path or set ${BODY_MODEL_DIR_ENV}")
    path = Path(model_path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise MotionDataError(path, "body model path not found")
    stem = f"{model_type.upper()}_{gender.upper()}"
    candidates = [path / f"{stem}.npz", path / f"{stem}.pkl", path / model_type / f"{stem}.npz",
                  path / model_type / f"{stem}.pkl", path / model_type / gender / "model.npz"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise MotionDataError(path, f"no {model_type} {gender} model file here (looked for "
                                f"{', '.join(str(c.relative_to(path)) for c in candidates)})")


@lru_cache(maxsize=None)
def _procedural_model() -> SmplxBodyModel:
    return SmplxBodyModel(procedural_model_path(), model_type="smpl")


def default_body_model() -> SmplxBodyModel:
    """The procedural SMPL-compatible model (generated on first use, cached on disk)."""
    return _procedural_model()


def body_model_from_env(gender: str = "neutral", model_type: str = "smplh") -> BodyModel:
    """The user's model when $VIMOGEN_BODY_MODEL_DIR is set (gender falls back to neutral when the
    folder lacks it), otherwise the procedural model."""
    directory = os.environ.get(BODY_MODEL_DIR_ENV)
    if not directory:
        return default_body_model()
    gender = gender.lower() if gender and gender.lower() in GENDERS else "neutral"
    return _user_model(directory, model_type, gender)


@lru_cache(maxsize=8)
def _user_model(directory: str, model_type: str, gender: str) -> SmplxBodyModel:
    try:
        return SmplxBodyModel(directory, model_type=model_type, gender=gender)
    except MotionDataError:
        if gender == "neutral":
            raise
        return SmplxBodyModel(directory, model_type=model_type, gender="neutral")
