"""`vimogen bench ...`: score motion folders, run MBench with a checkpoint, train the local judge."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from vimogen_core.motion.metrics import HEIGHT_MODES, HEIGHT_TRUE
from vimogen_core.bench.prompts import ALL_DIMENSIONS


def _judge_factory(args):
    if args.judge == "vlm":
        def build():
            from vimogen_core.bench.vlm import VLMConfig, VLMJudge

            return VLMJudge(VLMConfig.from_env())
        return build

    def build_local():
        from vimogen_core.bench.judges import load_or_train_local_judge

        return load_or_train_local_judge(args.judge_dir)
    return build_local


def _scoring_command(parser: argparse.ArgumentParser, func) -> None:
    """The options every scoring command shares, and the function that runs it."""
    parser.set_defaults(func=func)
    parser.add_argument("--dimension", action="append", choices=ALL_DIMENSIONS, dest="dimensions",
                        help="score only this dimension (repeatable; default: all that apply)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: next to the input)")
    parser.add_argument("--eval-info", type=Path, default=None, help="MBench_eval_info.json (with --prompts)")
    parser.add_argument("--height-axis", choices=HEIGHT_MODES, default=HEIGHT_TRUE,
                        help="foot metrics: true height (z) or the released script's literal axis behaviour")
    parser.add_argument("--judge", choices=("local", "vlm"), default="local",
                        help="local contrastive judge (offline default) or a video-language model (env-configured)")
    parser.add_argument("--judge-dir", type=Path, default=None, help="saved LocalJudge folder (trained there if absent)")
    parser.add_argument("--model-name", default=None, help="name of the scored model in the report")


def _print_summary(result) -> None:
    for dimension, agg in result.aggregates.items():
        mean = "-" if agg["mean"] is None else f"{agg['mean']:.4f}"
        std = "-" if agg["std"] is None else f"{agg['std']:.4f}"
        print(f"{dimension:30s} {mean:>9s} +- {std:<9s} n={agg['count']} errors={agg['errors']}")
    if result.out_dir is not None:
        print(f"wrote {', '.join(str(p) for p in result.files.values())}")


def cmd_score(args) -> int:
    from vimogen_core.bench.runner import score_directory

    result = score_directory(args.motions_dir, args.dimensions, args.out or args.motions_dir / "mbench",
                             prompts_path=args.prompts, eval_info_path=args.eval_info, height_axis=args.height_axis,
                             judge_factory=_judge_factory(args), model_name=args.model_name)
    _print_summary(result)
    return 0


def cmd_run(args) -> int:
    from vimogen_core.bench.runner import run_mbench

    out = args.out or Path(args.checkpoint).parent / f"mbench_{Path(args.checkpoint).stem}"
    result = run_mbench(args.checkpoint, prompts_path=args.prompts, eval_info_path=args.eval_info,
                        dimensions=args.dimensions, out_dir=out, height_axis=args.height_axis,
                        judge_factory=_judge_factory(args), steps=args.steps, cfg_scale=args.cfg_scale, cleanup=not args.no_cleanup,
                        seed=args.seed, model_name=args.model_name, protocol=args.protocol, mbench_data=args.mbench_data)
    _print_summary(result)
    print(json.dumps({"timing_s": result.metadata["timing_s"]}))
    return 0


def cmd_train_judge(args) -> int:
    from vimogen_core.bench.evaluator import EvaluatorConfig
    from vimogen_core.bench.judges import default_judge_dir, train_local_judge

    judge = train_local_judge(config=EvaluatorConfig.preset(args.preset), manifest_path=args.manifest)
    out = judge.save(args.out or default_judge_dir())
    print(json.dumps({"judge": judge.name, "dir": str(out), "calibration": judge.calibration.__dict__}, indent=2))
    return 0


def register(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="MBench and classic text-to-motion metrics")
    commands = bench.add_subparsers(dest="bench_command", required=True)

    score = commands.add_parser("score", help="score a folder of {id}.npy motions (joints (T,22,3) or features (T,276))")
    score.add_argument("motions_dir", type=Path)
    score.add_argument("--prompts", default=None,
                       help="MBench_final.json, or 'builtin' for the project's prompt set; without it every "
                            "*.npy is scored on the motion-only dimensions")
    _scoring_command(score, cmd_score)

    run = commands.add_parser("run", help="generate with a checkpoint for the benchmark prompts and score")
    run.add_argument("--checkpoint", required=True, type=Path)
    run.add_argument("--prompts", type=Path, default=None, help="MBench_final.json (default: the built-in prompt set)")
    run.add_argument("--steps", type=int, default=None, help="sampler steps (default: the checkpoint's)")
    run.add_argument("--cfg-scale", type=float, default=None)
    run.add_argument("--no-cleanup", action="store_true",
                     help="score the network's features as sampled, without the post-sampling clean-up")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--protocol", choices=("project", "released"), default="project",
                     help="how motions are generated: the project's (short prompt at its duration, EMA, clean-up) or "
                          "the released evaluation's (prompt_motion_detailed, 100-frame text mode, use_ref_motion "
                          "entries in reference mode, raw weights, released sampler, guidance 5, velocity-integrated joints)")
    run.add_argument("--mbench-data", type=Path, default=None,
                     help="the released MBench data folder (data/mbench layout: wan2.2 reference motions, "
                          "wanvideo_text_features); without it use_ref_motion entries run in text mode")
    _scoring_command(run, cmd_run)

    train = commands.add_parser("train-judge", help="train and calibrate the local judge (built-in clips or curated shards)")
    train.add_argument("--out", type=Path, default=None)
    train.add_argument("--preset", default="default", choices=("default", "quick", "curated"))
    train.add_argument("--manifest", type=Path, default=None,
                       help="curated shard manifest (Parquet) to train on (default: the built-in clips)")
    train.set_defaults(func=cmd_train_judge)
