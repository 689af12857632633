"""`python -m orchestration.pipes_train <vimogen train arguments>`: the training run as Dagster
launches it through Pipes. Same library function as `vimogen train`; metrics stream back to Dagster
as log lines, to `metrics.jsonl` in the run folder, and live to the MLflow run the asset opened for
this training (MLFLOW_TRACKING_URI / MLFLOW_RUN_ID in the environment)."""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path


class PipesMetricSink:
    """A MetricSink that reports through a Dagster Pipes context, keeps a JSON-lines history and, given
    an MLflow run id, logs every metric to that run as it arrives."""

    def __init__(self, pipes, history_path: Path, every: int = 10, mlflow_run_id: str | None = None):
        self.pipes = pipes
        self.history = open(history_path, "a", encoding="utf-8")
        self.every = every
        self.mlflow_run_id = mlflow_run_id
        if mlflow_run_id:
            from mlflow.tracking import MlflowClient

            self.mlflow = MlflowClient()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.history.write(json.dumps({"step": step, **metrics}) + "\n")
        self.history.flush()
        if self.mlflow_run_id:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.mlflow.log_batch(self.mlflow_run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])
        if step % self.every == 0:
            self.pipes.log.info(f"step {step}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

    def log_text(self, message: str) -> None:
        self.pipes.log.info(message)

    def log_artifact(self, path) -> None:
        self.pipes.log.info(f"artifact: {path}")


# The loggers whose warnings say a call is being retried: MLflow's HTTP client (urllib3 retries every
# tracking call) and orchestration.retry; the loggers deploy/dagster.yaml routes into the run log of the
# asset's own process, here forwarded through Pipes from the trainer's.
RETRY_LOGGERS = ("urllib3.connectionpool", "vimogen.retry")


class PipesLogHandler(logging.Handler):
    """Forwards log records (WARNING and above) to the Dagster run log through a Pipes context."""

    def __init__(self, pipes):
        super().__init__(logging.WARNING)
        self.pipes = pipes

    def emit(self, record: logging.LogRecord) -> None:
        self.pipes.log.warning(f"{record.name}: {record.getMessage()}")


def torchrun_command(target: list[str], processes: int, nodes: int = 1, rdzv_endpoint: str = "",
                     rdzv_id: str = "vimogen-train") -> list[str]:
    """The command that runs `target` (["-m", module, ...] or [script, ...]) as `processes` processes
    per node on `nodes` nodes: one process runs it directly; one node uses torchrun --standalone;
    several nodes meet at `rdzv_endpoint` (host:port of the first node, c10d rendezvous, which
    hands out the node ranks, so no --node-rank) - each node runs this same command (the cluster
    route in README: a Dagster Pipes client starts one pod or container per node)."""
    if processes < 1 or nodes < 1:
        raise ValueError(f"processes and nodes must be >= 1, got {processes} and {nodes}")
    if nodes == 1 and rdzv_endpoint:
        raise ValueError(f"rendezvous endpoint {rdzv_endpoint!r} given for 1 node: set nodes > 1 or leave it empty")
    if nodes == 1 and processes == 1:
        return [sys.executable, *target]
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}"]
    if nodes == 1:
        return [*launcher, "--standalone", *target]
    host, _, port = rdzv_endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{nodes} nodes need a rendezvous endpoint host:port (the first node's), got {rdzv_endpoint!r}")
    return [*launcher, f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}",
            f"--rdzv-id={rdzv_id}", *target]


def main(argv: list[str] | None = None) -> int:
    from dagster_pipes import open_dagster_pipes

    from vimogen_core.cli import build_parser
    from vimogen_core.train.config import apply_overrides, get_train_preset
    from vimogen_core.train.loop import train

    args = build_parser().parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    config = get_train_preset(args.preset)
    overrides = list(args.assignments) + [f"{k}={getattr(args, k)}" for k in ("steps", "device", "data")
                                          if getattr(args, k) is not None]
    config = apply_overrides(config, overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 talks to Dagster
        train(config, out, resume=args.resume, progress=False)
        return 0
    with open_dagster_pipes() as pipes:
        for name in RETRY_LOGGERS:  # urllib3 itself only has a NullHandler: its retries would go unseen
            logging.getLogger(name).addHandler(PipesLogHandler(pipes))
        (out / "metrics.jsonl").unlink(missing_ok=True)
        sink = PipesMetricSink(pipes, out / "metrics.jsonl", every=max(1, config.log_every),
                               mlflow_run_id=os.environ.get("MLFLOW_RUN_ID"))
        pipes.log.info(f"training preset {args.preset} for {config.steps} steps on {config.data}")
        result = train(config, out, sink=sink, resume=args.resume, progress=False)
        (out / "train_config.json").write_text(config.to_json())
        pipes.report_asset_materialization(metadata={
            "checkpoint": {"raw_value": str(result.checkpoint), "type": "path"},
            "steps": result.step,
            "final_loss": float(result.final_loss),
            "wall_s": round(result.wall_s, 2),
            "samples_per_s": round(result.samples_per_s, 2),
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
