"""`vimogen distill ...`: ViMoGen-light from a full ViMoGen checkpoint.

    vimogen distill prompts --out prompts.txt --count 2000
    vimogen distill sample --teacher CKPT --prompts prompts.txt --out teacher_samples/
    vimogen distill validate --manifest teacher_samples/manifest.parquet
    vimogen distill train --teacher CKPT --samples teacher_samples/manifest.parquet --out light_run/
    vimogen distill score --teacher CKPT --student light_run/checkpoints/step_X.pt

`--params params.yaml` reads the settings of `prompts`, `sample` and `train` from that file's
`distill_prompts`, `distill_sample` and `distill_train` sections (what DVC and the Dagster assets
use); an option given on the command line wins over the file.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from vimogen_core.distill.prompts import PromptSettings
    from vimogen_core.distill.student import METHODS, StudentConfig
    from vimogen_core.distill.teacher import TeacherSamplingConfig

    distill = subparsers.add_parser("distill", help="ViMoGen-light: a few-step text-only student of a checkpoint")
    steps = distill.add_subparsers(dest="distill_command", required=True)

    prompts = steps.add_parser("prompts", help="expand the training captions into new prompts")
    prompts.add_argument("--out", required=True, help="text file, one prompt per line")
    prompts.add_argument("--params", help="params.yaml: its distill_prompts section")
    prompts.add_argument("--count", type=int, help=f"default {PromptSettings.count}")
    prompts.add_argument("--expander", help=f"default {PromptSettings.expander}")
    prompts.add_argument("--seed", type=int, help=f"default {PromptSettings.seed}")
    prompts.add_argument("--captions-from", help="a curated manifest.parquet (default: the built-in clips' captions)")
    prompts.set_defaults(func=cmd_prompts)

    sample = steps.add_parser("sample", help="the teacher performs the prompts: a teacher-sample shard set")
    sample.add_argument("--teacher", required=True, help="a full ViMoGen training checkpoint")
    sample.add_argument("--prompts", required=True, help="text file, one prompt per line")
    sample.add_argument("--out", required=True)
    sample.add_argument("--params", help="params.yaml: its distill_sample section")
    sample.add_argument("--steps", type=int, help=f"default {TeacherSamplingConfig.steps}")
    sample.add_argument("--cfg", dest="cfg_scale", type=float, help="guidance scale (default: the teacher preset's)")
    sample.add_argument("--seed", type=int, help="default 0")
    sample.add_argument("--batch-size", type=int, help=f"default {TeacherSamplingConfig.batch_size}")
    sample.add_argument("--device", default="cpu")
    sample.set_defaults(func=cmd_sample)

    validate = steps.add_parser("validate", help="the expectation suite (with frame checks) over teacher samples")
    validate.add_argument("--manifest", required=True)
    validate.add_argument("--report", help="write the JSON report here")
    validate.set_defaults(func=cmd_validate)

    train = steps.add_parser("train", help="distil a light student on validated teacher samples")
    train.add_argument("--teacher", required=True)
    train.add_argument("--samples", required=True, help="teacher-sample manifest.parquet")
    train.add_argument("--out", required=True, help="run folder")
    train.add_argument("--params", help="params.yaml: its distill_train section")
    train.add_argument("--method", choices=METHODS, help=f"default {StudentConfig.method}")
    train.add_argument("--steps", type=int, help=f"default {StudentConfig.steps}")
    train.add_argument("--batch-size", type=int, help=f"default {StudentConfig.batch_size}")
    train.add_argument("--teacher-share", type=float, help=f"default {StudentConfig.teacher_share}")
    train.add_argument("--lr", type=float, help=f"default {StudentConfig.lr}")
    train.add_argument("--resume", help="a checkpoint file, or 'auto'")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(func=cmd_train)

    score = steps.add_parser("score", help="a light student against its teacher (same prompts and seeds)")
    score.add_argument("--teacher", required=True)
    score.add_argument("--student", required=True, help="a ViMoGen-light checkpoint")
    score.add_argument("--student-steps", default="1,2,4")
    score.add_argument("--seeds", type=int, default=3)
    score.add_argument("--teacher-cfg", type=float, help="the teacher's guidance (default: its preset's)")
    score.add_argument("--evaluator", help="a local judge / evaluator folder, for FID student vs teacher")
    score.set_defaults(func=cmd_score)


def _given(args, *names: str) -> dict:
    return {name: getattr(args, name) for name in names}


def cmd_prompts(args) -> int:
    from vimogen_core.distill.prompts import expand_prompts
    from vimogen_core.distill.settings import distill_settings
    from vimogen_core.files import atomic_write_bytes

    prompts, n_captions = expand_prompts(distill_settings("prompts", args.params, _given(args, "count", "expander", "seed")),
                                         args.captions_from)
    atomic_write_bytes(Path(args.out), ("\n".join(prompts) + "\n").encode("utf-8"))
    print(json.dumps({"out": args.out, "prompts": len(prompts), "from_captions": n_captions}))
    return 0


def cmd_sample(args) -> int:
    from vimogen_core.distill.settings import distill_settings
    from vimogen_core.distill.teacher import sample_teacher, validate_teacher_samples
    from vimogen_core.train.generate import load_generator, read_prompt_file

    result = sample_teacher(load_generator(args.teacher, device=args.device), read_prompt_file(args.prompts), args.out,
                            distill_settings("sample", args.params, _given(args, "steps", "cfg_scale", "seed", "batch_size")))
    validation = validate_teacher_samples(result.manifest_path, Path(args.out) / "validation.json")
    print(json.dumps({**result.to_metadata(), "validation": validation.to_metadata()}))
    return 0 if validation.success else 1


def cmd_validate(args) -> int:
    from vimogen_core.distill.teacher import validate_teacher_samples

    validation = validate_teacher_samples(args.manifest, args.report)
    print(json.dumps(validation.to_metadata()))
    return 0 if validation.success else 1


def cmd_train(args) -> int:
    from vimogen_core.distill.settings import distill_settings
    from vimogen_core.distill.student import train_student
    from vimogen_core.sinks import NullSink, PrintSink

    config = distill_settings("train", args.params, _given(args, "method", "steps", "batch_size", "teacher_share", "lr"))
    result = train_student(args.teacher, args.samples, args.out, config,
                           sink=NullSink() if args.quiet else PrintSink(), resume=args.resume, progress=not args.quiet)
    print(json.dumps(result.to_metadata()))
    return 0


def cmd_score(args) -> int:
    from vimogen_core.bench.light import compare_to_teacher
    from vimogen_core.distill.student import load_light_generator, load_teacher_checkpoint
    from vimogen_core.train.generate import load_generator

    load_teacher_checkpoint(args.teacher)  # refuses a student passed as the teacher
    student = load_light_generator(args.student)
    evaluator = None
    if args.evaluator:
        from vimogen_core.bench.evaluator import TextMotionEvaluator

        evaluator = TextMotionEvaluator.load(args.evaluator)
    steps = [int(s) for s in args.student_steps.split(",")]
    scores = compare_to_teacher(load_generator(args.teacher), {"student": student}, steps,
                                seeds=[1000 * i for i in range(args.seeds)], teacher_cfg=args.teacher_cfg,
                                evaluator=evaluator)
    scores.pop("teacher_embeddings")
    print(json.dumps(scores, indent=1))
    return 0
