"""Per-frame human mesh recovery (HMR) output from a video -> a world-frame Motion with the camera.

Input, per frame in camera coordinates (x right, y down, z forward, metres):
    global_orient (T, 3)   root rotation, axis-angle (or (T, 3, 3) / (T, 1, 3, 3) matrices)
    body_pose     (T, 63)  the 21 body joints, axis-angle (or (T, 21|23, 3), (T, 69), (T, 21|23, 3, 3))
    transl        (T, 3)   SMPL translation (pelvis = transl + the body model's rest pelvis)
optional:
    betas         (10,) or (T, 10)  shape (per-frame betas are averaged: one body per clip)
    focal_length  scalar, (2,), (T,) or (T, 2) pixels (per-frame values are averaged)
    image_size    (2,) = (width, height) pixels
    fps           the video frame rate (else pass `fps=`)
    extrinsic     (T, 9) per-frame world-to-camera pose [rot6d(R), t] (x_cam = R x_world + t) of
                  a Z-up world, e.g. from camera tracking; without it the camera is static and level.

On disk: an `.npz` with those keys (read with allow_pickle=False), or a `.json` object with the
same keys holding (nested) lists of numbers.

Camera to world: with no extrinsic, the fixed rotation world = (x, z, -y) of camera (y down,
z forward) gives world Z up with the camera looking along +Y. The motion is then resampled to
20 fps and canonicalised with `set_floor=True` (the lowest joint of the clip on z = 0, since
recovered depth and height are not trustworthy). The returned extrinsic (T, 9) is the camera
pose in the canonical world per output frame, in the same [rot6d(R), t] layout; the intrinsic
(3, 3) is K = [[f, 0, w/2], [0, f, h/2], [0, 0, 1]] (default 1920 x 1080 image, focal length
the image diagonal when unknown).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from vimogen_core.body.model import BodyModel, default_body_model
from vimogen_core.body.model_files import write_npz_atomic
from vimogen_core.body.params import NUM_BODY_JOINTS, as_axis_angle, check_betas, check_fps, check_frames, check_translation, finite_array
from vimogen_core.errors import MotionDataError
from vimogen_core.motion import rotations as rot
from vimogen_core.motion.motion import Motion, canonicalize, resample
from vimogen_core.motion.skeleton import FPS
from vimogen_core.sources.amass import read_npz

HMR_KEYS = ("global_orient", "body_pose", "transl", "betas", "focal_length", "image_size", "fps", "extrinsic")
DEFAULT_IMAGE_SIZE = (1920.0, 1080.0)
# Camera (x right, y down, z forward) -> world (Z up): world = (x_cam, z_cam, -y_cam).
CAMERA_TO_WORLD = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=torch.float64)


def read_hmr_file(path: str | os.PathLike) -> dict:
    """The raw arrays of an HMR output file (`.npz` or `.json`)."""
    path = Path(path)
    if path.suffix == ".json":
        if not path.is_file():
            raise MotionDataError(path, "file not found")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise MotionDataError(path, f"not valid JSON, truncated or corrupt ({err})") from None
        if not isinstance(data, dict):
            raise MotionDataError(path, "expected a JSON object with global_orient, body_pose, transl")
        return {key: data[key] for key in HMR_KEYS if key in data}
    if path.suffix == ".npz":
        return read_npz(path, HMR_KEYS)
    raise MotionDataError(path, "mesh-recovery output must be .npz or .json")


def intrinsic_matrix(focal_length, image_size, path=None) -> np.ndarray:
    """(3, 3) pinhole intrinsics from a focal length (pixels) and (width, height)."""
    width, height = DEFAULT_IMAGE_SIZE if image_size is None else np.asarray(image_size, dtype=np.float64).reshape(-1)[:2]
    if focal_length is None:
        fx = fy = float(np.hypot(width, height))
    else:
        focal = np.asarray(focal_length, dtype=np.float64)
        focal = focal.reshape(-1, focal.shape[-1]).mean(axis=0) if focal.ndim == 2 else focal
        fx, fy = (float(focal.mean()),) * 2 if focal.size != 2 else (float(focal[0]), float(focal[1]))
    if not all(np.isfinite([fx, fy, width, height])) or min(fx, fy, width, height) <= 0:
        raise MotionDataError(path, "focal_length and image_size must be positive numbers")
    return np.array([[fx, 0.0, width / 2], [0.0, fy, height / 2], [0.0, 0.0, 1.0]])


def _extrinsic_to_pose(extrinsic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, 9) [rot6d, t] -> R (T, 3, 3), t (T, 3)."""
    return rot.rot6d_to_matrix(extrinsic[:, :6]), extrinsic[:, 6:]


def _resample_camera(rotation: torch.Tensor, translation: torch.Tensor, source_fps: float, fps: float):
    """Per-frame camera poses at the output frame times (as `resample` places them)."""
    n_in = len(rotation)
    times = torch.arange(n_in, dtype=torch.float64) / source_fps
    n_out = int(np.floor(float(times[-1]) * fps + 1e-6)) + 1
    target = torch.arange(n_out, dtype=torch.float64) / fps
    i1 = torch.searchsorted(times, target, right=True).clamp(1, n_in - 1)
    i0 = i1 - 1
    w = ((target - times[i0]) * source_fps).clamp(0.0, 1.0)
    return (rot.slerp_frames(rotation, i0, i1, w),
            translation[i0] + (translation[i1] - translation[i0]) * w[:, None])


