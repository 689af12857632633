"""Which few-step distillation to keep: students of one teacher, trained on the same teacher
samples with the same budget (steps, batch, initial weights), one per method, scored against the
teacher on the same prompts and seeds (vimogen_core/bench/light.py) at 1, 2 and 4 steps. Prints
JSON with each student's training time and scores.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distill_compare.py --teacher CKPT \\
        --samples TEACHER_SAMPLES/manifest.parquet --out /tmp/compare [--methods reflow,consistency] \\
        [--steps 400] [--batch-size 16] [--evaluator .state/bench/local_judge]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from vimogen_core.bench.light import compare_to_teacher
from vimogen_core.distill.student import StudentConfig, load_light_generator, train_student
from vimogen_core.train.generate import load_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--samples", required=True, help="a teacher-sample manifest.parquet")
    parser.add_argument("--out", required=True)
    parser.add_argument("--methods", default="reflow,consistency")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--teacher-share", type=float, default=StudentConfig.teacher_share)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--evaluator", help="a local judge / evaluator folder, for FID student vs teacher")
    parser.add_argument("--skip-training", action="store_true", help="score the students already in --out")
    parser.add_argument("--teacher-cache", help="JSON of the teacher's side: read when present, else written")
    parser.add_argument("--teacher-cfg", type=float, help="the teacher's guidance when scored (default: its preset's)")
    args = parser.parse_args()

    training, students = {}, {}
    for method in filter(None, args.methods.split(",")):
        out = Path(args.out) / method
        if not args.skip_training:
            config = StudentConfig(method=method, steps=args.steps, batch_size=args.batch_size,
                                   teacher_share=args.teacher_share, checkpoint_every=args.steps)
            result = train_student(args.teacher, args.samples, out, config, progress=False)
            training[method] = {"wall_s": round(result.wall_s, 1), "final_loss": result.final_loss, "steps": result.step}
        students[method] = load_light_generator(sorted((out / "checkpoints").glob("step_*.pt"))[-1])
    evaluator = None
    if args.evaluator:
        from vimogen_core.bench.evaluator import TextMotionEvaluator

        evaluator = TextMotionEvaluator.load(args.evaluator)
    cache = Path(args.teacher_cache) if args.teacher_cache else None
    teacher_side = None
    if cache is not None and cache.is_file():
        saved = json.loads(cache.read_text())
        teacher_side = (saved["teacher"], None if saved["embeddings"] is None else np.asarray(saved["embeddings"]))
    scores = compare_to_teacher(load_generator(args.teacher), students, seeds=[1000 * i for i in range(args.seeds)],
                                teacher_cfg=args.teacher_cfg, evaluator=evaluator, teacher_side=teacher_side)
    embeddings = scores.pop("teacher_embeddings")
    if cache is not None and teacher_side is None:
        cache.write_text(json.dumps({"teacher": scores["teacher"],
                                     "embeddings": None if embeddings is None else embeddings.tolist()}))
    print(json.dumps({"training": training, "budget": {"steps": args.steps, "batch_size": args.batch_size,
                                                        "teacher_share": args.teacher_share}, **scores}, indent=1))


if __name__ == "__main__":
    main()
