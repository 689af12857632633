"""One continuous motion of any length from (prompt, seconds) segments.

Models are trained on windows of at most 200 frames and do best at the 100 frames the built-in
clips are lengthened to (the tiny model's bodies come apart past about 120), so a long take is
generated window by window (`WINDOW_FRAMES`): each window continues the last `overlap` frames of what exists (prefix continuation,
`constraints.Prefix`) and adds up to `window - overlap` new frames for its segment's prompt. The
prefix is first turned and moved so that it starts at the origin facing +Y, as every training clip
does, and the new frames are turned back. Each window costs the same, so time grows linearly with
the duration and memory holds only the motion itself. The seams are where a window's prefix ends:
the network generates across them, enforcement joins the prefix without a kink, and `joined`
smooths the few frames around each seam.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vimogen_core.control.constraints import ConstraintError, Prefix
from vimogen_core.control.sampling import generate_controlled
from vimogen_core.motion.cleanup import above_floor, extend_one_frame, gaussian_smooth
from vimogen_core.motion.representation import (canonical_turn_and_shift, encode_features, features_to_joints,
                                                features_to_rotations, turn_and_move_array)
from vimogen_core.motion import rotations as rot
from vimogen_core.motion.skeleton import FPS

MAX_SECONDS = 3600.0
SEAM_SIGMA = 1.5  # frames: the smoothing across a seam
# Timelines keep 100-frame windows although single long prompts are continued in `trained_window`
# ones (80 frames for the demo's model): on the demo champion (benchmarks/control.py) 80-frame
# windows retrieved 2 of the 6 segments with a worst seam root speed of 2.16x, 100-frame ones 4/6
# at 1.37x - fewer seams, more new frames per window.
WINDOW_FRAMES = 100
OVERLAP_FRAMES = 20


@dataclass(frozen=True)
class Segment:
    prompt: str
    seconds: float


def check_timeline(segments: list[Segment]) -> list[int]:
    """Frames per segment; an empty timeline, an empty prompt or a non-positive length is an error."""
    if not segments:
        raise ConstraintError("timeline: no segments given")
    frames = []
    for i, segment in enumerate(segments):
        if not isinstance(segment.prompt, str) or not segment.prompt.strip():
            raise ConstraintError(f"timeline segment {i}: the prompt is empty")
        if not np.isfinite(segment.seconds) or segment.seconds <= 0:
            raise ConstraintError(f"timeline segment {i}: seconds must be a positive number, got {segment.seconds!r}")
        frames.append(max(2, int(round(segment.seconds * FPS))))
    if sum(frames) > MAX_SECONDS * FPS:
        raise ConstraintError(f"timeline: {sum(frames) / FPS:g} s is longer than {MAX_SECONDS:g} s")
    return frames


def windows(segment_frames: list[int], window: int, overlap: int) -> list[tuple[int, int, int]]:
    """(segment index, first new frame, new frame count) per window, in order."""
    if not 0 < overlap < window:
        raise ConstraintError(f"timeline: overlap {overlap} must be between 0 and the window of {window} frames")
    out, start = [], 0
    for index, n in enumerate(segment_frames):
        room = window if start == 0 else window - overlap
        pieces = -(-n // room)
        for count in np.diff(np.linspace(0, n, pieces + 1).round().astype(int)):  # even pieces, none short
            out.append((index, start, int(count)))
            start += int(count)
    return out


def _undo(yaw: float, shift: tuple[float, float]) -> tuple[float, tuple[float, float]]:
    """The inverse of turning by yaw then moving by shift."""
    back = rot.rotation_about_z(torch.tensor(-yaw, dtype=torch.float64)).numpy()[:2, :2] @ np.asarray(shift)
    return -yaw, (-float(back[0]), -float(back[1]))


def generate_timeline(generator, segments: list[Segment], steps: int | None = None, cfg_scale: float | None = None,
                      seed: int = 0, method: str = "inpaint", window: int = WINDOW_FRAMES, overlap: int = OVERLAP_FRAMES,
                      progress: bool = False) -> np.ndarray:
    """(N, 276) features of one motion following the segments in order; `steps` default: the
    checkpoint's (Generator.default_steps)."""
    steps = generator.default_steps if steps is None else steps
    segment_frames = check_timeline(segments)
    plan = windows(segment_frames, window, overlap)
    total = sum(segment_frames)
    motion = np.zeros((total, generator.normalizer.mean.shape[0]), np.float32)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="timeline", unit="frame")
    for k, (index, start, count) in enumerate(plan):
        prompt = segments[index].prompt
        if start == 0:
            new = generator.generate([prompt], count, steps=steps, cfg_scale=cfg_scale, seed=seed)[0]
        else:
            prefix = motion[start - overlap:start]
            yaw, shift = canonical_turn_and_shift(prefix)
            targets = Prefix(turn_and_move_array(prefix, yaw, shift)).targets(overlap + count)
            made = generate_controlled(generator, [prompt], [targets], steps=steps, cfg_scale=cfg_scale,
                                       seed=seed + k, method=method)[0]
            new = turn_and_move_array(made[overlap:], *_undo(yaw, shift))
        motion[start:start + count] = new
        if bar is not None:
            bar.update(count)
    if bar is not None:
        bar.close()
    return joined(motion, [start for _, start, _ in plan[1:]])


