"""The released ViMoGen-228K layout: an annotation JSON plus one motion file per sample.

Annotation JSON: a list of entries with `id`, `subset`, `split`, `motion_text_annot`,
`video_text_annot`, `motion_path` (relative to the data root) and optionally `video_path`,
`ref_motion_path`; any other fields are kept too. `motion_path` is a path or a list of paths; as
in the released loader, a list draws one path uniformly at random each time the entry is read.

Motion files: `.pt` holding a bare tensor [T, C] (optical MoCap) or a dict
{motion [T, C], extrinsic [T, 9], intrinsic [3, 3]} (video-recovered), read ONLY with
`torch.load(weights_only=True)`, so a file carrying pickled code is refused; `.npy` arrays
[T, C] are read with `allow_pickle=False`. C >= 276: the released loader keeps the first 276
columns (the released `data_samples/dummy_motion.pt` is (80, 426)). `extrinsic` may hold one row
more than `motion` (one camera per SMPL frame, before the velocity difference drops the last frame).
"""
from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from vimogen_core.errors import MotionDataError, pickled_objects_refused
from vimogen_core.motion.representation import FEATURE_DIM, check_features

ANNOTATION_FIELDS = ("id", "subset", "split", "motion_text_annot", "video_text_annot", "motion_path",
                     "video_path", "ref_motion_path")


@dataclass(frozen=True)
class VimogenRecord:
    """One annotation entry with its motion loaded. `annotation` is the entry exactly as released."""

    id: str
    subset: str | None
    split: str | None
    motion_text_annot: str | list[str] | None
    video_text_annot: str | list[str] | None
    motion_path: str  # the path read (drawn from the entry's list when it has several)
    video_path: str | None
    ref_motion_path: str | None
    motion_file: Path
    annotation: dict = field(repr=False)
    motion: np.ndarray | None = field(default=None, repr=False)  # (T, 276) float32
    reference_motion: np.ndarray | None = field(default=None, repr=False)  # (T_ref, 276): ref_motion_path's
    extrinsic: np.ndarray | None = field(default=None, repr=False)  # (T or T+1, 9) float32
    intrinsic: np.ndarray | None = field(default=None, repr=False)  # (3, 3) float32

    def get(self, name: str, default=None):
        """Dict-style access, so callers can treat records and raw entries alike."""
        return getattr(self, name, default)


def _as_array(value, name: str, path) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float32).numpy()
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
        return value.astype(np.float32)
    raise MotionDataError(path, f"'{name}' is a {type(value).__name__}, expected a tensor")


def _check_camera(camera: dict, n_frames: int, path) -> dict:
    for name, value in camera.items():
        if value is None:
            continue
        if not np.isfinite(value).all():
            raise MotionDataError(path, f"'{name}' has non-finite values")
    extrinsic, intrinsic = camera.get("extrinsic"), camera.get("intrinsic")
    if extrinsic is not None and (extrinsic.ndim != 2 or extrinsic.shape[1] != 9
                                  or extrinsic.shape[0] not in (n_frames, n_frames + 1)):
        raise MotionDataError(path, f"'extrinsic' has shape {tuple(extrinsic.shape)}, expected ({n_frames}, 9)")
    if intrinsic is not None and intrinsic.shape != (3, 3):
        raise MotionDataError(path, f"'intrinsic' has shape {tuple(intrinsic.shape)}, expected (3, 3)")
    return camera