def load_hmr_output(path_or_dict, fps: float | None = None, body_model: BodyModel | None = None,
                    extrinsic=None, source: str | os.PathLike | None = None) -> tuple[Motion, np.ndarray, np.ndarray]:
    """Mesh-recovery output -> (Motion at 20 fps, canonical world; extrinsic (T, 9); intrinsic (3, 3)).

    path_or_dict: a file (see the module docstring) or a dict with the same keys.
    fps: the video frame rate; overrides the file's `fps`. extrinsic: (T, 9) world-to-camera
    poses overriding the file's. source: the name errors give for a dict input (its origin file)."""
    if isinstance(path_or_dict, dict):
        path, data = (None if source is None else str(source)), path_or_dict
    else:
        path, data = str(path_or_dict), read_hmr_file(path_or_dict)
    global_orient = as_axis_angle(finite_array(data, "global_orient", path), 1, "global_orient", path)  # (T, 3)
    body_pose = as_axis_angle(finite_array(data, "body_pose", path), NUM_BODY_JOINTS, "body_pose", path)  # (T, 63)
    transl = check_translation(finite_array(data, "transl", path), "transl", path)  # (T, 3)
    arrays = {"global_orient": global_orient, "body_pose": body_pose, "transl": transl}
    if extrinsic is None and "extrinsic" in data:
        extrinsic = finite_array(data, "extrinsic", path)
    if extrinsic is not None:
        extrinsic = np.asarray(extrinsic, dtype=np.float64)
        if extrinsic.ndim != 2 or extrinsic.shape[1] != 9:
            raise MotionDataError(path, f"'extrinsic' has shape {tuple(extrinsic.shape)}, expected (T, 9)")
        arrays["extrinsic"] = extrinsic
    n_frames = check_frames(arrays, path)
    if fps is None:
        if "fps" not in data:
            raise MotionDataError(path, "no frame rate: the file has no 'fps' and none was given")
        fps = data["fps"]
    source_fps = check_fps(fps, path)
    body = body_model if body_model is not None else default_body_model()
    offsets = body.offsets(check_betas(data, "betas", path))

    # Camera coordinates -> a Z-up world: per-frame camera poses, or the fixed level camera.
    if extrinsic is None:
        cam_rot = CAMERA_TO_WORLD.T.expand(n_frames, 3, 3)  # world-to-camera
        cam_t = torch.zeros(n_frames, 3, dtype=torch.float64)
    else:
        cam_rot, cam_t = _extrinsic_to_pose(torch.as_tensor(extrinsic))
    camera_motion = Motion.from_smpl(global_orient, body_pose, transl, source_fps, offsets=offsets)
    to_world = cam_rot.transpose(-1, -2)  # (T, 3, 3) camera-to-world rotation
    local = camera_motion.local_rotmats.clone()
    local[:, 0] = to_world @ local[:, 0]
    pelvis = (to_world @ (camera_motion.joints[:, 0] - cam_t)[..., None])[..., 0]  # (T, 3)
    world = Motion.from_rotations(local, pelvis - torch.as_tensor(offsets[0]), source_fps, offsets)
    world = resample(world, FPS)
    canonical = canonicalize(world, set_floor=True)

    # The canonicalisation is x' = turn @ x - shift; move the camera poses with it.
    turn = canonical.local_rotmats[0, 0] @ world.local_rotmats[0, 0].T  # (3, 3)
    shift = turn @ world.joints[0, 0] - canonical.joints[0, 0]
    cam_rot, cam_t = _resample_camera(cam_rot, cam_t, source_fps, FPS)
    canon_rot = cam_rot @ turn.T  # x_cam = R turn^T (x' + shift) + t
    canon_t = (canon_rot @ shift[:, None])[..., 0] + cam_t
    camera = torch.cat([rot.matrix_to_rot6d(canon_rot), canon_t], dim=-1).numpy()  # (T, 9)
    intrinsic = intrinsic_matrix(data.get("focal_length"), data.get("image_size"), path)
    return canonical, camera, intrinsic


def write_hmr_npz(path: str | os.PathLike, params: dict, fps: float, focal_length: float | None = None,
                  image_size: tuple[float, float] | None = None) -> Path:
    """Write mesh-recovery style output (camera-frame SMPL parameters) in the accepted `.npz` layout."""
    arrays = {key: np.asarray(params[key], dtype=np.float64) for key in ("global_orient", "body_pose", "transl")}
    arrays["fps"] = np.array(float(fps))
    if focal_length is not None:
        arrays["focal_length"] = np.array(float(focal_length))
    if image_size is not None:
        arrays["image_size"] = np.asarray(image_size, dtype=np.float64)
    path = Path(path)
    write_npz_atomic(path, arrays)
    return path
