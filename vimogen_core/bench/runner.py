"""The MBench runner: prompts -> motions (generated, or a folder of `{id}.npy`) -> scores -> report.

The jobs it drives live beside it: reading motions (`bench/motions.py`), generating them with a
checkpoint (`bench/generation.py`) and writing the result (`bench/report.py`: `scores.json`,
`per_motion.jsonl`, `metadata.json`, `report.md`); here the prompts are chosen and every motion
is scored on its prompt's dimensions.

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
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from vimogen_core.bench.generation import generate_motions
from vimogen_core.bench.motions import LoadedMotion, load_motion_folder
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
from vimogen_core.bench.report import MBenchResult, write_outputs
from vimogen_core.errors import MotionDataError
from vimogen_core.motion import metrics


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
