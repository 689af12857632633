"""Ingest the released ViMoGen-228K layout (annotation JSON + `.pt` sample files) into the same
curated chunks and shards as the project's own sources, keeping every released field.

The released samples are already 20 fps, windowed and encoded, so they are not re-windowed or
mirrored (preset "released"); they still pass the generic gates (finite, length, speeds, bones,
captions). The annotation entry is kept verbatim (manifest column `annotation_json`), together
with the camera parameters of video-recovered samples.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from vimogen_core.curation.pipeline import CURATION_PRESETS, CurationConfig, CurationResult, curate_samples
from vimogen_core.curation.records import RawSample, Rejection

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


def iter_released_takes(annotation_json: str | Path, root: str | Path | None = None) -> Iterator[RawSample | Rejection]:
    """Released records -> RawSamples; an entry or file the reader refuses becomes a Rejection."""
    from vimogen_core.sources.vimogen228k import iter_vimogen228k

    for record in iter_vimogen228k(annotation_json, root, on_error="yield"):
        if isinstance(record, Exception):
            where = str(getattr(record, "path", None) or annotation_json)
            yield Rejection(where, "unknown", "unknown", where, ("load",), (str(record),))
            continue
        subset = str(record.subset or "")
        extrinsic = record.extrinsic
        yield RawSample(
            id=record.id,
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
    return curate_samples(iter_released_takes(annotation_json, root), out_dir, config, judge, workers, sink, progress)
