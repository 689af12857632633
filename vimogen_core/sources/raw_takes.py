"""The sources stage: materialise raw takes as files + a JSON-lines index that curation streams
(`curation.source_index` reads it back).

For the embedded default: the built-in optical clips, simulated visual captures of them (mesh-
recovery style output in camera coordinates, read back through the real HMR ingestion path), and
the synthetic-video source when its backends are configured. Files are `.npz` archives of plain
arrays (no pickle) written byte-for-byte reproducibly, so DVC sees identical outputs on a re-run.

Each source is built on its own (`<out>/<source>/index.jsonl`), so one source can be refreshed
without touching the others. New raw files dropped into an inbox folder laid out as
`<inbox>/<source>/**/<name>.npz` (or `.bvh`) join their source: AMASS-style archives or BVH
files of any humanoid skeleton for optical_mocap, mesh-recovery output for the video sources,
with captions one per line in `<name>.txt` beside them (a take without captions is quarantined
by the caption gate like any other).
"""
from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vimogen_core.files import atomic_write_bytes
from vimogen_core.sources import SOURCES
from vimogen_core.sources.simulated_capture import CAPTURE_PRESETS, SimulatedCameraConfig, capture_rng, simulate_capture
from vimogen_core.sources.synthetic_video import SyntheticVideoSource

INDEX_NAME = "index.jsonl"
# Per source, the take files its inbox folder accepts (by suffix) and the reader kind each gets.
INBOX_FORMATS = {"optical_mocap": {".npz": "amass", ".bvh": "bvh"}, "in_the_wild_video": {".npz": "hmr"},
                 "synthetic_video": {".npz": "hmr"}}
CAPTION_SUFFIX = ".txt"
INBOX_SUFFIXES = tuple(sorted({s for formats in INBOX_FORMATS.values() for s in formats} | {CAPTION_SUFFIX}))
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
    index_paths: list[str]
    n_takes: int
    by_source: dict[str, int] = field(default_factory=dict)
    by_subset: dict[str, int] = field(default_factory=dict)
    synthetic_video_status: str = ""
    inbox_ignored: dict[str, str] = field(default_factory=dict)  # inbox file -> why it is not a take

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


def _optical_entries(out_dir: Path, config: SourcesConfig) -> list[dict]:
    from vimogen_core.sources.deepmimic import load_builtin_clip

    entries = []
    for name in _clip_names(config):
        clip = load_builtin_clip(name, min_frames=config.min_take_frames)
        motion, group, file = clip.motion, f"deepmimic/{clip.name}", f"optical_mocap/{clip.name}.npz"
        write_npz(out_dir / file, {
            "local_rotmats": motion.local_rotmats.numpy(),
            "joints": motion.joints.numpy(),
            "fps": np.float64(motion.fps),
            **({"offsets": motion.offsets} if motion.offsets is not None else {}),
        })
        entries.append(_entry(group, "optical_mocap", "deepmimic", group, "motion", file, clip.captions, clip.video_caption,
                              clip_file=Path(clip.meta.get("file", "")).name))
    return entries


def _simulated_capture_entries(out_dir: Path, config: SourcesConfig) -> list[dict]:
    from vimogen_core.sources.deepmimic import load_builtin_clip

    entries = []
    for name in _clip_names(config):
        clip = load_builtin_clip(name, min_frames=config.min_take_frames)
        for preset in config.capture_presets:
            capture = simulate_capture(clip.motion, CAPTURE_PRESETS[preset], capture_rng(config.capture_seed, clip.name, preset),
                                       config.camera)
            file = f"in_the_wild_video/{clip.name}__{preset}.npz"
            write_npz(out_dir / file, capture)
            entries.append(_entry(f"simulated_capture/{clip.name}/{preset}", "in_the_wild_video", "simulated_capture",
                                  f"deepmimic/{clip.name}", "hmr", file, clip.captions, clip.video_caption,
                                  capture_preset=preset, simulated=True))
    return entries


def _synthetic_video_entries(out_dir: Path, config: SourcesConfig) -> tuple[list[dict], str]:
    synthetic = SyntheticVideoSource.from_environment()
    entries = []
    for number, capture in enumerate(synthetic.generate(config.synthetic_prompts)):
        file = f"synthetic_video/{number:05d}.npz"
        write_npz(out_dir / file, {k: np.asarray(v) for k, v in capture.hmr_output.items()})
        take_id = f"synthetic_video/{number:05d}"
        entries.append(_entry(take_id, "synthetic_video", "generated", take_id, "hmr", file, [capture.prompt], capture.description,
                              backends=capture.backends))
    return entries, synthetic.unavailable_reason or "configured"


