"""The asset graph: sources -> curated samples -> shards (+ blocking expectation check) ->
statistics, text cache -> trained model -> MBench / classic scores -> registered model -> champion,
and ViMoGen-light from the champion: expanded prompts -> teacher samples (+ blocking expectation check)
-> light model -> its MBench / classic scores -> `vimogen-light` registered -> its champion.
Each body reads resources/config, calls one library function and turns its result into metadata.
One file for the whole graph (longer than the library's modules) so that its edges, pools and
checks read in one place, as Dagster's example projects keep theirs; the work is in vimogen_core."""

import dataclasses
import json
import shlex
import sys
from pathlib import Path

from dagster import (
    AssetCheckResult, AssetExecutionContext, BackfillPolicy, Config, DagsterEventType, DataVersion, Failure,
    MaterializeResult, MetadataValue, PipesSubprocessClient, StaticPartitionsDefinition, asset, asset_check,
)

from orchestration import pictures, registry
from orchestration.resources import REPO_ROOT, MLflowTracking, ProjectPaths, RawDataWatch
from vimogen_core.sources import SOURCES

PARAMS = REPO_ROOT / "params.yaml"  # DVC and Dagster read the same parameters


def params(section: str) -> dict:
    from vimogen_core.config_overrides import read_params

    return read_params(PARAMS, section)


