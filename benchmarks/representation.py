"""Encode/decode throughput of the 276-d representation on real clips. Prints JSON.

Encode = rotations + joints -> features; decode = features -> joints (direct read and velocity
integration) and features -> rotations. Batch = the 15 built-in clips looped to 200 frames.
"""
from __future__ import annotations

import json
import statistics
import time

import torch

from vimogen_core.motion.representation import (
    encode_features, features_to_joints, features_to_joints_integrated, features_to_rotations,
)
from vimogen_core.sources.deepmimic import load_builtin_clips

FRAMES = 201
REPEATS = 7


def median_seconds(fn) -> float:
    fn()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    clips = load_builtin_clips(min_frames=FRAMES)
    rotations = torch.stack([c.motion.local_rotmats[:FRAMES] for c in clips]).float()  # (B, T, 22, 3, 3)
    joints = torch.stack([c.motion.joints[:FRAMES] for c in clips]).float()  # (B, T, 22, 3)
    feats = encode_features(rotations, joints)  # (B, T-1, 276)
    n_frames = feats.shape[0] * feats.shape[1]
    result = {"clips": len(clips), "frames_per_clip": feats.shape[1], "threads": torch.get_num_threads()}
    for name, fn in {
        "encode": lambda: encode_features(rotations, joints),
        "decode_positions": lambda: features_to_joints(feats).clone(),  # materialise: the read is a view
        "decode_integrated": lambda: features_to_joints_integrated(feats),
        "decode_rotations": lambda: features_to_rotations(feats),
    }.items():
        seconds = median_seconds(fn)
        result[f"{name}_frames_per_s"] = round(n_frames / seconds)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
