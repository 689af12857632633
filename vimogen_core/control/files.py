"""The control inputs as files (`vimogen generate` flags) and as JSON values (the served model's
columns); README "Motion control" documents the formats.

- keyframes: {"frames": [20, 60], "joints": ["pelvis", "left_wrist"], "positions": [[[x, y, z], ...], ...]}
  (K frames x J joints x 3, metres), or {"frames": [...], "poses": "walk.npy"} for full-body poses
  taken from those frames of a (T, 276) features file (or "poses": [[276 numbers], ...]).
- trajectory: {"xy": [[x, y], ...]} per frame, or {"waypoints": [[x, y], ...], "times": [s, ...]},
  optionally "heading_deg": one per row or waypoint (degrees counter-clockwise from +Y); a (T, 2)
  .npy is the per-frame form.
- timeline: {"segments": [{"prompt": "...", "seconds": 5}, ...]} (or the bare list).
Paths inside a JSON file are relative to that file. Every problem names the file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vimogen_core.control.constraints import ConstraintError, Keyframes, RootTrajectory
from vimogen_core.control.timeline import Segment
from vimogen_core.motion.representation import load_features


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConstraintError(f"{path}: file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConstraintError(f"{path}: not valid JSON ({err})") from None


def _object(value: Any, where: str, keys: set[str]) -> dict:
    if not isinstance(value, dict):
        raise ConstraintError(f"{where}: expected a JSON object with {', '.join(sorted(keys))}")
    unknown = set(value) - keys
    if unknown:
        raise ConstraintError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(keys))}")
    return value


def _array(value: Any, where: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConstraintError(f"{where}: expected numbers") from None


def keyframes_from_json(value: Any, where: str, base: Path | None = None) -> Keyframes:
    value = _object(value, where, {"frames", "joints", "positions", "poses"})
    if "frames" not in value:
        raise ConstraintError(f"{where}: 'frames' is missing")
    frames = _array(value["frames"], f"{where} frames")
    if frames.ndim != 1 or (frames != np.round(frames)).any():
        raise ConstraintError(f"{where}: 'frames' must be a list of whole frame numbers")
    frames = tuple(int(f) for f in frames)
    poses = value.get("poses")
    if isinstance(poses, str):
        source = load_features((base or Path.cwd()) / poses)
        if max(frames, default=0) >= len(source) or min(frames, default=0) < 0:
            raise ConstraintError(f"{where}: frames {list(frames)} outside the {len(source)} frames of {poses}")
        poses = source[list(frames)]
    elif poses is not None:
        poses = _array(poses, f"{where} poses")
    positions = None if value.get("positions") is None else _array(value["positions"], f"{where} positions")
    return Keyframes(frames=frames, positions=positions, joints=value.get("joints"), poses=poses)


def trajectory_from_json(value: Any, where: str) -> RootTrajectory:
    value = _object(value, where, {"xy", "waypoints", "times", "heading_deg"})
    return RootTrajectory(xy=None if "xy" not in value else _array(value["xy"], f"{where} xy"),
                          waypoints=None if "waypoints" not in value else _array(value["waypoints"], f"{where} waypoints"),
                          times=None if "times" not in value else _array(value["times"], f"{where} times"),
                          heading_deg=None if "heading_deg" not in value else _array(value["heading_deg"],
                                                                                     f"{where} heading_deg"))


def timeline_from_json(value: Any, where: str) -> list[Segment]:
    if isinstance(value, dict):
        value = _object(value, where, {"segments"}).get("segments")
    if not isinstance(value, list):
        raise ConstraintError(f"{where}: expected a list of segments")
    segments = []
    for i, item in enumerate(value):
        item = _object(item, f"{where} segment {i}", {"prompt", "seconds"})
        if "prompt" not in item or "seconds" not in item:
            raise ConstraintError(f"{where} segment {i}: needs 'prompt' and 'seconds'")
        seconds = item["seconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise ConstraintError(f"{where} segment {i}: 'seconds' must be a number")
        segments.append(Segment(str(item["prompt"]), float(seconds)))
    return segments


def read_keyframes(path: str | Path) -> Keyframes:
    path = Path(path)
    return keyframes_from_json(_read_json(path), str(path), path.parent)


def read_trajectory(path: str | Path) -> RootTrajectory:
    path = Path(path)
    if path.suffix == ".npy":
        try:
            xy = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ConstraintError(f"{path}: not a readable .npy array ({err})") from None
        return RootTrajectory(xy=xy)
    return trajectory_from_json(_read_json(path), str(path))


def read_timeline(path: str | Path) -> list[Segment]:
    path = Path(path)
    return timeline_from_json(_read_json(path), str(path))


CONTROL_COLUMNS = ("keyframes", "trajectory", "keep_joints", "continue_from", "timeline")


def constraints_from_columns(values: dict[str, Any], where: str) -> tuple[list, list[Segment] | None]:
    """The served model's control columns (JSON texts, README "Motion control") as constraints
    and timeline segments: keyframes and trajectory as in the files, keep_joints as
    {"joints": "upper" | [names], "source": [[276 numbers], ...]}, continue_from as (P, 276) rows,
    timeline as the segments list."""
    from vimogen_core.control.constraints import KeepJoints, Prefix

    parsed = {}
    for name in CONTROL_COLUMNS:
        text = values.get(name)
        if text is None or text == "":
            continue
        try:
            parsed[name] = json.loads(text) if isinstance(text, str) else text
        except json.JSONDecodeError as err:
            raise ConstraintError(f"{where} {name}: not valid JSON ({err})") from None
    constraints = []
    if "keyframes" in parsed:
        constraints.append(keyframes_from_json(parsed["keyframes"], f"{where} keyframes"))
    if "trajectory" in parsed:
        constraints.append(trajectory_from_json(parsed["trajectory"], f"{where} trajectory"))
    if "keep_joints" in parsed:
        keep = _object(parsed["keep_joints"], f"{where} keep_joints", {"joints", "source"})
        if "joints" not in keep or "source" not in keep:
            raise ConstraintError(f"{where} keep_joints: needs 'joints' and 'source'")
        constraints.append(KeepJoints(_array(keep["source"], f"{where} keep_joints source"), keep["joints"]))
    if "continue_from" in parsed:
        constraints.append(Prefix(_array(parsed["continue_from"], f"{where} continue_from")))
    segments = timeline_from_json(parsed["timeline"], f"{where} timeline") if "timeline" in parsed else None
    if segments is not None and constraints:
        raise ConstraintError(f"{where}: a timeline cannot be combined with other control columns")
    return constraints, segments
