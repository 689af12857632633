"""AMASS-style `.npz` motion sequences.

Keys read: `poses` (T, >= 66) axis-angle (root, then the 21 body joints; SMPL-H/SMPL-X hand and
face joints after them are ignored), `trans` (T, 3), optional `betas` (n,), `gender`, and the
frame rate `mocap_framerate` (AMASS SMPL-H) or `mocap_frame_rate` (AMASS SMPL-X). AMASS is
already Z up, so the loader only resamples to 20 fps and canonicalises (frame 0 faces +Y,
pelvis at x = y = 0; heights are kept). The file is read with `allow_pickle=False`. The writer of
the same layout is `vimogen_core.motion.export.write_amass_npz` (an export needs no body model).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from vimogen_core.body.model import BodyModel, body_model_from_env
from vimogen_core.body.params import as_axis_angle, check_betas, check_fps, check_frames, check_translation, finite_array
from vimogen_core.errors import MotionDataError
from vimogen_core.motion.motion import Motion, canonicalize, resample
from vimogen_core.motion.skeleton import FPS, NUM_JOINTS

FRAMERATE_KEYS = ("mocap_framerate", "mocap_frame_rate")


def read_npz(path: str | os.PathLike, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The listed entries of an `.npz` (those present), read without unpickling."""
    path = Path(path)
    if not path.is_file():
        raise MotionDataError(path, "file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise MotionDataError(path, "expected an .npz archive, got a single array")
            return {key: data[key] for key in keys if key in data.files}
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise MotionDataError(path, f"not a readable .npz file, truncated or corrupt ({err})") from None
    except ValueError as err:
        raise MotionDataError(path, f"unreadable entry ({err})") from None


def _gender(value) -> str:
    if value is None:
        return "neutral"
    value = np.asarray(value).reshape(())
    text = value.item().decode() if isinstance(value.item(), bytes) else str(value.item())
    return text.strip().lower() or "neutral"


def load_amass_npz(path: str | os.PathLike, body_model: BodyModel | None = None, fps: float = FPS) -> Motion:
    """An AMASS-style `.npz` -> a canonicalised Motion at `fps`.

    The body model gives the rest skeleton for the file's betas (default: the user's model for the
    file's gender when $VIMOGEN_BODY_MODEL_DIR is set, otherwise the procedural model)."""
    data = read_npz(path, ("poses", "trans", "betas", "gender") + FRAMERATE_KEYS)
    poses = as_axis_angle(finite_array(data, "poses", path), NUM_JOINTS, "poses", path)  # (T, 66)
    trans = check_translation(finite_array(data, "trans", path), "trans", path)  # (T, 3)
    check_frames({"poses": poses, "trans": trans}, path)
    rate_key = next((key for key in FRAMERATE_KEYS if key in data), None)
    if rate_key is None:
        raise MotionDataError(path, "missing the frame rate ('mocap_framerate')")
    source_fps = check_fps(data[rate_key], path)
    betas = check_betas(data, "betas", path)
    body = body_model if body_model is not None else body_model_from_env(_gender(data.get("gender")))
    motion = Motion.from_smpl(poses[:, :3], poses[:, 3:], trans, source_fps, offsets=body.offsets(betas))
    return canonicalize(resample(motion, fps))
