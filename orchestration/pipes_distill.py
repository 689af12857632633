"""`python -m orchestration.pipes_distill <vimogen distill train arguments>`: the ViMoGen-light
student's training as Dagster launches it through Pipes, like `orchestration.pipes_train` for the
full model. Same library function as `vimogen distill train`; metrics stream back to Dagster as log
lines, to `metrics.jsonl` in the run folder, and live to the MLflow run the asset opened
(MLFLOW_TRACKING_URI / MLFLOW_RUN_ID in the environment)."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from dagster_pipes import open_dagster_pipes

    from orchestration.pipes_train import PipesMetricSink
    from vimogen_core.cli import build_parser
    from vimogen_core.distill.settings import distill_settings
    from vimogen_core.distill.student import train_student
    from vimogen_core.train import checkpoint as ckpt

    args = build_parser().parse_args(["distill", "train", *(sys.argv[1:] if argv is None else argv)])
    config = distill_settings("train", args.params, {name: getattr(args, name) for name in
                                                     ("method", "steps", "batch_size", "teacher_share", "lr")})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open_dagster_pipes() as pipes:
        (out / "metrics.jsonl").unlink(missing_ok=True)
        sink = PipesMetricSink(pipes, out / "metrics.jsonl", every=10, mlflow_run_id=os.environ.get("MLFLOW_RUN_ID"))
        pipes.log.info(f"distilling {args.teacher} ({config.method}, {config.steps} steps) on {args.samples}")
        result = train_student(args.teacher, args.samples, out, config, sink=sink, resume=args.resume, progress=False,
                               validation_report=out / "validation.json")
        (out / "train_config.json").write_text(ckpt.load_checkpoint(result.checkpoint)["train_config"])
        pipes.report_asset_materialization(metadata={
            "checkpoint": {"raw_value": result.checkpoint, "type": "path"},
            "teacher": {"raw_value": result.teacher, "type": "path"},
            "method": result.method,
            "teacher_samples": result.teacher_samples,
            "steps": result.step,
            "final_loss": float(result.final_loss),
            "wall_s": round(result.wall_s, 2),
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