def _inbox_entries(out_dir: Path, inbox: Path, source: str) -> list[dict]:
    """Copy the source's inbox take files into the sources folder (so the stage output is self-contained
    and versioned) and index them; the readers check their contents at curation time."""
    entries = []
    folder, formats = inbox / source, INBOX_FORMATS[source]
    for path in sorted(p for p in folder.rglob("*") if p.suffix in formats) if folder.is_dir() else []:
        if path.name.startswith(".") or not path.is_file():  # still being written
            continue
        if _same_name_take(path, formats):  # reported by _ignored_inbox_files
            continue
        relative = path.relative_to(folder).with_suffix("").as_posix()
        file = f"{source}/inbox/{relative}{path.suffix}"
        (out_dir / file).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out_dir / file, path.read_bytes())
        sidecar = path.with_suffix(CAPTION_SUFFIX)
        captions = [line.strip() for line in sidecar.read_text(encoding="utf-8").splitlines() if line.strip()] \
            if sidecar.is_file() else []
        take_id = f"inbox/{source}/{relative}"
        entries.append(_entry(take_id, source, "inbox", take_id, formats[path.suffix], file, captions, "",
                              inbox_file=str(path)))
    return entries


def _same_name_take(path: Path, formats: dict[str, str]) -> Path | None:
    """The take file of another format with the same name that is read instead of `path` (the first
    suffix in sorted order): two takes with one name would share a take id."""
    for suffix in sorted(formats):
        if suffix < path.suffix and path.with_suffix(suffix).is_file():
            return path.with_suffix(suffix)
    return None


def _ignored_inbox_files(inbox: Path) -> dict[str, str]:
    ignored = {}
    for path in sorted(inbox.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        parts = path.relative_to(inbox).parts
        if len(parts) < 2 or parts[0] not in SOURCES:
            ignored[str(path)] = f"not under a source folder ({', '.join(SOURCES)})"
        elif path.suffix not in (*INBOX_FORMATS[parts[0]], CAPTION_SUFFIX):
            ignored[str(path)] = f"not a take file ({' or '.join(INBOX_FORMATS[parts[0]])}) or its captions ({CAPTION_SUFFIX})"
        elif path.suffix == CAPTION_SUFFIX and not any(path.with_suffix(s).is_file() for s in INBOX_FORMATS[parts[0]]):
            ignored[str(path)] = "captions without a take file beside them"
        elif path.suffix != CAPTION_SUFFIX and _same_name_take(path, INBOX_FORMATS[parts[0]]):
            ignored[str(path)] = f"{_same_name_take(path, INBOX_FORMATS[parts[0]]).name} has the same name and is read instead"
    return ignored


def _clip_names(config: SourcesConfig) -> tuple[str, ...]:
    from vimogen_core.sources.deepmimic import builtin_clip_names

    unknown = sorted(set(config.clips) - set(builtin_clip_names()))
    if unknown:
        raise ValueError(f"unknown built-in clips {unknown}; known: {builtin_clip_names()}")
    return tuple(config.clips) or tuple(builtin_clip_names())


def build_sources(out_dir: str | Path, config: SourcesConfig = SourcesConfig(), sources: tuple[str, ...] = SOURCES,
                  inbox: str | Path | None = None) -> SourcesResult:
    """Write the raw takes of `sources` under `out_dir/<source>/` with one index per source: the
    embedded default's takes plus any archives waiting in `inbox`."""
    out_dir = Path(out_dir)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ValueError(f"unknown sources {unknown}; known: {list(SOURCES)}")
    unknown = [p for p in config.capture_presets if p not in CAPTURE_PRESETS]
    if unknown:
        raise ValueError(f"unknown capture presets {unknown}; known: {sorted(CAPTURE_PRESETS)}")
    inbox = Path(inbox) if inbox is not None else None
    status = ""
    all_entries, index_paths = [], []
    for source in sources:
        (out_dir / source).mkdir(parents=True, exist_ok=True)
        if source == "optical_mocap":
            entries = _optical_entries(out_dir, config)
        elif source == "in_the_wild_video":
            entries = _simulated_capture_entries(out_dir, config)
        else:
            entries, status = _synthetic_video_entries(out_dir, config)
        if inbox is not None:
            entries += _inbox_entries(out_dir, inbox, source)
        index = out_dir / source / INDEX_NAME
        atomic_write_bytes(index, "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries).encode("utf-8"))
        summary = {"n_takes": len(entries)} | ({"synthetic_video": status} if source == "synthetic_video" else {})
        atomic_write_bytes(out_dir / source / "summary.json", json.dumps(summary, indent=2).encode())
        index_paths.append(str(index))
        all_entries += entries
    return SourcesResult(
        out_dir=str(out_dir),
        index_paths=index_paths,
        n_takes=len(all_entries),
        by_source=dict(sorted(Counter(e["source"] for e in all_entries).items())),
        by_subset=dict(sorted(Counter(e["subset"] for e in all_entries).items())),
        synthetic_video_status=status,
        inbox_ignored=_ignored_inbox_files(inbox) if inbox is not None and inbox.is_dir() else {},
    )
