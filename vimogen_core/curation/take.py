"""One take -> its samples: resampled, cut into windows, canonicalised, mirrored, gated. A take
whose arrays cannot be curated raises MotionDataError naming its file; `curate_or_quarantine`
turns exactly that error into a quarantine row (anything else is a bug and propagates)."""
from __future__ import annotations

import json

import numpy as np
import torch

from vimogen_core.curation.captions import clean_captions, mirror_caption
from vimogen_core.curation.config import CurationConfig
from vimogen_core.curation.gates import CaptionJudge, check_finite, evaluate_gates, motion_statistics, motion_statistics_batch
from vimogen_core.curation.records import SPLITS, CuratedSample, RawSample, Rejection, assign_split
from vimogen_core.errors import MotionDataError
from vimogen_core.motion.motion import canonicalize_arrays, mirror_joints, resample
from vimogen_core.motion.representation import FEATURE_DIM, JOINT_POS, encode_features, mirror_features
from vimogen_core.motion.skeleton import NUM_JOINTS
from vimogen_core.sources import SOURCES, VIDEO_SOURCES

_SPLIT_SYNONYMS = {"training": "train", "validation": "val", "valid": "val", "dev": "val", "testing": "test"}


def window_starts(n_frames: int, window: int, stride: int) -> list[int]:
    """Starts of `window`-frame windows covering an `n_frames` take; the last one ends at the take's end."""
    if n_frames <= window:
        return [0]
    starts = list(range(0, n_frames - window + 1, stride))
    if starts[-1] != n_frames - window:
        starts.append(n_frames - window)
    return starts


def _reject(raw: RawSample, sample_id: str, failures: list[tuple[str, str]], stats: dict[str, float]) -> Rejection:
    return Rejection(
        id=sample_id,
        source=raw.source,
        subset=raw.subset,
        origin=raw.origin,
        gates=tuple(g for g, _ in failures),
        reasons=tuple(r for _, r in failures),
        stats=stats,
    )


def _gate_and_build(raw: RawSample, sample_id: str, joints: np.ndarray, features: np.ndarray, captions: tuple[str, ...],
                    video_caption: str, mirrored: bool, window_start: int, split: str, config: CurationConfig,
                    judge: CaptionJudge | None, keep_extrinsic: bool = True,
                    joint_stats: dict[str, float] | None = None) -> CuratedSample | Rejection:
    """joints (T, 22, 3), features (T-1, 276) or (T, 276) for released samples. The take's camera
    extrinsic is kept only where it still describes the sample's world frame (`keep_extrinsic`).
    `joint_stats` may carry the joint statistics when already known (a mirror's equal the original's)."""
    problem = check_finite(joints, features)
    if problem:
        return _reject(raw, sample_id, [("non_finite", problem)], {})
    stats = dict(joint_stats) if joint_stats is not None else motion_statistics(joints, config.fps)
    stats["feature_abs_max"] = float(np.abs(features).max())
    failures = evaluate_gates(stats, features.shape[0], captions, video_caption, raw.source, joints, config.fps, config.gates, judge)
    if failures:
        return _reject(raw, sample_id, failures, stats)
    return CuratedSample(
        id=sample_id,
        group_id=raw.split_group,
        source=raw.source,
        subset=raw.subset,
        split=split,
        origin=raw.origin,
        features=np.ascontiguousarray(features, dtype=np.float32),
        motion_captions=captions,
        video_caption=video_caption,
        mirrored=mirrored,
        window_start=window_start,
        stats=stats,
        annotation_json=json.dumps(raw.annotation, sort_keys=True) if raw.annotation is not None else "",
        camera_extrinsic=raw.camera_extrinsic if keep_extrinsic else None,
        camera_intrinsic=raw.camera_intrinsic,
    )


MIN_TAKE_FRAMES = 3  # the gates' joint statistics include second differences (jitter)


def _check_arrays(raw: RawSample) -> None:
    """Raise MotionDataError naming the take's file when its arrays cannot be curated at all (wrong
    shapes, too few frames); bad values are left to the gates, which reject with their own reasons."""
    if raw.features is not None:
        shape = np.shape(raw.features)
        if len(shape) != 2 or shape[1] != FEATURE_DIM:
            raise MotionDataError(raw.origin, f"expected features of shape (T, {FEATURE_DIM}), got {shape}")
        n_frames = shape[0]
    else:
        if raw.motion is None:
            raise MotionDataError(raw.origin, "take has neither motion nor features")
        joints, local = tuple(raw.motion.joints.shape), tuple(raw.motion.local_rotmats.shape)
        if len(joints) != 3 or joints[1:] != (NUM_JOINTS, 3) or local != (*joints[:2], 3, 3):
            raise MotionDataError(raw.origin, f"expected joints (T, {NUM_JOINTS}, 3) and local_rotmats (T, {NUM_JOINTS}, 3, 3), "
                                              f"got {joints} and {local}")
        n_frames = joints[0]
    if n_frames < MIN_TAKE_FRAMES:
        raise MotionDataError(raw.origin, f"{n_frames} frame(s); at least {MIN_TAKE_FRAMES} are needed")


