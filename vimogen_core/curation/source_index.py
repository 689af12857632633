"""A sources folder (`vimogen data sources` output, built by `sources.raw_takes`) read back as
takes for curation: one loader per index line, each reading its take file through the source's
reader into a RawSample, or giving a Rejection when the line or the file cannot be loaded."""
from __future__ import annotations

import functools
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vimogen_core.curation.records import RawSample, Rejection
from vimogen_core.errors import MotionDataError
from vimogen_core.motion.motion import Motion
from vimogen_core.sources import SOURCES
from vimogen_core.sources.raw_takes import INDEX_NAME


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise MotionDataError(path, f"unreadable take archive ({err})") from err


def load_take(entry: dict, root: Path) -> RawSample:
    """One index entry -> a RawSample; raises MotionDataError naming the file on bad data."""
    path = root / entry["file"]
    extrinsic = intrinsic = None
    if entry["kind"] == "motion":
        arrays = _load_arrays(path)
        missing = {"local_rotmats", "joints", "fps"} - set(arrays)
        if missing:
            raise MotionDataError(path, f"missing arrays {sorted(missing)}")
        motion = Motion(torch.from_numpy(arrays["local_rotmats"].astype(np.float64)), torch.from_numpy(arrays["joints"].astype(np.float64)),
                        float(arrays["fps"]), arrays.get("offsets"))
    elif entry["kind"] == "amass":
        from vimogen_core.sources.amass import load_amass_npz

        motion = load_amass_npz(path)
    elif entry["kind"] == "bvh":
        from vimogen_core.sources.bvh_retarget import load_bvh

        motion = load_bvh(path)
    elif entry["kind"] == "hmr":
        # The same reader a real mesh-recovery output goes through: camera -> world, 20 fps, floor.
        from vimogen_core.sources.hmr import load_hmr_output

        motion, extrinsic, intrinsic = load_hmr_output(path)
    else:
        raise MotionDataError(path, f"unknown take kind {entry['kind']!r}")
    return RawSample(
        id=entry["id"],
        source=entry["source"],
        subset=entry["subset"],
        origin=str(path),
        motion=motion,
        motion_captions=tuple(entry.get("motion_captions") or ()),
        video_caption=entry.get("video_caption") or "",
        group_id=entry.get("group_id"),
        camera_extrinsic=None if extrinsic is None else np.asarray(extrinsic, dtype=np.float32),
        camera_intrinsic=None if intrinsic is None else np.asarray(intrinsic, dtype=np.float32),
    )


@dataclass(frozen=True)
class SourceIndex:
    """The takes of a sources folder (`vimogen data sources` output), source by source, as a TakeSource:
    each loader reads one take file; an index line or file that cannot be loaded gives a Rejection."""

    sources_dir: str

    def take_loaders(self) -> Iterator[Callable[[], RawSample | Rejection]]:
        root = Path(self.sources_dir)
        indexes = [root / source / INDEX_NAME for source in SOURCES if (root / source / INDEX_NAME).is_file()]
        if not indexes:
            raise FileNotFoundError(f"{root}: no source index (<source>/{INDEX_NAME}) found (run `vimogen data sources` first)")
        for index in indexes:
            label = index.relative_to(root).as_posix()
            with open(index, encoding="utf-8") as handle:
                for line_number, line in enumerate(handle, start=1):
                    if line.strip():
                        yield functools.partial(_load_index_line, line, line_number, label, index, root)


def _load_index_line(line: str, line_number: int, label: str, index: Path, root: Path) -> RawSample | Rejection:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as err:
        return Rejection(f"{label}:{line_number}", "unknown", "unknown", str(index), ("load",), (f"line {line_number}: not JSON ({err})",))
    try:
        return load_take(entry, root)
    except (MotionDataError, KeyError, ValueError, OSError) as err:
        return Rejection(str(entry.get("id", f"{label}:{line_number}")), str(entry.get("source", "unknown")),
                         str(entry.get("subset", "unknown")), str(root / str(entry.get("file", ""))), ("load",), (str(err),))