class DagsterLogSink:
    """The library's metric sink, reporting into the Dagster run log."""

    def __init__(self, log, every: int = 1):
        self.log = log
        self.every = every

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step % self.every == 0:
            self.log.info(f"step {step}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

    def log_text(self, message: str) -> None:
        self.log.info(message)


class SourcesRunConfig(Config):
    clips: list[str] = []  # built-in clips to use; empty: params.yaml (all 15 clips)


class CurationRunConfig(Config):
    preset: str = "default"
    overrides_json: str = "{}"  # CurationConfig fields to override, e.g. {"gates": {"max_frames": 300}}


class TrainingRunConfig(Config):
    preset: str = "tiny"  # a training preset; model hyperparameters come from it, never from here
    steps: int = 300
    processes: int = 1  # per node; > 1: torchrun with this many processes (gloo on CPU, nccl on GPUs)
    nodes: int = 1  # > 1: each node runs the same torchrun command; they meet at rdzv_endpoint
    rdzv_endpoint: str = ""  # host:port of the first node (c10d rendezvous); required when nodes > 1
    overrides: list[str] = []  # `vimogen train --set` assignments, e.g. ["batch_size=16"]
    sample_prompt: str = "a person walks forward"
    sample_steps: int = 20


class JudgeRunConfig(Config):
    evaluator_preset: str = "default"  # EvaluatorConfig preset: quick, default, curated
    evaluator_steps: int = 0  # > 0: override the preset's number of training steps


class BenchRunConfig(Config):
    steps: int = 20  # Euler steps per generated motion
    prompts_path: str = ""  # empty: the project's own prompt set; or MBench_final.json
    eval_info_path: str = ""


class DistillPromptsRunConfig(Config):
    count: int = 0  # prompts to expand; 0: params.yaml distill_prompts


class TeacherSamplesRunConfig(Config):
    steps: int = 0  # the teacher's Euler steps; 0: params.yaml distill_sample


class LightTrainingRunConfig(Config):
    steps: int = 0  # student training steps; 0: params.yaml distill_train
    batch_size: int = 0  # 0: params.yaml distill_train
    sample_prompt: str = "a person walks forward"


class LightBenchRunConfig(BenchRunConfig):
    steps: int = 0  # the student's sampling steps per motion; 0: the checkpoint's own (4)


SOURCE_PARTITIONS = StaticPartitionsDefinition(list(SOURCES))
# The steps that write or read the state folder's raw takes, curated samples and shards: one run's curation
# removes the manifest and the chunks it does not make, under another run's reader or writer. A Dagster
# concurrency pool, limited to 1 by the instance (`concurrency:` in deploy/dagster.yaml; without it, as on
# the laptop's default instance, the pool has no limit), runs them one at a time across runs; the other
# steps of concurrent runs go on meanwhile.
SHARED_DATA_POOL = "vimogen_shared_data"
LIGHT = "light"  # the asset group of ViMoGen-light


@asset(pool=SHARED_DATA_POOL, group_name="sources", partitions_def=SOURCE_PARTITIONS, backfill_policy=BackfillPolicy.single_run(),
       description="Raw takes, one partition per source: the 15 DeepMimic mocap clips (optical_mocap), simulated "
       "visual captures of them (in_the_wild_video), synthetic-video takes when a backend is configured, and new "
       "files from the raw inbox (and its S3 prefix) for each.")
def raw_takes(context: AssetExecutionContext, config: SourcesRunConfig, paths: ProjectPaths,
              raw_data_watch: RawDataWatch) -> MaterializeResult:
    from vimogen_core.config_overrides import apply_overrides
    from vimogen_core.sources.raw_takes import SourcesConfig, build_sources
    from vimogen_core.motion.render import render_frames_png
    from vimogen_core.sources.deepmimic import load_builtin_clip

    sources = tuple(context.partition_keys)
    for source in sources:
        fetched = raw_data_watch.fetch_source(source, paths.raw_inbox)
        if fetched:
            context.log.info(f"{source}: fetched {len(fetched)} new objects from S3: {fetched[:5]}")
    settings = params("sources") | ({"clips": list(config.clips)} if config.clips else {})
    result = build_sources(paths.sources, apply_overrides(SourcesConfig(), settings, f"{PARAMS}:sources"), sources,
                           inbox=paths.raw_inbox)
    for file, reason in result.inbox_ignored.items():
        context.log.warning(f"inbox file ignored: {file}: {reason}")
    context.log.info(f"{result.n_takes} raw takes of {', '.join(sources)}"
                     + (f"; synthetic video: {result.synthetic_video_status}" if result.synthetic_video_status else ""))
    metadata = {
        "n_takes": result.n_takes,
        "by_source": MetadataValue.md(pictures.table_markdown(result.by_source, "source", "takes")),
        "by_subset": MetadataValue.md(pictures.table_markdown(result.by_subset, "subset", "takes")),
        "inbox_ignored": MetadataValue.md(pictures.table_markdown(result.inbox_ignored, "file", "reason")),
    }
    if result.synthetic_video_status:
        metadata["synthetic_video"] = result.synthetic_video_status
    if "optical_mocap" in sources:
        preview = render_frames_png(load_builtin_clip("walk").motion.joints.numpy(), paths.path("previews", "walk.png"),
                                    n=5, title="walk (built-in clip)")
        metadata["preview"] = MetadataValue.md(pictures.png_markdown(preview, "walk clip, 5 frames"))
    return MaterializeResult(metadata=metadata)


@asset(pool=SHARED_DATA_POOL, group_name="curation", deps=[raw_takes], description="Gated, windowed, mirrored samples and the "
       "quarantine report with each rejection's reason.")
def curated_samples(context: AssetExecutionContext, config: CurationRunConfig, paths: ProjectPaths) -> MaterializeResult:
    from vimogen_core.config_overrides import apply_overrides
    from vimogen_core.curation.config import curation_settings
    from vimogen_core.curation.pipeline import curate_samples
    from vimogen_core.curation.shard_reader import read_manifest
    from vimogen_core.curation.source_index import SourceIndex

    settings = {**params("curate"), "preset": config.preset}
    curation, judge, workers = curation_settings(settings, f"{PARAMS}:curate")
    curation = apply_overrides(curation, json.loads(config.overrides_json), "run config overrides_json")
    result = curate_samples(SourceIndex(str(paths.sources)), paths.curated, curation, judge, workers=workers)
    context.log.info(f"accepted {result.n_accepted}, quarantined {result.n_rejected}")
    quarantine = read_manifest(Path(result.quarantine_path)).to_pylist()
    examples = [{"id": row["id"], "source": row["source"], "reason": "; ".join(row["reasons"])} for row in quarantine[:15]]
    return MaterializeResult(metadata={
        "accepted": result.n_accepted,
        "quarantined": result.n_rejected,
        "composition": MetadataValue.md(pictures.composition_markdown(result.by_source, result.by_subset, result.by_split)),
        "quarantine_reasons": MetadataValue.md(pictures.table_markdown(result.rejected_by_gate, "gate", "rejections")),
        "quarantine_examples": MetadataValue.md(pictures.rows_markdown(examples, ("id", "source", "reason"))),
        "quarantine": MetadataValue.path(str(result.quarantine_path)),
    })


@asset(pool=SHARED_DATA_POOL, group_name="curation", deps=[curated_samples], description="Packed, checksummed shards and their Parquet "
       "manifest; the data version is the DVC hash of the shard folder.")
def curated_shards(context: AssetExecutionContext, paths: ProjectPaths) -> MaterializeResult:
    from vimogen_core.curation.sharding import write_shards
    from vimogen_core.curation.shards import MANIFEST_NAME

    result = write_shards(paths.curated / MANIFEST_NAME, paths.shards,
                          samples_per_shard=int(params("shard").get("samples_per_shard", 2000)))
    dvc_hash = registry.dvc_directory_hash(paths.shards)
    context.log.info(f"{result.n_samples} samples in {result.n_shards} shards; DVC hash {dvc_hash}")
    return MaterializeResult(data_version=DataVersion(dvc_hash), metadata={
        "samples": result.n_samples, "shards": result.n_shards, "frames": result.n_frames, "bytes": result.n_bytes,
        "by_split": MetadataValue.md(pictures.table_markdown(result.by_split, "split", "samples")),
        "dvc_md5": dvc_hash,
        "manifest_sha256": result.manifest_sha256,
        "manifest": MetadataValue.path(str(paths.manifest)),
    })


@asset_check(asset=curated_shards, blocking=True, pool=SHARED_DATA_POOL, description="Great Expectations suite over the manifest; "
             "a failure stops everything downstream (no training on bad shards).")
def manifest_expectations(paths: ProjectPaths) -> AssetCheckResult:
    from vimogen_core.config_overrides import apply_overrides
    from vimogen_core.curation.expectations import VALIDATION_PRESETS, validate_manifest

    settings = dict(params("validate"))
    config = apply_overrides(VALIDATION_PRESETS[settings.pop("preset", "default")], settings, f"{PARAMS}:validate")
    result = validate_manifest(paths.manifest, config, report_path=paths.path("data", "validation", "report.json"))
    rows = [{"expectation": c["name"], "passed": "yes" if c["success"] else "**NO**"} for c in result.checks]
    return AssetCheckResult(passed=result.success, metadata={
        "failed_expectations": MetadataValue.json(list(result.failed)),
        "expectations": MetadataValue.md(pictures.rows_markdown(rows, ("expectation", "passed"))),
        "rows": result.n_rows,
    })


@asset(pool=SHARED_DATA_POOL, group_name="curation", deps=[curated_shards], description="Normalisation mean/std over the training split.")
def normalisation_stats(paths: ProjectPaths) -> MaterializeResult:
    from vimogen_core.curation.statistics import compute_statistics

    result = compute_statistics(paths.manifest, paths.stats, split=params("stats").get("split", "train"))
    return MaterializeResult(metadata={**{k: v for k, v in result.to_metadata().items() if k != "normalizer_path"},
                                       "normalizer": MetadataValue.path(result.normalizer_path)})


@asset(pool=SHARED_DATA_POOL, group_name="training", deps=[curated_shards], description="Text-encoder embeddings of every caption and its short "
       "forms, cached by (encoder, text) so a caption is encoded once; training reads the same cache.")
def text_embedding_cache(paths: ProjectPaths) -> MaterializeResult:
    from vimogen_core.curation.captions import caption_short_forms
    from vimogen_core.curation.shard_reader import read_manifest
    from vimogen_core.text.encoders import EmbeddingCache, get_text_encoder

    table = read_manifest(paths.manifest, columns=["motion_text", "video_text"]).to_pydict()
    captions = {c for texts in table["motion_text"] for c in texts if c} | {c for c in table["video_text"] if c}
    # Training may draw a caption's short forms (TrainConfig.short_caption_prob): cached alike.
    captions = sorted(captions | {form for c in captions for form in caption_short_forms(c)})
    cache = EmbeddingCache(get_text_encoder("minilm"), paths.text_cache)
    for start in range(0, len(captions), 64):
        cache.encode(captions[start:start + 64])
    return MaterializeResult(metadata={"captions": len(captions), "encoder": cache.name,
                                       "cache_dir": MetadataValue.path(str(paths.text_cache))})


def _train_through_pipes(context: AssetExecutionContext, command: list[str], run_dir: Path, paths: ProjectPaths,
                         mlflow_tracking: MLflowTracking, pipes_subprocess_client: PipesSubprocessClient):
    """Runs a training `command` through Dagster Pipes inside a new MLflow run (the subprocess streams
    its metrics into it; a failed subprocess marks it FAILED): (mlflow, run_id, the subprocess's result)."""
    mlflow = mlflow_tracking.setup(paths)
    run_id = registry.open_training_run(mlflow, mlflow_tracking.experiment, run_dir)
    env = {"MLFLOW_TRACKING_URI": mlflow_tracking.uri(paths), "MLFLOW_RUN_ID": run_id}
    try:
        reported = pipes_subprocess_client.run(command=command, context=context, cwd=str(REPO_ROOT),
                                               env=env).get_materialize_result()
    except Exception:
        mlflow.tracking.MlflowClient().set_terminated(run_id, status="FAILED")
        raise
    return mlflow, run_id, reported


def training_command(config: TrainingRunConfig, run_dir: Path, paths: ProjectPaths, rdzv_id: str) -> list[str]:
    """The command the trained_model asset hands its Pipes client: `orchestration.pipes_train` as
    config.processes processes on each of config.nodes nodes (pipes_train.torchrun_command; every node
    of a run runs this same command, rendezvous `rdzv_id`). A run config it cannot launch is a Failure
    naming the fields, raised before anything starts."""
    from orchestration.pipes_train import torchrun_command
    from vimogen_core.curation.statistics import NORMALIZER_NAME

    # Training normalises with the statistics the normalisation_stats asset wrote, never refits them.
    target = ["-m", "orchestration.pipes_train", "--preset", config.preset, "--out", str(run_dir), "--data",
              str(paths.manifest), "--steps", str(config.steps), "--quiet",
              "--set", f"normalizer={paths.stats / NORMALIZER_NAME}"]
    for assignment in config.overrides:
        target += ["--set", assignment]
    try:
        return torchrun_command(target, config.processes, config.nodes, config.rdzv_endpoint, rdzv_id=rdzv_id)
    except ValueError as err:
        raise Failure(f"trained_model run config (processes={config.processes}, nodes={config.nodes}, "
                      f"rdzv_endpoint={config.rdzv_endpoint!r}): {err}") from err


@asset(pool=SHARED_DATA_POOL, group_name="training", deps=[normalisation_stats, text_embedding_cache],
       description="A ViMoGen DiT trained in a subprocess through Dagster Pipes, tracked in MLflow.")
def trained_model(context: AssetExecutionContext, config: TrainingRunConfig, paths: ProjectPaths,
                  mlflow_tracking: MLflowTracking, pipes_subprocess_client: PipesSubprocessClient) -> MaterializeResult:
    run_dir = paths.path("runs", context.run_id[:8])
    command = training_command(config, run_dir, paths, rdzv_id=f"vimogen-{context.run_id[:8]}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "text_cache").exists():  # the run reads the materialised embedding cache
        (run_dir / "text_cache").symlink_to(paths.text_cache, target_is_directory=True)
    context.log.info(f"launching {config.nodes} node(s) x {config.processes} process(es): {shlex.join(command)}")
    mlflow, run_id, reported = _train_through_pipes(context, command, run_dir, paths, mlflow_tracking,
                                                    pipes_subprocess_client)
    checkpoint = Path(reported.metadata["checkpoint"].value)
    logged = registry.log_training_run(mlflow, run_id, run_dir, checkpoint, paths, config.sample_prompt,
                                       config.sample_steps)
    return MaterializeResult(metadata={  # checkpoint, mlflow_run_id and run_dir: what downstream assets read
        **reported.metadata,
        "mlflow_run_id": run_id,
        "run_dir": MetadataValue.path(str(run_dir)),
        "loss_curve": MetadataValue.md(pictures.png_markdown(logged["loss_png"], "training loss")),
        "sample": MetadataValue.md(pictures.png_markdown(logged["sample_png"], f"generated: {config.sample_prompt}")),
    })


def materialisation_of_this_run(context: AssetExecutionContext, asset_def) -> dict:
    """The metadata values of the materialisation of `asset_def` this Dagster run made, so two runs at once
    each use their own; a run that did not make one (a downstream group materialised on its own) takes the
    latest materialisation."""
    materialisations = context.instance.all_logs(context.run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
    mine = [e for e in materialisations if e.asset_materialization.asset_key == asset_def.key]
    entry = mine[-1] if mine else context.instance.get_latest_materialization_event(asset_def.key)
    if entry is None:
        raise Failure(f"no {asset_def.key.to_user_string()} yet: materialise it first")
    return {key: value.value for key, value in entry.asset_materialization.metadata.items()}


def trained_model_of_this_run(context: AssetExecutionContext, asset_def=None) -> dict:
    """{"run_id" (MLflow), "checkpoint", "run_dir"} of the trained_model (or `asset_def`, e.g. light_model)
    materialisation this Dagster run made (see materialisation_of_this_run)."""
    metadata = materialisation_of_this_run(context, trained_model if asset_def is None else asset_def)
    return {"run_id": metadata["mlflow_run_id"], "checkpoint": metadata["checkpoint"], "run_dir": metadata["run_dir"]}


@asset(pool=SHARED_DATA_POOL, group_name="benchmark", deps=[curated_shards], description="The local MBench judge: a contrastive "
       "text-motion model trained on the curated shards (on the built-in clips when the shard set has too few "
       "held-out samples), its yes-threshold calibrated on held-out data.")
def local_judge(context: AssetExecutionContext, config: JudgeRunConfig, paths: ProjectPaths) -> MaterializeResult:
    from vimogen_core.bench.evaluator import EvaluatorConfig
    from vimogen_core.bench.judges import train_local_judge
    from vimogen_core.errors import MotionDataError

    evaluator_config = EvaluatorConfig.preset(config.evaluator_preset)
    if config.evaluator_steps > 0:
        evaluator_config = dataclasses.replace(evaluator_config, steps=config.evaluator_steps)
    sink = DagsterLogSink(context.log, every=100)
    try:
        judge = train_local_judge(config=evaluator_config, manifest_path=paths.manifest, sink=sink)
    except MotionDataError as err:  # a small curated set: too few held-out samples to calibrate on
        context.log.warning(f"{err}; training the judge on the built-in clips instead")
        judge = train_local_judge(config=evaluator_config, sink=sink)
    judge.save(paths.judge_dir)
    calibration = judge.calibration
    return MaterializeResult(metadata={"judge": judge.name, "heldout": calibration.heldout,
                                       "ten_way_accuracy": float(calibration.ten_way_accuracy),
                                       "threshold": float(calibration.threshold),
                                       "judge_dir": MetadataValue.path(str(paths.judge_dir))})


@asset(group_name="benchmark", deps=[trained_model, local_judge], description="MBench scores of the trained model "
       "beside the published table.")
def mbench_scores(context: AssetExecutionContext, config: BenchRunConfig, paths: ProjectPaths,
                  mlflow_tracking: MLflowTracking) -> MaterializeResult:
    run = trained_model_of_this_run(context)
    return score_mbench(context, run, f"vimogen run {run['run_id'][:8]}", config.steps, config, paths, paths.mbench_dir,
                        mlflow_tracking)


def score_mbench(context: AssetExecutionContext, run: dict, name: str, steps: int | None, config: BenchRunConfig | None,
                 paths: ProjectPaths, out_dir: Path, mlflow_tracking: MLflowTracking) -> MaterializeResult:
    """MBench of a trained `run`'s checkpoint at `steps` (None: the checkpoint's own), logged to its MLflow run."""
    from vimogen_core.bench.judges import LocalJudge
    from vimogen_core.bench.runner import run_mbench

    result = run_mbench(run["checkpoint"], prompts_path=(config.prompts_path if config else "") or None,
                        eval_info_path=(config.eval_info_path if config else "") or None, out_dir=out_dir, steps=steps,
                        judge_factory=lambda: LocalJudge.load(paths.judge_dir), model_name=name)
    scores = {dim: agg["mean"] for dim, agg in result.aggregates.items()}  # None: could not be scored
    setup = registry.scoring_setup(result.metadata)
    registry.log_scores(mlflow_tracking.setup(paths), run["run_id"], scores, "mbench", out_dir, setup)
    context.log.info(f"MBench: {scores}")
    report = (out_dir / "report.md").read_text()
    return MaterializeResult(metadata={
        "report": MetadataValue.md(report),
        **{f"mbench/{k}": float(v) for k, v in scores.items() if v is not None},
        **{f"scored_with/{k}": v for k, v in setup.items()},
        "checkpoint": MetadataValue.path(run["checkpoint"]),
        "mlflow_run_id": run["run_id"],
        "report_dir": MetadataValue.path(str(out_dir)),
    })


@asset(pool=SHARED_DATA_POOL, group_name="benchmark", deps=[trained_model, local_judge], description="Classic text-to-motion metrics "
       "(R-precision, FID, MM-Dist, Diversity, MultiModality) with the local evaluator on the held-out splits.")
def classic_metrics(context: AssetExecutionContext, config: BenchRunConfig, paths: ProjectPaths,
                    mlflow_tracking: MLflowTracking) -> MaterializeResult:
    return score_classic(context, trained_model_of_this_run(context), config.steps, paths, paths.path("bench", "classic.json"),
                         mlflow_tracking)


def score_classic(context: AssetExecutionContext, run: dict, steps: int | None, paths: ProjectPaths, out: Path,
                  mlflow_tracking: MLflowTracking) -> MaterializeResult:
    """The classic metrics of a trained `run`'s checkpoint at `steps` (None: its own) on the held-out splits."""
    from vimogen_core.bench.classic import classic_metrics as compute
    from vimogen_core.bench.judges import LocalJudge
    from vimogen_core.curation.shard_reader import iter_shard_samples
    from vimogen_core.motion.representation import features_to_joints
    from vimogen_core.train.generate import load_generator

    texts, real = [], []
    for row, feats in iter_shard_samples(paths.manifest):
        if row["split"] != "train" and row["motion_text"]:
            texts.append(row["motion_text"][0])
            real.append(features_to_joints(feats))  # (T, 22, 3)
    generated = load_generator(run["checkpoint"]).generate(texts, [len(r) for r in real], steps=steps)
    generated = [features_to_joints(g) for g in generated]
    judge = LocalJudge.load(paths.judge_dir)
    result = compute(judge.evaluator, texts, real, generated, batch_size=min(32, len(texts)))
    flat = {f"classic/{k}": v["mean"] for k, v in result["generated"].items()}
    registry.log_scores(mlflow_tracking.setup(paths), run["run_id"], flat, "classic", None)
    out.write_text(json.dumps(result, indent=2))
    rows = [{"metric": k, "generated": f"{v['mean']:.4g} ± {v.get('ci95', 0):.2g}",
             "real": f"{result['real'][k]['mean']:.4g}" if k in result.get("real", {}) else "-"}
            for k, v in result["generated"].items()]
    context.log.info(f"classic metrics on {len(texts)} held-out samples: {flat}")
    return MaterializeResult(metadata={**{k: float(v) for k, v in flat.items()}, "evaluator": result["evaluator"],
                                       "samples": len(texts), "checkpoint": MetadataValue.path(run["checkpoint"]),
                                       "mlflow_run_id": run["run_id"], "report": MetadataValue.path(str(out)),
                                       "table": MetadataValue.md(pictures.rows_markdown(rows, ("metric", "generated", "real")))})


@asset(group_name="registry", deps=[trained_model, mbench_scores, classic_metrics], description="The trained model "
       "logged as an MLflow pyfunc and registered as `vimogen`, alias `candidate`, with its MBench scores and what "
       "they were scored under.")
def registered_model(context: AssetExecutionContext, paths: ProjectPaths, mlflow_tracking: MLflowTracking) -> MaterializeResult:
    run = trained_model_of_this_run(context)
    version = registry.register_candidate(mlflow_tracking.setup(paths), mlflow_tracking.model_name, run)
    return MaterializeResult(metadata={"model": mlflow_tracking.model_name, "version": int(version.version),
                                       "alias": "candidate", "uri": f"models:/{mlflow_tracking.model_name}/{version.version}",
                                       "checkpoint": MetadataValue.path(run["checkpoint"]), "mlflow_run_id": run["run_id"]})


@asset(group_name="registry", deps=[registered_model], description="Moves `champion` to the candidate only when it "
       "has every promotion score, was scored under the champion's prompt set, judge, pose prior and height mode, and "
       "is not worse on the agreed dimensions; the decision says why.")
def champion_alias(context: AssetExecutionContext, paths: ProjectPaths, mlflow_tracking: MLflowTracking) -> MaterializeResult:
    decision = registry.promote_if_not_worse(mlflow_tracking.setup(paths), mlflow_tracking.model_name)
    context.log.info(decision["summary"])
    return MaterializeResult(metadata={"promoted": decision["promoted"], "champion_version": decision["champion"],
                                       "summary": decision["summary"], "decision": MetadataValue.md(decision["table"])})


# --- ViMoGen-light: distilled from the champion ------------------------------------------------


@asset(pool=SHARED_DATA_POOL, group_name=LIGHT, deps=[curated_shards], description="New prompts for the teacher to perform, composed "
       "from the curated captions' actions, body parts, directions and manners (never a training caption).")
def expanded_prompts(context: AssetExecutionContext, config: DistillPromptsRunConfig, paths: ProjectPaths) -> MaterializeResult:
    from vimogen_core.distill.prompts import expand_prompts
    from vimogen_core.distill.settings import distill_settings
    from vimogen_core.files import atomic_write_bytes

    settings = distill_settings("prompts", PARAMS, {"count": config.count or None}, "run config")
    prompts, n_captions = expand_prompts(settings, paths.manifest)
    out = paths.path("distill", "prompts.txt")
    atomic_write_bytes(out, ("\n".join(prompts) + "\n").encode("utf-8"))
    context.log.info(f"{len(prompts)} prompts from {n_captions} captions")
    return MaterializeResult(metadata={"prompts": len(prompts), "from_captions": n_captions,
                                       "expander": settings.expander, "examples": MetadataValue.json(prompts[:10]),
                                       "path": MetadataValue.path(str(out))})


@asset(group_name=LIGHT, deps=[expanded_prompts, champion_alias], description="The champion (`vimogen@champion`) "
       "performs the expanded prompts (text mode, its guidance and 50 steps): gated like curated data, rejections "
       "quarantined with their reasons, written as a shard set; the data version is its DVC hash.")
def teacher_samples(context: AssetExecutionContext, config: TeacherSamplesRunConfig, paths: ProjectPaths,
                    mlflow_tracking: MLflowTracking) -> MaterializeResult:
    import shutil

    from vimogen_core.distill.settings import distill_settings
    from vimogen_core.distill.teacher import sample_teacher
    from vimogen_core.train.generate import load_generator, read_prompt_file

    teacher_dir, out = paths.path("distill", "teacher"), paths.path("distill", "teacher_samples")
    for stale in (teacher_dir, out):  # a new teacher and a new sample set, never mixed with the last ones
        shutil.rmtree(stale, ignore_errors=True)
    try:
        version, checkpoint = registry.champion_checkpoint(mlflow_tracking.setup(paths), mlflow_tracking.model_name,
                                                          teacher_dir)
    except LookupError as err:  # the light model learns from the champion only
        raise Failure(f"{err}: no teacher to distil (champion_alias says why)") from None
    settings = distill_settings("sample", PARAMS, {"steps": config.steps or None}, "run config")
    prompts = read_prompt_file(paths.path("distill", "prompts.txt"))
    context.log.info(f"teacher: {mlflow_tracking.model_name} version {version} ({settings.steps} steps) on "
                     f"{len(prompts)} prompts")
    result = sample_teacher(load_generator(checkpoint), prompts, out, settings,
                            sink=DagsterLogSink(context.log, every=settings.batch_size * 4))
    dvc_hash = registry.dvc_directory_hash(out)
    context.log.info(f"accepted {result.n_accepted}, quarantined {result.n_rejected} in {result.seconds:.0f}s")
    return MaterializeResult(data_version=DataVersion(dvc_hash), metadata={
        "accepted": result.n_accepted, "quarantined": result.n_rejected,
        "quarantine_reasons": MetadataValue.md(pictures.table_markdown(result.rejected_by_gate, "gate", "rejections")),
        "teacher_checkpoint": MetadataValue.path(str(checkpoint)), "teacher_version": version,
        "steps": settings.steps, "seconds": round(result.seconds, 1), "dvc_md5": dvc_hash,
        "manifest": MetadataValue.path(result.manifest_path), "quarantine": MetadataValue.path(result.quarantine_path),
    })


@asset_check(asset=teacher_samples, blocking=True, description="The curation expectation suite with frame checks "
             "(feature width, non-finite values) over the teacher samples; a failure stops the student's training.")
def teacher_sample_expectations(paths: ProjectPaths) -> AssetCheckResult:
    from vimogen_core.curation.shards import MANIFEST_NAME
    from vimogen_core.distill.teacher import validate_teacher_samples

    out = paths.path("distill", "teacher_samples")
    result = validate_teacher_samples(out / MANIFEST_NAME, out / "validation.json")
    rows = [{"expectation": c["name"], "passed": "yes" if c["success"] else "**NO**"} for c in result.checks]
    return AssetCheckResult(passed=result.success, metadata={
        "failed_expectations": MetadataValue.json(list(result.failed)),
        "expectations": MetadataValue.md(pictures.rows_markdown(rows, ("expectation", "passed"))),
        "rows": result.n_rows,
    })


@asset(group_name=LIGHT, deps=[teacher_samples], description="ViMoGen-light: the text-only student distilled from "
       "the teacher on its samples (and the curated data), trained in a subprocess through Dagster Pipes, tracked "
       "in MLflow; it samples in 1-4 steps with the guidance built in.")
def light_model(context: AssetExecutionContext, config: LightTrainingRunConfig, paths: ProjectPaths,
                mlflow_tracking: MLflowTracking, pipes_subprocess_client: PipesSubprocessClient) -> MaterializeResult:
    samples = materialisation_of_this_run(context, teacher_samples)
    run_dir = paths.path("runs", f"light-{context.run_id[:8]}")
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "orchestration.pipes_distill", "--teacher", samples["teacher_checkpoint"],
               "--samples", samples["manifest"], "--out", str(run_dir), "--params", str(PARAMS), "--quiet"]
    for option, value in (("--steps", config.steps), ("--batch-size", config.batch_size)):
        if value:
            command += [option, str(value)]
    mlflow, run_id, reported = _train_through_pipes(context, command, run_dir, paths, mlflow_tracking,
                                                    pipes_subprocess_client)
    checkpoint = Path(reported.metadata["checkpoint"].value)
    logged = registry.log_training_run(mlflow, run_id, run_dir, checkpoint, paths, config.sample_prompt, sample_steps=1,
                                       manifest_path=Path(samples["manifest"]), dataset_name="teacher-samples",
                                       extra_artifacts=(run_dir / "distill.json",))
    mlflow.tracking.MlflowClient().set_tag(run_id, "distilled_from",
                                           f"{mlflow_tracking.model_name} version {samples['teacher_version']}")
    context.log.info(f"student {reported.metadata['method'].value}, {reported.metadata['steps'].value} steps on "
                     f"{reported.metadata['teacher_samples'].value} teacher samples: loss "
                     f"{reported.metadata['final_loss'].value:.4g}")
    return MaterializeResult(metadata={
        **reported.metadata,
        "mlflow_run_id": run_id,
        "run_dir": MetadataValue.path(str(run_dir)),
        "loss_curve": MetadataValue.md(pictures.png_markdown(logged["loss_png"], "distillation loss")),
        "sample": MetadataValue.md(pictures.png_markdown(logged["sample_png"], f"1 step: {config.sample_prompt}")),
    })


@asset(group_name=LIGHT, deps=[light_model, local_judge], description="MBench scores of the light model (in its own "
       "few steps) beside the published table, ViMoGen-light's row included.")
def light_mbench_scores(context: AssetExecutionContext, config: LightBenchRunConfig, paths: ProjectPaths,
                        mlflow_tracking: MLflowTracking) -> MaterializeResult:
    run = trained_model_of_this_run(context, light_model)
    return score_mbench(context, run, f"vimogen-light run {run['run_id'][:8]}", config.steps or None, config, paths,
                        paths.path("bench", "mbench_light"), mlflow_tracking)


@asset(pool=SHARED_DATA_POOL, group_name=LIGHT, deps=[light_model, local_judge], description="Classic text-to-motion metrics of the light "
       "model with the local evaluator on the held-out splits.")
def light_classic_metrics(context: AssetExecutionContext, config: LightBenchRunConfig, paths: ProjectPaths,
                          mlflow_tracking: MLflowTracking) -> MaterializeResult:
    return score_classic(context, trained_model_of_this_run(context, light_model), config.steps or None, paths,
                         paths.path("bench", "classic_light.json"), mlflow_tracking)


def light_model_name(mlflow_tracking: MLflowTracking) -> str:
    return f"{mlflow_tracking.model_name}-light"


@asset(group_name=LIGHT, deps=[light_model, light_mbench_scores, light_classic_metrics], description="The light "
       "model logged as an MLflow pyfunc (serving in its own few steps) and registered as `vimogen-light`, alias "
       "`candidate`, with its MBench scores and what they were scored under.")
def registered_light_model(context: AssetExecutionContext, paths: ProjectPaths,
                           mlflow_tracking: MLflowTracking) -> MaterializeResult:
    run = trained_model_of_this_run(context, light_model)
    name = light_model_name(mlflow_tracking)
    version = registry.register_candidate(mlflow_tracking.setup(paths), name, run, serving_steps=None)
    return MaterializeResult(metadata={"model": name, "version": int(version.version), "alias": "candidate",
                                       "uri": f"models:/{name}/{version.version}",
                                       "checkpoint": MetadataValue.path(run["checkpoint"]), "mlflow_run_id": run["run_id"]})


@asset(group_name=LIGHT, deps=[registered_light_model], description="Moves `vimogen-light@champion` to the candidate "
       "by the same rule as `vimogen`'s champion.")
def light_champion_alias(context: AssetExecutionContext, paths: ProjectPaths,
                         mlflow_tracking: MLflowTracking) -> MaterializeResult:
    decision = registry.promote_if_not_worse(mlflow_tracking.setup(paths), light_model_name(mlflow_tracking))
    context.log.info(decision["summary"])
    return MaterializeResult(metadata={"promoted": decision["promoted"], "champion_version": decision["champion"],
                                       "summary": decision["summary"], "decision": MetadataValue.md(decision["table"])})