def curate_take(raw: RawSample, config: CurationConfig = CurationConfig(), judge: CaptionJudge | None = None) -> list[CuratedSample | Rejection]:
    """All samples (windows x {original, mirror}) of one take, each curated or rejected with reasons.
    Raises MotionDataError, naming the take's file, for a take whose arrays cannot be curated."""
    _check_arrays(raw)
    if raw.source not in SOURCES:
        return [_reject(raw, raw.id, [("source", f"unknown source {raw.source!r}; expected one of {SOURCES}")], {})]
    split = _SPLIT_SYNONYMS.get(str(raw.split).lower(), raw.split) if raw.split else assign_split(raw.split_group, config.split_fractions, config.split_salt)
    if split not in SPLITS:
        return [_reject(raw, raw.id, [("split", f"unknown split {raw.split!r}; expected one of {SPLITS}")], {})]
    captions = clean_captions(raw.motion_captions)
    video_caption = raw.video_caption.strip() if isinstance(raw.video_caption, str) else ""

    if raw.features is not None:  # already-encoded released sample: kept as released
        features = np.asarray(raw.features, dtype=np.float32)  # (T, 276)
        joints = features[:, JOINT_POS].reshape(-1, 22, 3)  # (T, 22, 3)
        return [_gate_and_build(raw, raw.id, joints, features, captions, video_caption, False, 0, split, config, judge)]

    motion = raw.motion
    problem = check_finite(motion.joints.numpy(), motion.local_rotmats.numpy())
    if problem:
        return [_reject(raw, raw.id, [("non_finite", problem)], {})]
    motion = resample(motion, config.fps)
    if motion.n_frames < MIN_TAKE_FRAMES:
        raise MotionDataError(raw.origin, f"{raw.motion.n_frames} frames at {raw.motion.fps:g} fps are {motion.n_frames} at "
                                          f"{config.fps:g} fps; at least {MIN_TAKE_FRAMES} are needed")
    set_floor = raw.source in VIDEO_SOURCES  # recovered heights are not trustworthy; the floor is re-found
    length = config.gates.max_frames + 1
    starts = window_starts(motion.n_frames, length, config.window_stride)
    # All windows of the take at once: they share one length (a take no longer than a window is its only one).
    frames = torch.arange(min(length, motion.n_frames))[None, :] + torch.tensor(starts)[:, None]  # (W, L)
    local, joints = canonicalize_arrays(motion.local_rotmats[frames], motion.joints[frames], set_floor)  # (W, L, 22, ...)
    features = encode_features(local, joints).float().numpy()  # (W, L-1, 276)
    joints_np = joints.numpy()  # (W, L, 22, 3)
    finite = np.isfinite(joints_np).all(axis=(1, 2, 3))  # (W,)
    # Every joint statistic (speeds, jitter, bone lengths, heights, travel) is invariant under
    # reflection plus the left/right swap, so the mirror reuses the original's; its joints and
    # features are exact sign flips and permutations of the original's (no FK, no re-encoding).
    finite_stats = iter(motion_statistics_batch(joints_np[finite], config.fps))
    joint_stats = [next(finite_stats) if ok else None for ok in finite]
    variants = [(joints_np, features, False, captions, video_caption)]
    if config.mirror:
        variants.append((mirror_joints(joints).numpy(), mirror_features(features), True,
                         tuple(mirror_caption(c) for c in captions), mirror_caption(video_caption)))
    # a camera pose stays valid only for the whole, unmirrored take
    whole_take = len(starts) == 1 and frames.shape[1] == motion.n_frames
    out: list[CuratedSample | Rejection] = []
    for w, start in enumerate(starts):
        window_id = raw.id if len(starts) == 1 else f"{raw.id}@{start}"
        for variant_joints, variant_features, mirrored, variant_captions, variant_video_caption in variants:
            out.append(
                _gate_and_build(
                    raw,
                    f"{window_id}~mirror" if mirrored else window_id,
                    variant_joints[w],
                    variant_features[w],
                    variant_captions,
                    variant_video_caption,
                    mirrored,
                    start,
                    split,
                    config,
                    judge,
                    keep_extrinsic=whole_take and not mirrored,
                    joint_stats=joint_stats[w],
                )
            )
    return out


def curate_or_quarantine(raw: RawSample, config: CurationConfig, judge: CaptionJudge | None) -> list[CuratedSample | Rejection]:
    try:
        return curate_take(raw, config, judge)
    except MotionDataError as err:  # one take's bad data must not stop the run; any other error is a bug and does
        return [_reject(raw, raw.id, [("data", str(err))], {})]