def joined(feats: np.ndarray, seams: list[int], sigma: float = SEAM_SIGMA) -> np.ndarray:
    """The stitched windows as one motion: joint positions smoothed along time near each seam
    (blended in with a Gaussian of the distance to it), then re-encoded so the velocity channels
    are the differences of the positions across the seams too. What remains at a seam is the
    change of direction the next window's network continuation makes within a frame or two."""
    f = torch.from_numpy(feats.astype(np.float64))
    local, _ = features_to_rotations(f)
    joints = features_to_joints(f)  # (N, 22, 3)
    if seams:
        t = torch.arange(len(f), dtype=torch.float64)[:, None]
        near = torch.exp(-0.5 * ((t - torch.tensor(seams, dtype=torch.float64)[None, :]) / (2 * sigma)) ** 2)
        blend = near.sum(1).clamp(max=1.0)[:, None, None]  # (N, 1, 1)
        smoothed = gaussian_smooth(joints.reshape(len(f), -1), sigma).reshape(joints.shape)
        joints = (1 - blend) * joints + blend * smoothed
    # Feet stay above the floor, as the clean-up leaves every generated motion: the faded offsets
    # that join a window to its prefix can dip them below it.
    return encode_features(*extend_one_frame(local, above_floor(joints))).float().numpy()


def trained_window(generator) -> int:
    """The longest motion one window makes well: 80% of the checkpoint's longest training window.
    Positions near the end of the training windows are rarely trained (a random 40..max crop
    reaches them seldom) and there the bodies come apart: the demo's tiny model (max_frames=100)
    has a 95th-percentile bone-length sum of 36 m over 120-frame motions, 7.3 m (about its
    skeleton's) when they are made of 80-frame windows."""
    return max(2 * OVERLAP_FRAMES, int(0.8 * generator.train_config.max_frames))


def generate_any_length(generator, prompts: list[str], n_frames: list[int], ref_motions=None, steps: int | None = None,
                        cfg_scale: float | None = None, seed: int = 0, batch_size: int = 32,
                        progress: bool = False) -> list[np.ndarray]:
    """`generator.generate` for every length: text-mode motions longer than `trained_window` are
    continued window by window like a one-segment timeline (seeded by their position, as the
    batch seeds the rest); reference-mode ones and the others go through the batch as they are.
    `steps` default: the checkpoint's (50, or a ViMoGen-light student's few)."""
    steps = generator.default_steps if steps is None else steps
    lengths = [int(n_frames)] * len(prompts) if np.isscalar(n_frames) else [int(n) for n in n_frames]
    refs = list(ref_motions) if ref_motions is not None else [None] * len(prompts)
    window = trained_window(generator)
    long = [i for i, (n, ref) in enumerate(zip(lengths, refs)) if n > window and ref is None]
    short = [i for i in range(len(prompts)) if i not in set(long)]
    out: list[np.ndarray | None] = [None] * len(prompts)
    if short:
        made = generator.generate([prompts[i] for i in short], [lengths[i] for i in short],
                                  ref_motions=[refs[i] for i in short] if any(r is not None for r in refs) else None,
                                  steps=steps, cfg_scale=cfg_scale, seeds=[seed + i for i in short], batch_size=batch_size,
                                  progress=progress)
        for i, feats in zip(short, made):
            out[i] = feats
    for i in long:
        generator.check_request([prompts[i]], lengths[i], None)
        out[i] = generate_timeline(generator, [Segment(prompts[i], lengths[i] / FPS)], steps=steps, cfg_scale=cfg_scale,
                                   seed=seed + i, window=window)
    return out
