"""A ViMoGen-light student against its teacher, on the same prompts and seeds.

Scores of each side: the MBench motion-quality metrics on the built-in prompt set (mean over
prompts x seeds), nearest-clip retrieval of one generation per built-in clip caption per seed
(`train/evaluation.py`; mean correct count over seeds, of 15), and the Frechet distance between the
student's and the teacher's motions in a text-motion evaluator's embedding space (when given one).
The student is sampled at each requested step count with its built-in guidance, the teacher as
configured (its preset's guidance unless `teacher_cfg`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vimogen_core.bench.classic import frechet_distance
from vimogen_core.motion.metrics import motion_quality_scores
from vimogen_core.bench.prompts import builtin_prompts
from vimogen_core.motion.representation import features_to_joints

DIMENSIONS = ("Jitter_Degree", "Dynamic_Degree", "Foot_Floating", "Foot_Sliding", "Ground_Penetration")
RATIO_DIMENSIONS = ("Jitter_Degree", "Foot_Floating", "Foot_Sliding")  # lower is better; the acceptance ratios


@dataclass(frozen=True)
class Request:
    prompts: list[str]
    lengths: list[int]
    seeds: list[int]


def _generate(generator, request: Request, steps: int, cfg_scale: float | None) -> list[np.ndarray]:
    feats = []
    for seed in request.seeds:
        feats += generator.generate(request.prompts, request.lengths, steps=steps, cfg_scale=cfg_scale, seed=seed)
    return [features_to_joints(f) for f in feats]  # (T, 22, 3) each


def _side(generator, quality: Request, clips: Request, clip_variants, clip_names, steps: int,
          cfg_scale: float | None, evaluator) -> tuple[dict, list[np.ndarray]]:
    from vimogen_core.train.evaluation import retrieval

    started = time.perf_counter()
    joints = _generate(generator, quality, steps, cfg_scale)
    scores = {dim: float(np.mean(v)) for dim, v in motion_quality_scores(joints, DIMENSIONS).items()}
    clip_joints = _generate(generator, clips, steps, cfg_scale)
    n = len(clip_names)
    correct = [retrieval(clip_joints[i * n:(i + 1) * n], clip_variants, clip_names).correct for i in range(len(clips.seeds))]
    out = {"steps": steps, **scores, "retrieval_correct": float(np.mean(correct)), "retrieval_of": n,
           "wall_s": round(time.perf_counter() - started, 1)}
    embeddings = evaluator.encode_motions(joints) if evaluator is not None else None
    return out, embeddings


def compare_to_teacher(teacher, students: dict, student_steps: Sequence[int] = (1, 2, 4),
                       seeds: Sequence[int] = (0, 1000, 2000), teacher_steps: int = 50, teacher_cfg: float | None = None,
                       evaluator=None, teacher_side: tuple[dict, np.ndarray | None] | None = None) -> dict:
    """teacher: a Generator (train/generate.py); students: name -> Generator, each scored at every
    step count against the one teacher run; evaluator: a TextMotionEvaluator or None.
    `teacher_side`: the teacher's (scores, motion embeddings) of an earlier call on the same
    prompts and seeds (the result's "teacher" and "teacher_embeddings"), instead of sampling it again."""
    from vimogen_core.motion.motion import mirror
    from vimogen_core.sources.deepmimic import load_builtin_clips

    prompts = builtin_prompts()
    quality = Request([p.text for p in prompts], [p.n_frames for p in prompts], list(seeds))
    built = load_builtin_clips(min_frames=teacher.train_config.builtin_min_frames)
    clip_names = [c.name for c in built]
    clip_variants = [[c.motion.joints.numpy()[:-1], mirror(c.motion).joints.numpy()[:-1]] for c in built]
    clips = Request([c.captions[0] for c in built], [100] * len(built), list(seeds))

    if teacher_side is None:
        reference, teacher_emb = _side(teacher, quality, clips, clip_variants, clip_names, teacher_steps, teacher_cfg,
                                       evaluator)
        reference = {"checkpoint": str(teacher.checkpoint), "step": teacher.step, **reference,
                     "cfg": teacher.train_config.guidance_scale if teacher_cfg is None else teacher_cfg}
    else:
        reference, teacher_emb = teacher_side
    out = {}
    for name, student in students.items():
        rows = []
        for steps in student_steps:
            row, emb = _side(student, quality, clips, clip_variants, clip_names, steps, None, evaluator)
            row["ratio_to_teacher"] = {dim: round(row[dim] / reference[dim], 3) if reference[dim] else None
                                       for dim in RATIO_DIMENSIONS}
            row["retrieval_gap"] = row["retrieval_correct"] - reference["retrieval_correct"]
            if emb is not None:
                row["fid_to_teacher"] = round(frechet_distance(teacher_emb, emb), 4)
            rows.append(row)
        out[name] = {"checkpoint": str(student.checkpoint), "step": student.step, "results": rows}
    return {"teacher": reference, "teacher_embeddings": teacher_emb, "students": out,
            "motions_per_side": len(quality.prompts) * len(seeds), "seeds": list(seeds),
            "evaluator": "none" if evaluator is None else "local text-motion evaluator"}
