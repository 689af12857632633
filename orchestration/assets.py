"""The asset graph: sources -> curated samples -> shards (+ blocking expectation check) ->
statistics, text cache -> trained model -> MBench / classic scores -> registered model -> champion.
Each body reads resources/config, calls one library function and turns its result into metadata."""

import dataclasses
import json
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
    processes: int = 1  # > 1: torchrun with this many processes (gloo on CPU)
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


SOURCE_PARTITIONS = StaticPartitionsDefinition(list(SOURCES))


@asset(group_name="sources", partitions_def=SOURCE_PARTITIONS, backfill_policy=BackfillPolicy.single_run(),
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


@asset(group_name="curation", deps=[raw_takes], description="Gated, windowed, mirrored samples and the "
       "quarantine report with each rejection's reason.")
def curated_samples(context: AssetExecutionContext, config: CurationRunConfig, paths: ProjectPaths) -> MaterializeResult:
    from vimogen_core.config_overrides import apply_overrides
    from vimogen_core.curation.config import curation_settings
    from vimogen_core.curation.pipeline import curate_samples
    from vimogen_core.curation.shards import read_manifest
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


@asset(group_name="curation", deps=[curated_samples], description="Packed, checksummed shards and their Parquet "
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


@asset_check(asset=curated_shards, blocking=True, description="Great Expectations suite over the manifest; "
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


@asset(group_name="curation", deps=[curated_shards], description="Normalisation mean/std over the training split.")
def normalisation_stats(paths: ProjectPaths) -> MaterializeResult:
    from vimogen_core.curation.statistics import compute_statistics

    result = compute_statistics(paths.manifest, paths.stats, split=params("stats").get("split", "train"))
    return MaterializeResult(metadata={**{k: v for k, v in result.to_metadata().items() if k != "normalizer_path"},
                                       "normalizer": MetadataValue.path(result.normalizer_path)})


@asset(group_name="training", deps=[curated_shards], description="Text-encoder embeddings of every caption, cached "
       "by (encoder, text) so a caption is encoded once; training reads the same cache.")
def text_embedding_cache(paths: ProjectPaths) -> MaterializeResult:
    from vimogen_core.curation.shards import read_manifest
    from vimogen_core.curation.source_index import SourceIndex
    from vimogen_core.text.encoders import EmbeddingCache, get_text_encoder

    table = read_manifest(paths.manifest, columns=["motion_text", "video_text"]).to_pydict()
    captions = sorted({c for texts in table["motion_text"] for c in texts if c} | {c for c in table["video_text"] if c})
    cache = EmbeddingCache(get_text_encoder("minilm"), paths.text_cache)
    for start in range(0, len(captions), 64):
        cache.encode(captions[start:start + 64])
    return MaterializeResult(metadata={"captions": len(captions), "encoder": cache.name,
                                       "cache_dir": MetadataValue.path(str(paths.text_cache))})


@asset(group_name="training", deps=[normalisation_stats, text_embedding_cache],
       description="A ViMoGen DiT trained in a subprocess through Dagster Pipes, tracked in MLflow.")
def trained_model(context: AssetExecutionContext, config: TrainingRunConfig, paths: ProjectPaths,
                  mlflow_tracking: MLflowTracking, pipes_subprocess_client: PipesSubprocessClient) -> MaterializeResult:
    run_dir = paths.path("runs", context.run_id[:8])
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "text_cache").exists():  # the run reads the materialised embedding cache
        (run_dir / "text_cache").symlink_to(paths.text_cache, target_is_directory=True)
    launcher = [sys.executable, "-m", "orchestration.pipes_train"]
    if config.processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={config.processes}",
                    "-m", "orchestration.pipes_train"]
    from vimogen_core.curation.statistics import NORMALIZER_NAME

    # Training normalises with the statistics the normalisation_stats asset wrote, never refits them.
    command = [*launcher, "--preset", config.preset, "--out", str(run_dir), "--data", str(paths.manifest),
               "--steps", str(config.steps), "--quiet", "--set", f"normalizer={paths.stats / NORMALIZER_NAME}"]
    for assignment in config.overrides:
        command += ["--set", assignment]
    mlflow = mlflow_tracking.setup(paths)
    run_id = registry.open_training_run(mlflow, mlflow_tracking.experiment, run_dir)  # the subprocess streams its metrics into this run
    env = {"MLFLOW_TRACKING_URI": mlflow_tracking.uri(paths), "MLFLOW_RUN_ID": run_id}
    try:
        reported = pipes_subprocess_client.run(command=command, context=context, cwd=str(REPO_ROOT),
                                               env=env).get_materialize_result()
    except Exception:
        mlflow.tracking.MlflowClient().set_terminated(run_id, status="FAILED")
        raise
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


def trained_model_of_this_run(context: AssetExecutionContext) -> dict:
    """{"run_id" (MLflow), "checkpoint", "run_dir"} of the trained_model materialisation this Dagster run made,
    so two runs at once each benchmark and register their own model; a run that did not train (the benchmark
    group materialised on its own) takes the latest materialisation."""
    materialisations = context.instance.all_logs(context.run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
    mine = [e for e in materialisations if e.asset_materialization.asset_key == trained_model.key]
    entry = mine[-1] if mine else context.instance.get_latest_materialization_event(trained_model.key)
    if entry is None:
        raise Failure("no trained model yet: materialise trained_model first")
    metadata = entry.asset_materialization.metadata
    return {"run_id": metadata["mlflow_run_id"].value, "checkpoint": metadata["checkpoint"].value,
            "run_dir": metadata["run_dir"].value}


@asset(group_name="benchmark", deps=[curated_shards], description="The local MBench judge: a contrastive "
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
    from vimogen_core.bench.judges import LocalJudge
    from vimogen_core.bench.runner import run_mbench

    run = trained_model_of_this_run(context)
    name = f"vimogen run {run['run_id'][:8]}"
    result = run_mbench(run["checkpoint"], prompts_path=config.prompts_path or None,
                        eval_info_path=config.eval_info_path or None, out_dir=paths.mbench_dir, steps=config.steps,
                        judge_factory=lambda: LocalJudge.load(paths.judge_dir), model_name=name)
    scores = {dim: agg["mean"] for dim, agg in result.aggregates.items()}  # None: could not be scored
    setup = registry.scoring_setup(result.metadata)
    registry.log_scores(mlflow_tracking.setup(paths), run["run_id"], scores, "mbench", paths.mbench_dir, setup)
    context.log.info(f"MBench: {scores}")
    report = (paths.mbench_dir / "report.md").read_text()
    return MaterializeResult(metadata={
        "report": MetadataValue.md(report),
        **{f"mbench/{k}": float(v) for k, v in scores.items() if v is not None},
        **{f"scored_with/{k}": v for k, v in setup.items()},
        "checkpoint": MetadataValue.path(run["checkpoint"]),
        "mlflow_run_id": run["run_id"],
        "report_dir": MetadataValue.path(str(paths.mbench_dir)),
    })


@asset(group_name="benchmark", deps=[trained_model, local_judge], description="Classic text-to-motion metrics "
       "(R-precision, FID, MM-Dist, Diversity, MultiModality) with the local evaluator on the held-out splits.")
def classic_metrics(context: AssetExecutionContext, config: BenchRunConfig, paths: ProjectPaths,
                    mlflow_tracking: MLflowTracking) -> MaterializeResult:
    from vimogen_core.bench.classic import classic_metrics as compute
    from vimogen_core.bench.judges import LocalJudge
    from vimogen_core.curation.shards import iter_shard_samples
    from vimogen_core.motion.representation import features_to_joints
    from vimogen_core.train.generate import load_generator

    texts, real = [], []
    for row, feats in iter_shard_samples(paths.manifest):
        if row["split"] != "train" and row["motion_text"]:
            texts.append(row["motion_text"][0])
            real.append(features_to_joints(feats))  # (T, 22, 3)
    run = trained_model_of_this_run(context)
    generated = load_generator(run["checkpoint"]).generate(texts, [len(r) for r in real], steps=config.steps)
    generated = [features_to_joints(g) for g in generated]
    judge = LocalJudge.load(paths.judge_dir)
    result = compute(judge.evaluator, texts, real, generated, batch_size=min(32, len(texts)))
    flat = {f"classic/{k}": v["mean"] for k, v in result["generated"].items()}
    registry.log_scores(mlflow_tracking.setup(paths), run["run_id"], flat, "classic", None)
    out = paths.path("bench", "classic.json")
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
