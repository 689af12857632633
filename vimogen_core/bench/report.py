"""What an MBench run produces and how it is written: `MBenchResult` and the files in `out_dir`
(`scores.json`, `per_motion.jsonl`, `metadata.json`, `report.md` with our numbers next to the
published MBench table, DESIGN.md section 8)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from vimogen_core.files import atomic_write_text

# Published MBench numbers (paper, as reprinted; DESIGN.md section 8).
PUBLISHED_COLUMNS = (
    ("MCC", "Motion_Condition_Consistency"), ("MG", "Motion_Generalizability"), ("Jitter", "Jitter_Degree"),
    ("Dynamic", "Dynamic_Degree"), ("FootFloat", "Foot_Floating"), ("FootSlide", "Foot_Sliding"),
    ("BodyPen", "Body_Penetration"), ("PoseQual", "Pose_Quality"),
)
PUBLISHED_TABLE = {
    "MDM": (0.42, 0.51, 0.0136, 0.0376, 0.156, 0.0136, 1.68, 2.67),
    "MoMask": (0.38, 0.44, 0.0147, 0.0396, 0.178, 0.0147, 1.48, 2.67),
    "MotionLCM": (0.48, 0.55, 0.0218, 0.0439, 0.193, 0.0202, 1.73, 2.40),
    "ViMoGen": (0.53, 0.68, 0.0108, 0.0251, 0.204, 0.0064, 1.78, 2.38),
    "ViMoGen-light": (0.47, 0.55, 0.0129, 0.0294, 0.155, 0.0051, 1.43, 2.10),
}


@dataclass
class MBenchResult:
    aggregates: dict[str, dict]
    per_motion: list[dict]
    metadata: dict
    out_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)

    def mean(self, dimension: str) -> float | None:
        return self.aggregates.get(dimension, {}).get("mean")


def _format(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 0.1 else f"{value:.3f}"


def _protocol_line(meta: dict) -> str:
    if not meta.get("protocol"):
        return "not recorded (motions read from files)"
    line = (f"{meta['protocol']} ({meta.get('weights')} weights, sampler {meta.get('sampler')}, guidance "
            f"{meta.get('cfg_scale') if meta.get('cfg_scale') is not None else 'the preset default'}, "
            f"{meta.get('n_text_mode')} text-mode / {meta.get('n_reference_mode')} reference-mode motions, "
            f"joints from the {meta.get('joints_from')})")
    return "; ".join([line] + list(meta.get("protocol_notes") or []))


def markdown_report(result: MBenchResult, model_name: str = "this run") -> str:
    meta = result.metadata
    lines = [
        "# MBench report",
        "",
        f"- model: {model_name}",
        f"- prompts: {meta.get('prompt_source')} ({meta.get('n_prompts')} prompts)",
        f"- judge: {meta.get('judge') or 'not used'}",
        f"- pose prior / body mesh: {meta.get('pose_scorer') or 'not used'}",
        f"- foot metrics height axis: {meta.get('height_axis')}",
        f"- generated motion post-processing: {meta.get('postprocessing') or 'not recorded (motions read from files)'}",
        f"- generation protocol: {_protocol_line(meta)}",
        f"- created: {meta.get('created')}",
        "",
        "## Next to the published MBench table",
        "",
        "Published rows are the paper's (VLM judge, NRDF prior, SMPL mesh); this run's judge, prior and mesh",
        "are named above, so those columns are comparable in direction, not in absolute value.",
        "",
        "| model | " + " | ".join(short for short, _ in PUBLISHED_COLUMNS) + " |",
        "|---|" + "---|" * len(PUBLISHED_COLUMNS),
    ]
    for name, values in PUBLISHED_TABLE.items():
        lines.append(f"| {name} | " + " | ".join(_format(v) for v in values) + " |")
    ours = [result.mean(dimension) for _, dimension in PUBLISHED_COLUMNS]
    lines.append(f"| **{model_name}** | " + " | ".join(_format(v) for v in ours) + " |")
    lines += ["", "## All dimensions", "", "| dimension | mean | std | count | errors | better |", "|---|---|---|---|---|---|"]
    for dimension, agg in result.aggregates.items():
        better = agg["better"] or "-"
        lines.append(f"| {dimension} | {_format(agg['mean'])} | {_format(agg['std'])} | {agg['count']} | {agg['errors']} | {better} |")
    errors = [r for r in result.per_motion if r["error"]]
    if errors:
        lines += ["", f"## Errors ({len(errors)})", ""]
        lines += [f"- id {r['id']} {r['dimension']}: {r['error']}" for r in errors[:50]]
        if len(errors) > 50:
            lines.append(f"- ... {len(errors) - 50} more in per_motion.jsonl")
    timing = meta.get("timing_s", {})
    if timing:
        lines += ["", "## Timing (s)", "", ", ".join(f"{k}: {v:.3f}" for k, v in timing.items())]
    return "\n".join(lines) + "\n"


def write_outputs(result: MBenchResult, out_dir: str | os.PathLike, model_name: str) -> MBenchResult:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.out_dir = out
    result.files = {
        "scores": atomic_write_text(out / "scores.json", json.dumps({"aggregates": result.aggregates, "metadata": result.metadata}, indent=2)),
        "per_motion": atomic_write_text(out / "per_motion.jsonl", "".join(json.dumps(r) + "\n" for r in result.per_motion)),
        "metadata": atomic_write_text(out / "metadata.json", json.dumps(result.metadata, indent=2)),
        "report": atomic_write_text(out / "report.md", markdown_report(result, model_name)),
    }
    return result
