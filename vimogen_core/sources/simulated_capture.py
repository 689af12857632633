"""Simulated visual capture: a stand-in for "film a performer, run mesh recovery on the video".

It turns clean optical motion into what a monocular mesh-recovery model would output for a video
of it: SMPL parameters in camera coordinates (camera y down, z forward) at the video frame rate,
with the defects such output really has - per-frame jitter (strongest along depth, which a single
camera barely observes), depth drift, foot skating from a wandering root, and gross failures where
the body flips front-to-back for a few frames. The result goes through the same HMR ingestion path
(`vimogen_core.sources.hmr.load_hmr_output`) a real recovery output would, so the curation gates
see realistic defects. Nothing here pretends to be a real video: every sample says it is simulated.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from vimogen_core.motion import rotations as rot
from vimogen_core.motion.motion import Motion, resample
from vimogen_core.motion.skeleton import rest_offsets


@dataclass(frozen=True)
class CaptureDefects:
    """Per-frame error model of a mesh-recovery output (angles in radians, lengths in metres)."""

    pose_noise: float  # per-frame noise of each body-joint axis-angle component
    orient_noise: float  # per-frame noise of the global orientation
    image_plane_noise: float  # per-frame root noise across the image (camera x, y)
    depth_noise: float  # per-frame root noise along the optical axis
    depth_drift: float  # random-walk step of the depth error per frame
    skate_amplitude: float  # slow sideways root wander: planted feet slide
    flips: int = 0  # gross failures: segments with the body turned 180 degrees about the camera y axis
    flip_frames: tuple[int, int] = (3, 8)  # length range of a flip segment (video frames)


CAPTURE_PRESETS: dict[str, CaptureDefects] = {
    # A good, temporally smoothed recovery of an easy video: millimetre noise, little drift.
    "clean": CaptureDefects(0.003, 0.003, 0.001, 0.003, 0.0005, 0.02),
    # Typical single-view recovery: visible jitter, depth wander, some foot skating.
    "noisy": CaptureDefects(0.012, 0.012, 0.004, 0.015, 0.002, 0.05),
    # A failure case: heavy jitter plus front/back flips - what the jitter gate exists to catch.
    "gross_failure": CaptureDefects(0.06, 0.06, 0.02, 0.08, 0.006, 0.1, flips=2),
}


@dataclass(frozen=True)
class SimulatedCameraConfig:
    video_fps: float = 30.0
    distance_range: tuple[float, float] = (3.0, 6.0)  # camera to the nearest the performer gets, metres
    height_range: tuple[float, float] = (1.0, 1.6)  # camera height above the floor (level camera)
    focal_length: float = 1000.0  # pixels
    image_size: tuple[int, int] = (1920, 1080)  # width, height


def capture_rng(*key: object) -> np.random.Generator:
    """A generator seeded from a stable hash of `key`: the same take gives the same capture anywhere."""
    digest = hashlib.sha256("/".join(map(str, key)).encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _level_camera(rng: np.random.Generator, path_xy: np.ndarray, config: SimulatedCameraConfig) -> tuple[np.ndarray, np.ndarray]:
    """A level camera at a random heading, aimed at the middle of the performer's path (T, 2) and far
    enough back that the whole path stays in front of it. Returns the world->camera rotation (3, 3),
    whose rows are the camera x (right), y (down), z (forward) axes, and the camera centre (3,)."""
    heading = rng.uniform(0.0, 2.0 * np.pi)
    forward = np.array([np.cos(heading), np.sin(heading), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    right = np.cross(down, forward)
    middle = 0.5 * (path_xy.min(axis=0) + path_xy.max(axis=0))
    reach = float(np.linalg.norm(path_xy - middle, axis=-1).max())
    distance = rng.uniform(*config.distance_range) + reach
    centre = np.append(middle, 0.0) - distance * forward
    centre[2] = rng.uniform(*config.height_range)
    return np.stack([right, down, forward]), centre


def simulate_capture(
    motion: Motion,
    defects: CaptureDefects,
    rng: np.random.Generator,
    camera: SimulatedCameraConfig = SimulatedCameraConfig(),
) -> dict[str, np.ndarray | float]:
    """World motion -> mesh-recovery style output in camera coordinates, with `defects`.

    Returns global_orient (T, 3), body_pose (T, 63) axis-angle, transl (T, 3) camera coordinates,
    fps, focal_length, image_size (2,), and the true camera (camera_rotation (3, 3) world->camera,
    camera_centre (3,)) that a real recovery would not know.
    """
    video = resample(motion, camera.video_fps)
    local = video.local_rotmats.detach().cpu().numpy()  # (T, 22, 3, 3)
    pelvis = video.joints[:, 0].detach().cpu().numpy()  # (T, 3) world
    n = local.shape[0]
    world_to_cam, centre = _level_camera(rng, pelvis[:, :2], camera)

    root_cam = np.einsum("ij,tjk->tik", world_to_cam, local[:, 0])  # (T, 3, 3)
    pelvis_cam = (pelvis - centre) @ world_to_cam.T  # (T, 3)

    if defects.flips:
        flip = rot.axis_angle_to_matrix(torch.tensor([0.0, np.pi, 0.0], dtype=torch.float64)).numpy()
        for _ in range(defects.flips):
            length = int(rng.integers(defects.flip_frames[0], defects.flip_frames[1] + 1))
            start = int(rng.integers(0, max(1, n - length)))
            root_cam[start : start + length] = flip @ root_cam[start : start + length]

    aa = rot.matrix_to_axis_angle(torch.from_numpy(np.concatenate([root_cam[:, None], local[:, 1:]], axis=1))).numpy()
    aa[:, 0] += rng.normal(0.0, defects.orient_noise, size=(n, 3))
    aa[:, 1:] += rng.normal(0.0, defects.pose_noise, size=(n, 21, 3))

    error = np.zeros((n, 3))
    error[:, :2] += rng.normal(0.0, defects.image_plane_noise, size=(n, 2))
    error[:, 2] += rng.normal(0.0, defects.depth_noise, size=n) + np.cumsum(rng.normal(0.0, defects.depth_drift, size=n))
    t = np.arange(n) / camera.video_fps
    period = rng.uniform(1.0, 3.0)
    error[:, 0] += defects.skate_amplitude * np.sin(2.0 * np.pi * t / period + rng.uniform(0.0, 2.0 * np.pi))

    # SMPL convention: pelvis = transl + pelvis rest offset (not rotated by the root).
    offsets = rest_offsets() if motion.offsets is None else motion.offsets
    transl = pelvis_cam + error - offsets[0]
    return {
        "global_orient": aa[:, 0].astype(np.float32),
        "body_pose": aa[:, 1:].reshape(n, 63).astype(np.float32),
        "transl": transl.astype(np.float32),
        "fps": float(camera.video_fps),
        "focal_length": float(camera.focal_length),
        "image_size": np.asarray(camera.image_size, dtype=np.int32),
        "camera_rotation": world_to_cam.astype(np.float32),
        "camera_centre": centre.astype(np.float32),
    }
