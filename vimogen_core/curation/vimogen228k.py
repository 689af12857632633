"""Ingest the released ViMoGen-228K layout (annotation JSON + `.pt` sample files) into the same
curated chunks and shards as the project's own sources, keeping every released field.

The released samples are already 20 fps, windowed and encoded, so they are not re-windowed or
mirrored (preset "released"); they still pass the generic gates (finite, length, speeds, bones,
captions). The annotation entry is kept verbatim (manifest column `annotation_json`), together
with the camera parameters of video-recovered samples. An entry whose `motion_path` is a list
becomes one sample per path (ids `{id}~{k}`): the released loader draws one of them per fetch,
and a shard set keeps them all rather than losing the others to one fixed draw. Reference motions
(`ref_motion_path`) are not stored in shards; the annotation JSON read in place by training
(`train/data.py` Vimogen228kDataset) uses them.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vimogen_core.curation.config import CURATION_PRESETS, CurationConfig
from vimogen_core.curation.pipeline import CurationResult, curate_samples
from vimogen_core.curation.records import RawSample, Rejection
from vimogen_core.errors import MotionDataError

if TYPE_CHECKING:
    from vimogen_core.curation.gates import CaptionJudge
    from vimogen_core.sinks import MetricSink

# Released subset names -> the project's source vocabulary.
_SUBSET_SOURCE_HINTS = (
    ("synthetic", "synthetic_video"),
    ("generated", "synthetic_video"),
    ("video", "in_the_wild_video"),
    ("wild", "in_the_wild_video"),
)


def released_source(subset: str, has_camera: bool) -> str:
    """Which source a released sample belongs to: video-recovered files carry camera parameters."""
    lowered = subset.lower()
    for hint, source in _SUBSET_SOURCE_HINTS:
        if hint in lowered:
            return source
    return "in_the_wild_video" if has_camera else "optical_mocap"


def _captions(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


@dataclass(frozen=True)
class ReleasedTakes:
    """The records of a released annotation file as a TakeSource: each loader reads one sample file
    (from `root`, default the JSON's folder); an entry or file the reader refuses gives a Rejection."""

    annotation_json: str
    root: str | None = None

    def take_loaders(self) -> Iterator[Callable[[], RawSample | Rejection]]:
        from vimogen_core.sources.vimogen228k import read_annotations

        annotation_json = Path(self.annotation_json)
        root = annotation_json.parent if self.root is None else Path(self.root)
        for index, entry in enumerate(read_annotations(annotation_json)):  # a bad annotation file is an error
            value = entry.get("motion_path") if isinstance(entry, dict) else None
            choices = range(len(value)) if isinstance(value, list) and len(value) > 1 else [None]
            for path_index in choices:
                yield functools.partial(_load_released, entry, index, annotation_json, root, path_index)


def _load_released(entry, index: int, annotation_json: Path, root: Path,
                   path_index: int | None = None) -> RawSample | Rejection:
    from vimogen_core.sources.vimogen228k import read_record

    try:
        record = read_record(entry, index, annotation_json, root, path_index=path_index, with_reference=False)
    except MotionDataError as err:
        where = str(getattr(err, "path", None) or annotation_json)
        return Rejection(where, "unknown", "unknown", where, ("load",), (str(err),))
    subset = str(record.subset or "")
    extrinsic = record.extrinsic
    return RawSample(
        id=record.id if path_index is None else f"{record.id}~{path_index}",
        source=released_source(subset, extrinsic is not None),
        subset=subset,
        origin=str(record.motion_file),
        features=record.motion,
        motion_captions=_captions(record.motion_text_annot),
        video_caption=" ".join(_captions(record.video_text_annot)),
        split=record.split,
        annotation=dict(record.annotation),  # the entry exactly as released, unknown fields included
        camera_extrinsic=extrinsic,
        camera_intrinsic=record.intrinsic,
    )


def ingest_vimogen228k(
    annotation_json: str | Path,
    root: str | Path | None,
    out_dir: str | Path,
    config: CurationConfig = CURATION_PRESETS["released"],
    judge: "CaptionJudge | None" = None,
    workers: int = 1,
    sink: "MetricSink | None" = None,
    progress: bool = False,
) -> CurationResult:
    """Curate a released annotation file + sample folder into chunk shards under `out_dir`."""
    return curate_samples(ReleasedTakes(str(annotation_json), None if root is None else str(root)), out_dir, config, judge,
                          workers, sink, progress)
