"""`make demo`: materialise the whole asset graph on the embedded defaults with the `dagster` CLI
(a subprocess, exactly what a user would run), then say where the registered model, the MBench
report and the UIs are. Everything lives in the project-local state folder."""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

from orchestration.quiet import QUIET_ENV
from orchestration.resources import REPO_ROOT, default_state_dir


# The laptop instance beyond Dagster's SQLite defaults: the steps that read or write the state
# folder's takes, samples and shards (pool `vimogen_shared_data`, orchestration/assets.py) one at a
# time across runs, so a sensor curation never rewrites the shards another run is reading
# (deploy/dagster.yaml sets the same for the deployment).
LAPTOP_INSTANCE = """concurrency:
  pools:
    default_limit: 1
    op_granularity_run_buffer: 1
telemetry:
  enabled: false
"""


def prepare_dagster_home(home: Path) -> Path:
    """DAGSTER_HOME with the laptop instance's dagster.yaml, unless the user already put one there."""
    home.mkdir(parents=True, exist_ok=True)
    instance = home / "dagster.yaml"
    if not instance.exists():
        instance.write_text(LAPTOP_INSTANCE)
    return instance


def demo_environment(state_dir: Path) -> dict[str, str]:
    """The environment of the materialisation: state folder, DAGSTER_HOME in it, MLflow on SQLite in
    it (unless MLFLOW_TRACKING_URI is already set), telemetry off, offline."""
    env = {**os.environ, **QUIET_ENV, "VIMOGEN_STATE_DIR": str(state_dir), "DAGSTER_HOME": str(state_dir / "dagster_home"),
           # the environment's own tools (dagster, mlflow's uvicorn) first, also when it is not activated
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{state_dir / 'mlflow.db'}")
    return env


def run_config(steps: int, bench_steps: int, judge_preset: str, train_overrides: list[str],
               judge_steps: int = 0, light: bool = False, light_prompts: int = 0, light_steps: int = 0,
               light_teacher_steps: int = 0) -> dict:
    """The run config of the graph, with the ViMoGen-light group when `light` (it needs a teacher worth
    distilling); `light_prompts` / `light_teacher_steps` / `light_steps` (0: params.yaml) size it: the
    prompts the teacher performs, its Euler steps for each, the student's training steps."""
    config = {
        # one process: on a small machine the per-step subprocesses cost more in imports than they win
        "execution": {"config": {"in_process": {}}},
        "ops": {
        "trained_model": {"config": {"steps": steps, "overrides": train_overrides, "sample_steps": bench_steps}},
        "local_judge": {"config": {"evaluator_preset": judge_preset, "evaluator_steps": judge_steps}},
        "mbench_scores": {"config": {"steps": bench_steps}},
        "classic_metrics": {"config": {"steps": bench_steps}},
        },
    }
    if light:
        config["ops"] |= {"expanded_prompts": {"config": {"count": light_prompts}},
                          "teacher_samples": {"config": {"steps": light_teacher_steps}},
                          "light_model": {"config": {"steps": light_steps}}}
    return config


# What the demo shows of the Dagster log (the whole log goes to a file): each finished or failed
# step with its key figure (the last line the asset logged), and the training progress every
# TRAIN_REPORT_EVERY steps as a bar.
_STEP_EVENT = re.compile(r" - (\w+) - (STEP_SUCCESS|STEP_FAILURE) - (.*)$")
_TRAIN_LINE = re.compile(r" - (trained_model|light_model) - step (\d+): (loss=\S+)")
_ASSET_INFO = re.compile(r" - INFO - __ASSET_JOB - [\w-]+ - (\w+) - (?!\[pipes\])(.*)$")
TRAIN_REPORT_EVERY = 250
# The light group sized to distil a student within the bounds of its teacher (Foot_Floating
# 0.55-1.12x, retrieval within one clip at 1, 2 and 4 steps; 32 prompts and 200 steps gave 1.37-2.08x)
# while the demo stays inside 15 min on 2 cores: 240 prompts, the teacher at 20 Euler steps each
# (55 s; its 50 gave the same student figures within 0.1x), 600 student steps.
DEMO_LIGHT_PROMPTS = 240
DEMO_LIGHT_TEACHER_STEPS = 20
DEMO_LIGHT_STEPS = 600
KEY_FIGURE_CHARS = 110
BAR_WIDTH = 20


class DemoSummary:
    """The summary lines of a Dagster log, fed one line at a time; `total_steps` sizes the training bar,
    `light_steps` the light model's distillation bar."""

    def __init__(self, total_steps: int, light_steps: int = 0):
        self.total = {"trained_model": total_steps, "light_model": light_steps}
        self.key_figure: dict[str, str] = {}

    def line(self, line: str) -> str | None:
        """The summary of a log line worth showing, else None."""
        event = _STEP_EVENT.search(line)
        if event:
            asset, kind, text = event.groups()
            took = re.search(r" in (\d[\w.]*?)\.?$", text)
            shown = f"  {'done' if kind == 'STEP_SUCCESS' else 'FAILED'}: {asset}" + (f" ({took.group(1)})" if took else f": {text}")
            figure = self.key_figure.pop(asset, None)
            return shown + (f": {figure}" if figure and kind == "STEP_SUCCESS" else "")
        train = _TRAIN_LINE.search(line)
        if train:
            asset, step, loss = train.group(1), int(train.group(2)), train.group(3)
            total = self.total[asset]
            if step % TRAIN_REPORT_EVERY or not total:
                return None
            filled = min(BAR_WIDTH, round(BAR_WIDTH * step / total))
            label = "training" if asset == "trained_model" else "distilling"
            return f"    {label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {step}/{total} {loss}"
        info = _ASSET_INFO.search(line)
        if info:
            asset, text = info.groups()
            text = text.strip()
            self.key_figure[asset] = text if len(text) <= KEY_FIGURE_CHARS else text[:KEY_FIGURE_CHARS - 3] + "..."
        return None


def materialize_all(state_dir: Path, config: dict, log_path: Path, echo=None) -> subprocess.CompletedProcess:
    """The graph through the `dagster` CLI, as subprocesses: every source partition of the raw takes in
    one run (`--partition-range`), then everything downstream of them (`curated_samples+`), the
    ViMoGen-light group only when `config` configures it (run_config's `light`). The full output goes
    to `log_path`; `echo(text)`, if given, gets the summary lines."""
    from vimogen_core.sources import SOURCES

    state_dir.mkdir(parents=True, exist_ok=True)
    env = demo_environment(state_dir)
    prepare_dagster_home(Path(env["DAGSTER_HOME"]))
    config_path = state_dir / "demo_run_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    dagster = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "orchestration.definitions"]
    light = "light_model" in config.get("ops", {})
    commands = [dagster + ["--select", "raw_takes", "--partition-range", f"{SOURCES[0]}...{SOURCES[-1]}"],
                dagster + ["--select", 'key:"curated_samples"+' + ("" if light else ' and not group:"light"'),
                           "-c", str(config_path)]]
    ops = config.get("ops", {})
    summary = DemoSummary(int(ops.get("trained_model", {}).get("config", {}).get("steps", 0)),
                          int(ops.get("light_model", {}).get("config", {}).get("steps", 0)))
    with open(log_path, "w") as log:
        for command in commands:
            process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, errors="replace")
            for line in process.stdout:
                log.write(line)
                shown = summary.line(line) if echo is not None else None
                if shown:
                    echo(shown)
            done = subprocess.CompletedProcess(command, process.wait())
            if done.returncode != 0:
                break
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", default=default_state_dir())
    # The demo shows the pipeline on a 2-core laptop inside 15 minutes: 1500 steps of 16 five-second
    # windows take about 7 min there; the tiny model steps its feet from about 1000 steps.
    parser.add_argument("--steps", type=int, default=1500, help="training steps of the tiny model")
    parser.add_argument("--bench-steps", type=int, default=10, help="Euler steps per generated motion")
    parser.add_argument("--judge-preset", default="quick", help="local MBench judge evaluator preset")
    # ViMoGen-light on the champion, sized by DEMO_LIGHT_* for an idle 2-core machine: under load 7-12
    # the light group took 47 min with 64 prompts and 250 steps (about a tenth of a core each).
    parser.add_argument("--light-prompts", type=int, default=DEMO_LIGHT_PROMPTS, help="prompts the teacher performs")
    parser.add_argument("--light-teacher-steps", type=int, default=DEMO_LIGHT_TEACHER_STEPS,
                        help="the teacher's Euler steps per prompt")
    parser.add_argument("--light-steps", type=int, default=DEMO_LIGHT_STEPS, help="the student's training steps")
    parser.add_argument("--no-light", dest="light", action="store_false", help="leave out the ViMoGen-light group")
    parser.add_argument("--set", dest="train_overrides", action="append",
                        default=["batch_size=16", "max_frames=100"],
                        help="training override KEY=VALUE (repeatable), as `vimogen train --set`")
    args = parser.parse_args(argv)
    state = Path(args.state_dir).resolve()
    started = time.perf_counter()
    log_path = state / "demo.log"
    print(f"ViMoGen demo: the whole asset graph on the embedded defaults (full log: {log_path})", flush=True)
    config = run_config(args.steps, args.bench_steps, args.judge_preset, args.train_overrides, light=args.light,
                        light_prompts=args.light_prompts, light_steps=args.light_steps,
                        light_teacher_steps=args.light_teacher_steps)
    done = materialize_all(state, config, log_path, echo=lambda text: print(text, flush=True))
    minutes = (time.perf_counter() - started) / 60
    if done.returncode != 0:
        print(f"\nViMoGen demo FAILED after {minutes:.1f} min (dagster exit code {done.returncode}); "
              f"full log: {log_path}", file=sys.stderr)
        return done.returncode
    env = demo_environment(state)
    light_lines = f"""
  light model      : models:/vimogen-light@champion (also @candidate), distilled from vimogen@champion; 1-4 steps
  light MBench     : {state / 'bench' / 'mbench_light' / 'report.md'} (beside the published ViMoGen-light row)
  light classic    : {state / 'bench' / 'classic_light.json'}"""
    print(f"""
ViMoGen demo finished in {minutes:.1f} min. State folder: {state}
  registered model : models:/vimogen@champion (also @candidate), MLflow store {env['MLFLOW_TRACKING_URI']}
  MBench report    : {state / 'bench' / 'mbench' / 'report.md'}
  classic metrics  : {state / 'bench' / 'classic.json'}{light_lines if args.light else ""}
  curated shards   : {state / 'data' / 'shards'}
  Dagster UI       : make ui        -> http://127.0.0.1:3000 (DAGSTER_HOME={env['DAGSTER_HOME']})
  MLflow UI        : make mlflow-ui -> http://127.0.0.1:5000
  serve the model  : PATH={Path(sys.executable).parent}:$PATH MLFLOW_TRACKING_URI={env['MLFLOW_TRACKING_URI']} mlflow models serve -m models:/vimogen@champion --env-manager local -h 127.0.0.1 -p 5001
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
