"""Headless stick-figure renders of joint motions (world Z up, metres): MP4 or GIF by extension,
and a PNG strip of a few frames (for metadata previews).

Each frame shows the skeleton (left side blue, right side red), a floor grid and the pelvis
trajectory on the floor. The camera looks down at a fixed angle and follows the smoothed pelvis,
so the grid slides under a travelling figure. Projection is done here in numpy and drawn on a
plain 2-D Matplotlib figure (Agg canvas, no pyplot state), reusing the same artists for every
frame, which keeps rendering at a few milliseconds per frame.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vimogen_core.files import atomic_path
from vimogen_core.motion.skeleton import FPS, NUM_JOINTS

# Kinematic chains drawn as polylines: left leg, right leg, spine to head, left arm, right arm.
CHAINS = ((0, 1, 4, 7, 10), (0, 2, 5, 8, 11), (0, 3, 6, 9, 12, 15), (9, 13, 16, 18, 20), (9, 14, 17, 19, 21))
CHAIN_COLOURS = ("#1f5fbf", "#c8322d", "#222222", "#1f5fbf", "#c8322d")


@dataclass(frozen=True)
class RenderConfig:
    size_px: int = 400  # square frames; a multiple of 16 suits video encoders
    azimuth_deg: float = 60.0  # camera direction from the target, from world +X towards +Y
    elevation_deg: float = 20.0
    distance_m: float = 5.0
    focal: float = 3.2  # image half-height per unit of (height / depth)
    grid_spacing_m: float = 0.5
    grid_half_extent_m: float = 3.0
    follow_window_s: float = 1.0  # the camera follows the pelvis averaged over this window
    near_m: float = 0.2


RENDER_PRESETS = {"default": RenderConfig(), "preview": RenderConfig(size_px=240)}


class _Camera:
    """A perspective camera with a fixed orientation that follows a target per frame."""

    def __init__(self, joints: np.ndarray, fps: float, config: RenderConfig):
        pelvis = joints[:, 0]  # (T, 3)
        half = max(int(round(config.follow_window_s * fps / 2)), 0)
        padded = np.pad(pelvis[:, :2], ((half, half), (0, 0)), mode="edge")
        window = np.cumsum(np.pad(padded, ((1, 0), (0, 0))), axis=0)
        target = np.empty_like(pelvis)
        target[:, :2] = (window[2 * half + 1:] - window[: len(pelvis)]) / (2 * half + 1)
        target[:, 2] = np.clip(np.median(pelvis[:, 2]), 0.4, 1.2)
        az, el = np.radians(config.azimuth_deg), np.radians(config.elevation_deg)
        back = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        self.target = target  # (T, 3)
        self.position = target + config.distance_m * back  # (T, 3)
        self.forward = -back
        self.right = np.cross(self.forward, [0.0, 0.0, 1.0])
        self.right /= np.linalg.norm(self.right)
        self.up = np.cross(self.right, self.forward)
        self.config = config

    def project(self, points: np.ndarray, frame: int) -> np.ndarray:
        """World points (..., 3) -> image coordinates (..., 2); NaN behind the near plane."""
        rel = points - self.position[frame]
        depth = rel @ self.forward
        image = np.stack([rel @ self.right, rel @ self.up], axis=-1) * (self.config.focal / np.maximum(depth, 1e-6))[..., None]
        image[depth < self.config.near_m] = np.nan
        return image


def _grid_segments(centre: np.ndarray, config: RenderConfig) -> np.ndarray:
    """Floor grid lines around `centre` as a NaN-separated polyline (N, 3)."""
    s, extent = config.grid_spacing_m, config.grid_half_extent_m
    n_lines = int(round(2 * extent / s)) + 1
    segments = []
    for axis in (0, 1):
        start = np.floor((centre[axis] - extent) / s) * s
        positions = start + s * np.arange(n_lines)
        lo, hi = centre[1 - axis] - extent, centre[1 - axis] + extent
        line = np.zeros((n_lines, 3, 3))
        line[:, :, axis] = positions[:, None]
        line[:, 0, 1 - axis], line[:, 1, 1 - axis] = lo, hi
        line[:, 2] = np.nan
        segments.append(line.reshape(-1, 3))
    return np.concatenate(segments)


class _FigureRenderer:
    """One figure and its artists, redrawn per frame."""

    def __init__(self, joints: np.ndarray, fps: float, title: str | None, config: RenderConfig):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.joints, self.fps, self.config = joints, fps, config
        self.camera = _Camera(joints, fps, config)
        self.trajectory = np.concatenate([joints[:, 0, :2], np.zeros((len(joints), 1))], axis=1)  # (T, 3) on the floor
        inches = config.size_px / 100.0
        self.figure = Figure(figsize=(inches, inches), dpi=100)
        self.canvas = FigureCanvasAgg(self.figure)
        ax = self.figure.add_axes((0, 0, 1, 1))
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
        ax.set_axis_off()
        ax.set_facecolor("white")
        (self.grid,) = ax.plot([], [], color="#c8c8c8", lw=0.8)
        (self.path,) = ax.plot([], [], color="#e08a1e", lw=1.4, alpha=0.8)
        self.bones = [ax.plot([], [], color=c, lw=2.2, marker="o", ms=2.5)[0] for c in CHAIN_COLOURS]
        if title:
            ax.text(0.0, 0.94, title, ha="center", va="top", fontsize=9, transform=ax.transData)
        self.clock = ax.text(-0.96, -0.96, "", ha="left", va="bottom", fontsize=8, color="#555555")

    def draw(self, frame: int) -> np.ndarray:
        project = self.camera.project
        grid = project(_grid_segments(self.camera.target[frame], self.config), frame)
        self.grid.set_data(grid[:, 0], grid[:, 1])
        path = project(self.trajectory, frame)
        self.path.set_data(path[:, 0], path[:, 1])
        skeleton = project(self.joints[frame], frame)  # (22, 2)
        for line, chain in zip(self.bones, CHAINS):
            line.set_data(skeleton[list(chain), 0], skeleton[list(chain), 1])
        self.clock.set_text(f"frame {frame + 1}/{len(self.joints)}  {frame / self.fps:5.2f} s")
        self.canvas.draw()
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3) uint8


def _check_joints(joints) -> np.ndarray:
    if hasattr(joints, "detach"):
        joints = joints.detach().cpu().numpy()
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3) or len(joints) < 1:
        raise ValueError(f"joints must have shape (T, {NUM_JOINTS}, 3), got {joints.shape}")
    if not np.isfinite(joints).all():
        raise ValueError("joints have non-finite values")
    return joints


def render_motion(joints, path: str | os.PathLike, fps: float = FPS, title: str | None = None,
                  config: RenderConfig = RENDER_PRESETS["default"]) -> Path:
    """Joints (T, 22, 3) -> an MP4 (H.264) or GIF at `fps`, chosen by the file extension."""
    import imageio.v2 as imageio

    joints = _check_joints(joints)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise ValueError(f"{path}: render to .mp4 or .gif")
    path.parent.mkdir(parents=True, exist_ok=True)
    renderer = _FigureRenderer(joints, fps, title, config)
    with atomic_path(path) as tmp:
        if suffix == ".mp4":
            with imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=7,
                                    macro_block_size=16, ffmpeg_log_level="error") as writer:
                for frame in range(len(joints)):
                    writer.append_data(renderer.draw(frame))
        else:
            from PIL import Image

            # Frames are quantised to a palette as they come (1 byte per pixel held until the file is written).
            frames = [Image.fromarray(renderer.draw(frame)).quantize(colors=128, method=Image.Quantize.FASTOCTREE)
                      for frame in range(len(joints))]
            frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=1000.0 / fps, loop=0)
    return path


def render_frames_png(joints, path: str | os.PathLike, n: int = 4, title: str | None = None,
                      fps: float = FPS, config: RenderConfig = RENDER_PRESETS["preview"]) -> Path:
    """A PNG strip of `n` evenly spaced frames side by side."""
    import imageio.v2 as imageio

    joints = _check_joints(joints)
    renderer = _FigureRenderer(joints, fps, title, config)
    frames = np.unique(np.linspace(0, len(joints) - 1, max(n, 1)).round().astype(int))
    strip = np.concatenate([renderer.draw(int(frame)) for frame in frames], axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        imageio.imwrite(tmp, strip)
    return path
