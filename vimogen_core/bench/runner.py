"""The MBench runner: prompts -> motions (generated, or a folder of `{id}.npy`) -> scores -> report.

Outputs in `out_dir`:
- `scores.json`: per-dimension aggregates (mean, population std, count, errors) + run metadata
- `per_motion.jsonl`: one row per (motion, dimension) with its value or its error
- `metadata.json`: judge, pose prior, body mesh, height mode, prompt source, timings
- `report.md`: our numbers next to the published MBench table (DESIGN.md section 8)

A motion that is missing, unreadable, badly shaped, non-finite or too short is recorded as an
error for each of its dimensions; the rest of the run goes on.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np

from vimogen_core.motion import metrics
from vimogen_core.bench.prompts import (
    ALL_DIMENSIONS,
    BETTER,
    MOTION_ONLY_DIMENSIONS,
    POSE_DIMENSIONS,
    BenchPrompt,
    builtin_prompts,
    load_published_prompts,
    select_dimensions,
)
from vimogen_core.errors import MotionDataError
from vimogen_core.files import atomic_write_text
from vimogen_core.motion.representation import FEATURE_DIM, check_features, features_to_joints

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
class LoadedMotion:
    """One motion to score: joints (T, 22, 3) and, when the source had them, features (T, 276)."""

    joints: np.ndarray | None
    features: np.ndarray | None = None
    error: str | None = None


@dataclass
class MBenchResult:
    aggregates: dict[str, dict]
    per_motion: list[dict]
    metadata: dict
    out_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)

    def mean(self, dimension: str) -> float | None:
        return self.aggregates.get(dimension, {}).get("mean")


def load_motion_file(path: str | os.PathLike) -> LoadedMotion:
    """`.npy` with joints (T, 22, 3) or 276-d features (T, 276); never unpickles."""
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise MotionDataError(path, "motion file not found") from None
    except (ValueError, OSError, EOFError) as err:
        raise MotionDataError(path, f"not a readable .npy array ({err})") from None
    if array.ndim == 2 and array.shape[1] == FEATURE_DIM:
        features = check_features(array, path).astype(np.float32)
        joints = features_to_joints(features)
        return LoadedMotion(metrics.validate_joints(joints, path), features)
    return LoadedMotion(metrics.validate_joints(array, path))


def load_motion_folder(directory: str | os.PathLike, keys: Sequence[str]) -> dict[str, LoadedMotion]:
    """`{key}.npy` for each key; a `features/{key}.npy` beside it (what `generate_motions` writes)
    supplies the 276-d rotations for the pose metrics."""
    directory = Path(directory)
    loaded = {}
    for key in keys:
        try:
            motion = load_motion_file(directory / f"{key}.npy")
            features_path = directory / "features" / f"{key}.npy"
            if motion.features is None and features_path.is_file():
                features = load_motion_file(features_path).features
                if features is None or len(features) != len(motion.joints):
                    raise MotionDataError(features_path, "does not hold the 276-d features of the same motion")
                motion.features = features
            loaded[key] = motion
        except MotionDataError as err:
            loaded[key] = LoadedMotion(None, error=str(err))
    return loaded


def resolve_prompts(prompts_path: str | os.PathLike | None, eval_info_path: str | os.PathLike | None,
                    dimensions: Sequence[str] | None) -> tuple[list[BenchPrompt], str]:
    """Prompt list and a description of where it came from."""
    if prompts_path is None:
        return select_dimensions(builtin_prompts(), dimensions), "builtin (project's own 30 prompts)"
    prompts = load_published_prompts(prompts_path, eval_info_path)
    return select_dimensions(prompts, dimensions), str(prompts_path)


class _Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Span:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] = timer.seconds.get(name, 0.0) + time.perf_counter() - self.start

        return _Span()


def _score(prompts: Sequence[BenchPrompt], motions: dict[str, LoadedMotion], height_axis: str,
           judge_factory: Callable[[], object] | None, pose_scorer_factory: Callable[[], object] | None,
           timer: _Timer, names: dict) -> list[dict]:
    rows: dict[tuple[str, str], dict] = {}
    for prompt in prompts:
        motion = motions.get(prompt.key) or LoadedMotion(None, error=f"{prompt.key}: no motion")
        for dimension in prompt.dimensions:
            rows[(prompt.key, dimension)] = {
                "id": prompt.global_id if prompt.file_stem is None else prompt.file_stem, "group": prompt.group, "dimension": dimension, "prompt": prompt.text,
                "value": None, "error": motion.error,
            }

    def wanted(dimension_set) -> list[BenchPrompt]:
        return [p for p in prompts if motions[p.key].error is None and set(p.dimensions) & set(dimension_set)]

    # Motion quality: one vectorised call over every valid motion.
    mq_prompts = wanted(metrics.MOTION_QUALITY_DIMENSIONS)
    if mq_prompts:
        requested = tuple(d for d in metrics.MOTION_QUALITY_DIMENSIONS if any(d in p.dimensions for p in mq_prompts))
        with timer("motion_quality"):
            scores = metrics.motion_quality_scores([motions[p.key].joints for p in mq_prompts], requested, height_axis)
        for i, prompt in enumerate(mq_prompts):
            for dimension in requested:
                if dimension in prompt.dimensions:
                    rows[(prompt.key, dimension)]["value"] = float(scores[dimension][i])

    pose_prompts = wanted(POSE_DIMENSIONS)
    if pose_prompts:
        with timer("pose"):
            from tqdm import tqdm

            scorer = _build(pose_scorer_factory, "pose scorer", names, "pose_scorer")
            for prompt in tqdm(pose_prompts, desc="pose metrics", unit="motion", leave=False):
                motion = motions[prompt.key]
                for dimension in set(prompt.dimensions) & set(POSE_DIMENSIONS):
                    row = rows[(prompt.key, dimension)]
                    try:
                        if isinstance(scorer, Exception):
                            raise scorer
                        row["value"] = float(scorer.score(dimension, motion.joints, motion.features))
                        row["scored_by"] = names["pose_scorer"]
                    except Exception as err:  # noqa: BLE001 - recorded per motion, the run goes on
                        row["error"] = f"{prompt.key}: {type(err).__name__}: {err}"

    judge_prompts = wanted(("Motion_Condition_Consistency", "Motion_Generalizability"))
    if judge_prompts:
        with timer("judge"):
            judge = _build(judge_factory, "judge", names, "judge")
            choices = [p for p in judge_prompts if "Motion_Condition_Consistency" in p.dimensions]
            yes_no = [p for p in judge_prompts if "Motion_Generalizability" in p.dimensions]
            _judge_rows(judge, choices, "Motion_Condition_Consistency", motions, rows, names)
            _judge_rows(judge, yes_no, "Motion_Generalizability", motions, rows, names)
    for row in rows.values():
        if row["value"] is not None:
            row["error"] = None
    return list(rows.values())


def _judge_rows(judge, prompts: list[BenchPrompt], dimension: str, motions: dict[str, LoadedMotion],
                rows: dict, names: dict) -> None:
    """Fill one text dimension's rows: batched when the judge can (LocalJudge), else per motion;
    a failing motion (or a failed batch, retried per motion) records its own error."""
    if not prompts:
        return
    is_choice = dimension == "Motion_Condition_Consistency"

    def record(prompt: BenchPrompt, answer) -> None:
        row = rows[(prompt.key, dimension)]
        if is_choice:
            row["value"], row["choice"] = float(answer == 0), prompt.candidates[answer]
        else:
            row["value"] = float(bool(answer))
        row["scored_by"] = names["judge"]

    if isinstance(judge, Exception):
        for prompt in prompts:
            rows[(prompt.key, dimension)]["error"] = f"{prompt.key}: {type(judge).__name__}: {judge}"
        return
    batched = getattr(judge, "choose_many" if is_choice else "matches_many", None)
    if batched is not None and all(p.candidates for p in prompts if is_choice):
        joints = [motions[p.key].joints for p in prompts]
        try:
            answers = batched(joints, [list(p.candidates) for p in prompts]) if is_choice else batched(joints, [p.text for p in prompts])
        except Exception:  # noqa: BLE001 - fall back to one motion at a time to isolate the culprit
            answers = None
        if answers is not None:
            for prompt, answer in zip(prompts, answers, strict=True):
                record(prompt, answer)
            return
    for prompt in prompts:
        try:
            if is_choice:
                if not prompt.candidates:
                    raise ValueError("no candidate labels for a consistency prompt")
                record(prompt, judge.choose(motions[prompt.key].joints, list(prompt.candidates)))
            else:
                record(prompt, judge.matches(motions[prompt.key].joints, prompt.text))
        except Exception as err:  # noqa: BLE001 - recorded per motion, the run goes on
            rows[(prompt.key, dimension)]["error"] = f"{prompt.key}: {type(err).__name__}: {err}"


def _build(factory, what: str, names: dict, key: str):
    """Build a judge/scorer once; a failure becomes the error of every motion that needed it."""
    if factory is None:
        error = RuntimeError(f"no {what} configured")
        names[key] = None
        return error
    try:
        built = factory()
    except Exception as err:  # noqa: BLE001
        names[key] = f"unavailable ({type(err).__name__}: {err})"
        return err
    names[key] = getattr(built, "name", type(built).__name__)
    return built


def aggregate(rows: Sequence[dict]) -> dict[str, dict]:
    """Per dimension: mean, population std, count (scored motions) and errors."""
    out = {}
    for dimension in ALL_DIMENSIONS:
        mine = [r for r in rows if r["dimension"] == dimension]
        if not mine:
            continue
        values = np.array([r["value"] for r in mine if r["value"] is not None], dtype=np.float64)
        out[dimension] = {
            "mean": float(values.mean()) if len(values) else None,
            "std": float(values.std(ddof=0)) if len(values) else None,
            "count": int(len(values)),
            "errors": int(len(mine) - len(values)),
            "better": BETTER[dimension],
        }
    return out


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


def default_judge_factory():
    from vimogen_core.bench.judges import load_or_train_local_judge

    return load_or_train_local_judge()


def default_pose_scorer_factory():
    from vimogen_core.bench.pose import default_pose_scorer

    return default_pose_scorer()


def _run(prompts: list[BenchPrompt], prompt_source: str, motions: dict[str, LoadedMotion], *, height_axis: str,
         judge_factory, pose_scorer_factory, out_dir, model_name: str, timer: _Timer, extra_meta: dict,
         sink=None) -> MBenchResult:
    if height_axis not in metrics.HEIGHT_MODES:
        raise ValueError(f"unknown height_axis {height_axis!r}; choose one of {metrics.HEIGHT_MODES}")
    names: dict = {}
    with timer("score_total"):
        rows = _score(prompts, motions, height_axis, judge_factory, pose_scorer_factory, timer, names)
    aggregates = aggregate(rows)
    metadata = {
        "model": model_name,
        "prompt_source": prompt_source,
        "n_prompts": len(prompts),
        # the prompts' content, wherever they were read from: scores are comparable only on the same set
        "prompt_set_sha256": hashlib.sha256(json.dumps([asdict(p) for p in prompts]).encode()).hexdigest(),
        "dimensions": sorted({d for p in prompts for d in p.dimensions}, key=ALL_DIMENSIONS.index),
        "judge": names.get("judge"),
        "pose_scorer": names.get("pose_scorer"),
        "height_axis": height_axis,
        "n_motion_errors": sum(1 for m in motions.values() if m.error),
        "timing_s": dict(timer.seconds),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
    } | extra_meta
    result = MBenchResult(aggregates, rows, metadata)
    if sink is not None:
        sink.log_metrics({f"mbench/{d}": a["mean"] for d, a in aggregates.items() if a["mean"] is not None}, 0)
    if out_dir is not None:
        write_outputs(result, out_dir, model_name)
    return result


def score_directory(motions_dir: str | os.PathLike, dimensions: Sequence[str] | None = None,
                    out_dir: str | os.PathLike | None = None, *, prompts_path=None, eval_info_path=None,
                    height_axis: str = metrics.HEIGHT_TRUE, judge_factory=default_judge_factory,
                    pose_scorer_factory=default_pose_scorer_factory, model_name: str | None = None,
                    sink=None) -> MBenchResult:
    """Score a folder of motions from any system.

    With a prompt file (published MBench or the built-in set when `prompts_path == "builtin"`),
    motions are `{global_id}.npy` for every prompt and each is scored on its prompt's dimensions.
    Without one, every `*.npy` in the folder is scored on the motion-only dimensions (quality and
    pose; default: all of them), since the text dimensions need prompts.
    """
    timer = _Timer()
    motions_dir = Path(motions_dir)
    if not motions_dir.is_dir():
        raise MotionDataError(motions_dir, "motion folder not found")
    if prompts_path is None:
        chosen = tuple(dimensions) if dimensions else MOTION_ONLY_DIMENSIONS
        needs_prompts = set(chosen) - set(MOTION_ONLY_DIMENSIONS)
        if needs_prompts:
            raise ValueError(f"{sorted(needs_prompts)} need prompts: pass a prompt file (or 'builtin')")
        stems = sorted((p.stem for p in motions_dir.glob("*.npy")), key=lambda s: (not s.isdigit(), s.zfill(12)))
        prompts = [BenchPrompt(i, "folder", "", chosen, 0, file_stem=stem) for i, stem in enumerate(stems)]
        source = f"folder {motions_dir}"
        with timer("load"):
            motions = load_motion_folder(motions_dir, stems)
    else:
        prompts, source = resolve_prompts(None if prompts_path == "builtin" else prompts_path, eval_info_path, dimensions)
        with timer("load"):
            motions = load_motion_folder(motions_dir, [p.key for p in prompts])
    return _run(prompts, source, motions, height_axis=height_axis, judge_factory=judge_factory,
                pose_scorer_factory=pose_scorer_factory, out_dir=out_dir, model_name=model_name or motions_dir.name,
                timer=timer, extra_meta={"motions_dir": str(motions_dir)}, sink=sink)


def generate_motions(checkpoint: str | os.PathLike, prompts: Sequence[BenchPrompt], motions_dir: str | os.PathLike | None,
                     *, steps: int | None = None, cfg_scale: float | None = None, seed: int = 0,
                     batch_size: int = 32, cleanup: bool = True, protocol: str = "project",
                     prompts_path: str | os.PathLike | None = None, mbench_data: str | os.PathLike | None = None
                     ) -> tuple[dict[str, LoadedMotion], dict]:
    """Generate one motion per prompt with a trained checkpoint under `protocol`
    (bench/protocol.py: which text, length, branch, weights, sampler, guidance and joint decode);
    optionally save `{id}.npy` joints and `features/{id}.npy`. Prompts go in order of length so that
    each batch pads little; the generator seeds every motion by its position, so runs are
    reproducible. Returns the motions and what generated them (protocol, post-processing the
    generator applied (`cleanup=False`: none, the network's features as sampled), sampler, notes)."""
    from vimogen_core.bench.protocol import attach_embeddings, build_requests, get_protocol
    from vimogen_core.train.generate import load_generator

    spec = get_protocol(protocol)
    generator = load_generator(checkpoint, use_ema=spec.use_ema)
    if not cleanup or not spec.cleanup:
        generator.cleanup = None
    if spec.sampler is not None:
        generator.sampler = spec.sampler
    requests, notes = build_requests(spec, prompts, prompts_path, mbench_data)
    notes += attach_embeddings(requests, generator.text)
    cfg_scale = spec.cfg_scale if cfg_scale is None else cfg_scale
    options = {k: v for k, v in {"steps": steps, "cfg_scale": cfg_scale}.items() if v is not None}
    out: dict[str, LoadedMotion] = {r.prompt.key: LoadedMotion(None, None, r.error) for r in requests if r.error}
    ordered = sorted((r for r in requests if r.error is None), key=lambda r: (r.n_frames, r.prompt.global_id))
    generate = generator.generate
    if spec.long_motions_in_windows:
        from vimogen_core.control.timeline import generate_any_length, trained_window

        generate = partial(generate_any_length, generator)
        window = trained_window(generator)
        n_long = sum(1 for r in ordered if r.use_text and r.n_frames > window)
        if n_long:
            notes.append(f"{n_long} text-mode motions longer than {window} frames (80% of the checkpoint's longest "
                         "training window) continued in windows of that length")
    features = generate([r.text for r in ordered], n_frames=[r.n_frames for r in ordered],
                        ref_motions=[r.reference for r in ordered], seed=seed, batch_size=batch_size,
                        progress=True, **options) if ordered else []
    for request, feats in zip(ordered, features, strict=True):
        key = request.prompt.key
        feats = np.asarray(feats, dtype=np.float32)
        try:
            check_features(feats, f"generated:{key}")
            joints = metrics.validate_joints(spec.joints(feats), f"generated:{key}")
            out[key] = LoadedMotion(joints, feats)
        except MotionDataError as err:
            out[key] = LoadedMotion(None, None, str(err))
    if motions_dir is not None:
        motions_dir = Path(motions_dir)
        (motions_dir / "features").mkdir(parents=True, exist_ok=True)
        for key, motion in out.items():
            if motion.joints is not None:
                np.save(motions_dir / "features" / f"{key}.npy", motion.features)
                np.save(motions_dir / f"{key}.npy", motion.joints.astype(np.float32))
    info = {"protocol": spec.name, "postprocessing": generator.postprocessing,
            "sampler": generator.sampler_config.name, "weights": "EMA" if spec.use_ema else "raw",
            "joints_from": spec.joints_name, "cfg_scale": cfg_scale,
            "n_reference_mode": sum(1 for r in requests if not r.use_text and r.error is None),
            "n_text_mode": sum(1 for r in requests if r.use_text and r.error is None), "protocol_notes": notes}
    return out, info


def run_mbench(checkpoint: str | os.PathLike | None = None, *, motions_dir: str | os.PathLike | None = None,
               prompts_path=None, eval_info_path=None, dimensions: Sequence[str] | None = None,
               out_dir: str | os.PathLike | None = None, height_axis: str = metrics.HEIGHT_TRUE,
               judge_factory=default_judge_factory, pose_scorer_factory=default_pose_scorer_factory,
               steps: int | None = None, cfg_scale: float | None = None, seed: int = 0, cleanup: bool = True,
               model_name: str | None = None, sink=None, protocol: str = "project",
               mbench_data: str | os.PathLike | None = None) -> MBenchResult:
    """Generate with `checkpoint` under `protocol` (or read `motions_dir`) for the prompts and score
    them. `mbench_data`: the released MBench data folder (reference motions, umT5 embeddings)."""
    if (checkpoint is None) == (motions_dir is None):
        raise ValueError("give exactly one of a checkpoint (to generate) or a motion folder")
    timer = _Timer()
    prompts, source = resolve_prompts(prompts_path, eval_info_path, dimensions)
    extra = {}
    if checkpoint is not None:
        with timer("generate"):
            save_to = Path(out_dir) / "motions" if out_dir is not None else None
            motions, generation = generate_motions(checkpoint, prompts, save_to, steps=steps, cfg_scale=cfg_scale,
                                                   seed=seed, cleanup=cleanup, protocol=protocol,
                                                   prompts_path=prompts_path, mbench_data=mbench_data)
        extra = {"checkpoint": str(checkpoint), "steps": steps, "seed": seed, **generation,
                 "mbench_data": None if mbench_data is None else str(mbench_data),
                 "seconds_per_motion_generation": timer.seconds["generate"] / max(1, len(prompts))}
        name = model_name or Path(checkpoint).stem
    else:
        with timer("load"):
            motions = load_motion_folder(motions_dir, [p.key for p in prompts])
        extra = {"motions_dir": str(motions_dir)}
        name = model_name or Path(motions_dir).name
    return _run(prompts, source, motions, height_axis=height_axis, judge_factory=judge_factory,
                pose_scorer_factory=pose_scorer_factory, out_dir=out_dir, model_name=name, timer=timer,
                extra_meta=extra, sink=sink)
