"""The sources stage: materialise raw takes as files + a JSON-lines index that curation streams.

For the embedded default: the built-in optical clips, simulated visual captures of them (mesh-
recovery style output in camera coordinates, read back through the real HMR ingestion path), and
the synthetic-video source when its backends are configured. Files are `.npz` archives of plain
arrays (no pickle) written byte-for-byte reproducibly, so DVC sees identical outputs on a re-run.
"""
from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from vimogen_core.curation.records import RawSample, Rejection
from vimogen_core.curation.shards import atomic_write_bytes
from vimogen_core.errors import MotionDataError
from vimogen_core.motion.motion import Motion
from vimogen_core.sources.simulated_capture import CAPTURE_PRESETS, SimulatedCameraConfig, capture_rng, simulate_capture
from vimogen_core.sources.synthetic_video import SyntheticVideoSource

INDEX_NAME = "index.jsonl"
_DEFAULT_PROMPTS = (
    "a person jumps over a small obstacle",
    "a person waves with the right hand",
    "a person does a cartwheel",
)


@dataclass(frozen=True)
class SourcesConfig:
    clips: tuple[str, ...] = ()  # built-in clips to use; empty = all of them
    min_take_frames: int = 121  # short built-in clips are looped (or padded) to at least this many frames
    capture_presets: tuple[str, ...] = ("clean", "noisy", "gross_failure")  # one simulated capture per preset per clip
    capture_seed: int = 0
    camera: SimulatedCameraConfig = SimulatedCameraConfig()
    synthetic_prompts: tuple[str, ...] = _DEFAULT_PROMPTS


@dataclass
class SourcesResult:
    out_dir: str
    index_path: str
    n_takes: int
    by_source: dict[str, int] = field(default_factory=dict)
    by_subset: dict[str, int] = field(default_factory=dict)
    synthetic_video_status: str = ""

    def to_metadata(self) -> dict:
        return asdict(self)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed .npz readable by np.load(allow_pickle=False), with fixed zip timestamps so the
    same arrays always give the same bytes; written atomically."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w") as member:
                np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def _entry(take_id, source, subset, group_id, kind, file, captions, video_caption, **meta) -> dict:
    return {
        "id": take_id,
        "source": source,
        "subset": subset,
        "group_id": group_id,
        "kind": kind,
        "file": file,
        "motion_captions": list(captions),
        "video_caption": video_caption,
        "meta": meta,
    }


def build_sources(out_dir: str | Path, config: SourcesConfig = SourcesConfig()) -> SourcesResult:
    """Write the embedded default's raw takes under `out_dir` and their index."""
    from vimogen_core.sources.deepmimic import builtin_clip_names, load_builtin_clip

    out_dir = Path(out_dir)
    for sub in ("optical_mocap", "in_the_wild_video", "synthetic_video"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    unknown = [p for p in config.capture_presets if p not in CAPTURE_PRESETS]
    if unknown:
        raise ValueError(f"unknown capture presets {unknown}; known: {sorted(CAPTURE_PRESETS)}")
    unknown = sorted(set(config.clips) - set(builtin_clip_names()))
    if unknown:
        raise ValueError(f"unknown built-in clips {unknown}; known: {builtin_clip_names()}")
    entries = []
    for name in config.clips or builtin_clip_names():
        clip = load_builtin_clip(name, min_frames=config.min_take_frames)
        group = f"deepmimic/{clip.name}"
        motion = clip.motion
        file = f"optical_mocap/{clip.name}.npz"
        write_npz(out_dir / file, {
            "local_rotmats": motion.local_rotmats.numpy(),
            "joints": motion.joints.numpy(),
            "fps": np.float64(motion.fps),
            **({"offsets": motion.offsets} if motion.offsets is not None else {}),
        })
        entries.append(_entry(group, "optical_mocap", "deepmimic", group, "motion", file, clip.captions, clip.video_caption,
                              clip_file=Path(clip.meta.get("file", "")).name))
        for preset in config.capture_presets:
            capture = simulate_capture(motion, CAPTURE_PRESETS[preset], capture_rng(config.capture_seed, clip.name, preset), config.camera)
            file = f"in_the_wild_video/{clip.name}__{preset}.npz"
            write_npz(out_dir / file, capture)
            entries.append(_entry(f"simulated_capture/{clip.name}/{preset}", "in_the_wild_video", "simulated_capture", group, "hmr",
                                  file, clip.captions, clip.video_caption, capture_preset=preset, simulated=True))

    synthetic = SyntheticVideoSource.from_environment()
    status = synthetic.unavailable_reason or "configured"
    for number, capture in enumerate(synthetic.generate(config.synthetic_prompts)):
        file = f"synthetic_video/{number:05d}.npz"
        write_npz(out_dir / file, {k: np.asarray(v) for k, v in capture.hmr_output.items()})
        take_id = f"synthetic_video/{number:05d}"
        entries.append(_entry(take_id, "synthetic_video", "generated", take_id, "hmr", file, [capture.prompt], capture.description,
                              backends=capture.backends))

    text = "".join(json.dumps(entry, sort_keys=True) + "\n" for entry in entries)
    atomic_write_bytes(out_dir / INDEX_NAME, text.encode("utf-8"))
    atomic_write_bytes(out_dir / "summary.json", json.dumps({"synthetic_video": status, "n_takes": len(entries)}, indent=2).encode())
    return SourcesResult(
        out_dir=str(out_dir),
        index_path=str(out_dir / INDEX_NAME),
        n_takes=len(entries),
        by_source=dict(sorted(Counter(e["source"] for e in entries).items())),
        by_subset=dict(sorted(Counter(e["subset"] for e in entries).items())),
        synthetic_video_status=status,
    )


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


def iter_source_index(sources_dir: str | Path) -> Iterator[RawSample | Rejection]:
    """Stream the takes of a sources folder; a take that cannot be loaded comes out as a Rejection."""
    root = Path(sources_dir)
    index = root / INDEX_NAME
    if not index.is_file():
        raise FileNotFoundError(f"{index}: sources index not found (run `vimogen data sources` first)")
    with open(index, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                yield Rejection(f"{index.name}:{line_number}", "unknown", "unknown", str(index), ("load",), (f"line {line_number}: not JSON ({err})",))
                continue
            try:
                yield load_take(entry, root)
            except (MotionDataError, KeyError, ValueError, OSError) as err:
                yield Rejection(str(entry.get("id", f"{index.name}:{line_number}")), str(entry.get("source", "unknown")),
                                str(entry.get("subset", "unknown")), str(root / str(entry.get("file", ""))), ("load",), (str(err),))