def read_pt(path: str | os.PathLike):
    """What a released `.pt` file holds (a motion dict, a tensor of text features), read with
    `weights_only=True`: tensors and plain values only, never pickled code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise pickled_objects_refused(path, err) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise MotionDataError(path, f"not a readable .pt file, truncated or corrupt ({err})") from None


def load_vimogen_motion(path: str | os.PathLike) -> dict[str, np.ndarray | None]:
    """A released motion file -> {motion (T, 276), extrinsic (T, 9) | None, intrinsic (3, 3) | None}, float32."""
    path = Path(path)
    if not path.is_file():
        raise MotionDataError(path, "motion file not found")
    if path.suffix == ".npy":
        try:
            content = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise MotionDataError(path, f"not a readable .npy array, truncated or corrupt ({err})") from None
    else:
        content = read_pt(path)
    if isinstance(content, dict):
        if "motion" not in content:
            raise MotionDataError(path, f"dict without 'motion' (keys: {sorted(map(str, content))})")
        camera = {name: None if content.get(name) is None else _as_array(content[name], name, path)
                  for name in ("extrinsic", "intrinsic")}
        content = content["motion"]
    else:
        camera = {"extrinsic": None, "intrinsic": None}
    motion = _as_array(content, "motion", path)
    if motion.ndim == 2 and motion.shape[1] > FEATURE_DIM:
        motion = motion[:, :FEATURE_DIM]  # extra columns after the representation, as released
    motion = check_features(motion, path)
    return {"motion": motion, **_check_camera(camera, len(motion), path)}


def read_annotations(annotation_json: str | os.PathLike) -> list:
    """The annotation entries of a released JSON file."""
    path = Path(annotation_json)
    if not path.is_file():
        raise MotionDataError(path, "annotation file not found")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MotionDataError(path, f"not valid JSON, truncated or corrupt ({err})") from None
    if not isinstance(entries, list):
        raise MotionDataError(path, f"expected a list of annotation entries, got a JSON {type(entries).__name__}")
    return entries


def motion_paths(entry, index: int, annotation_json: Path) -> list[str]:
    """The motion path(s) of annotation entry number `index`: one, or the entry's list."""
    if not isinstance(entry, dict):
        raise MotionDataError(annotation_json, f"entry {index} is a JSON {type(entry).__name__}, expected an object")
    value = entry.get("motion_path")
    paths = value if isinstance(value, list) else [value]
    if not paths or not all(isinstance(p, str) and p for p in paths):
        raise MotionDataError(annotation_json, f"entry {index} (id {entry.get('id', f'#{index}')}) has no motion_path")
    return paths


def read_record(entry, index: int, annotation_json: Path, root: Path, load: bool = True,
                rng: np.random.Generator | None = None, path_index: int | None = None,
                with_reference: bool = True) -> VimogenRecord:
    """Annotation entry number `index` as a record, its motion file (and, `with_reference`, its
    `ref_motion_path` reference) read from `root` when `load`. A list `motion_path` gives the path at
    `path_index`, else one drawn uniformly with `rng` (default: a fresh generator, a new draw per read)."""
    paths = motion_paths(entry, index, annotation_json)
    if path_index is None:
        path_index = int((rng or np.random.default_rng()).integers(len(paths))) if len(paths) > 1 else 0
    motion_path = paths[path_index]
    ref_motion_path = entry.get("ref_motion_path")
    if ref_motion_path is not None and (not isinstance(ref_motion_path, str) or not ref_motion_path):
        raise MotionDataError(annotation_json, f"entry {index} (id {entry.get('id', f'#{index}')}) has a bad "
                                               f"ref_motion_path {ref_motion_path!r}")
    motion_file = root / motion_path
    loaded = {}
    if load:
        loaded = load_vimogen_motion(motion_file)
        if ref_motion_path is not None and with_reference:
            loaded["reference_motion"] = load_vimogen_motion(root / ref_motion_path)["motion"]
    return VimogenRecord(
        id=str(entry.get("id", f"#{index}")), subset=entry.get("subset"), split=entry.get("split"),
        motion_text_annot=entry.get("motion_text_annot"), video_text_annot=entry.get("video_text_annot"),
        motion_path=motion_path, video_path=entry.get("video_path"), ref_motion_path=ref_motion_path,
        motion_file=motion_file, annotation=dict(entry), **loaded,
    )


def iter_vimogen228k(annotation_json: str | os.PathLike, root: str | os.PathLike | None = None,
                     on_error: Literal["raise", "yield"] = "raise", load: bool = True
                     ) -> Iterator[VimogenRecord | MotionDataError]:
    """The records of a released annotation file, motions loaded from `root` (default: the JSON's folder).

    on_error="raise" stops at the first bad entry or file; "yield" yields its MotionDataError
    in place of the record and goes on, so batch jobs can quarantine it. load=False skips
    reading the motion files (fields and paths only)."""
    annotation_json = Path(annotation_json)
    root = annotation_json.parent if root is None else Path(root)
    for index, entry in enumerate(read_annotations(annotation_json)):
        try:
            yield read_record(entry, index, annotation_json, root, load)
        except MotionDataError as err:
            if on_error == "raise":
                raise
            yield err
