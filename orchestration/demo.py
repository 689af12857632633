"""`make demo`: materialise the whole asset graph on the embedded defaults with the `dagster` CLI,
then say where the registered model, the MBench report and the UIs are."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from orchestration.resources import REPO_ROOT, default_state_dir, default_tracking_uri


def demo_environment(state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "VIMOGEN_STATE_DIR": str(state_dir),
        "DAGSTER_HOME": str(state_dir / "dagster_home"),
        "MLFLOW_TRACKING_URI": default_tracking_uri(str(state_dir)),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
        "DAGSTER_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    })
    return env


def run_config_yaml(steps: int, bench_steps: int) -> str:
    return (f"ops:\n  trained_model:\n    config:\n      steps: {steps}\n"
            f"  mbench_scores:\n    config:\n      steps: {bench_steps}\n")


def materialize_all(state_dir: Path, steps: int, bench_steps: int) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    env = demo_environment(state_dir)
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    config = state_dir / "demo_run_config.yaml"
    config.write_text(run_config_yaml(steps, bench_steps))
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "asset", "materialize", "--select", "*", "-m", "orchestration.definitions",
               "-c", str(config)]
    subprocess.run(command, env=env, cwd=REPO_ROOT, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", default=default_state_dir())
    parser.add_argument("--steps", type=int, default=1500, help="training steps of the tiny model")
    parser.add_argument("--bench-steps", type=int, default=20, help="sampling steps for MBench generations")
    args = parser.parse_args(argv)
    state = Path(args.state_dir).resolve()
    started = time.perf_counter()
    materialize_all(state, args.steps, args.bench_steps)
    minutes = (time.perf_counter() - started) / 60
    print(f"""
ViMoGen demo finished in {minutes:.1f} min.
  registered model : models:/vimogen@champion  (MLflow store {default_tracking_uri(str(state))})
  MBench report    : {state / 'bench' / 'mbench'}
  classic metrics  : {state / 'bench' / 'classic.json'}
  curated shards   : {state / 'data' / 'shards'}
  Dagster UI       : make ui        -> http://127.0.0.1:3000
  MLflow UI        : make mlflow-ui -> http://127.0.0.1:5000
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
