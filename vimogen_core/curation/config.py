"""How takes become samples: the curation config, its presets, and reading them (with the caption
judge and worker count) from a params.yaml section, as the CLI and the Dagster asset both do."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vimogen_core.config_overrides import apply_overrides
from vimogen_core.curation.gates import GATE_PRESETS, CaptionJudge, GateConfig, LocomotionJudge
from vimogen_core.motion.skeleton import FPS


@dataclass(frozen=True)
class CurationConfig:
    """How takes become samples. Frame counts are feature frames (N motion frames -> N-1 features)."""

    fps: float = FPS
    window_stride: int = 100  # start-to-start distance of windows cut from takes longer than max_frames
    mirror: bool = True
    split_fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)
    split_salt: str = ""
    gates: GateConfig = GateConfig()
    samples_per_chunk: int = 2000


CURATION_PRESETS = {
    "default": CurationConfig(),
    # Released ViMoGen-228K samples are already windowed; keep them as released (no mirrors).
    "released": CurationConfig(mirror=False, gates=GATE_PRESETS["released"]),
}


def curation_settings(params: Mapping[str, Any], where: str,
                      default_preset: str = "default") -> tuple[CurationConfig, CaptionJudge | None, int]:
    """A params.yaml curation section (`preset`, `workers`, `judge` and CurationConfig fields) ->
    (config, caption judge, worker processes); `where` names the section in every error."""
    params = dict(params)
    preset = params.pop("preset", default_preset)
    if preset not in CURATION_PRESETS:
        raise ValueError(f"{where}: unknown curation preset {preset!r}; known: {sorted(CURATION_PRESETS)}")
    workers = int(params.pop("workers", 1))
    judge = caption_judge(params.pop("judge", "none"), where)
    return apply_overrides(CURATION_PRESETS[preset], params, where), judge, workers


def caption_judge(spec: str | None, where: str) -> CaptionJudge | None:
    """`none`, `locomotion` or a plug-in `package.module:factory` -> the caption judge (or None)."""
    if spec in (None, "none"):
        return None
    if spec == "locomotion":
        return LocomotionJudge()
    if ":" in spec:  # a plug-in judge, `package.module:factory`
        from vimogen_core.sources.synthetic_video import load_backend

        return load_backend(spec)
    raise ValueError(f"{where}: unknown judge {spec!r} (none, locomotion, or package.module:factory)")
