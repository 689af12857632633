"""MLflow side of the graph: log a training run (params, loss curve, dataset input, artifacts),
scores and what they were scored under, the pyfunc registration with alias `candidate`, and the
champion promotion rule."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from orchestration import pictures
from orchestration.resources import ProjectPaths

# Promotion compares these MBench dimensions; True = higher is better.
PROMOTION_DIMENSIONS = {
    "Jitter_Degree": False,
    "Foot_Sliding": False,
    "Ground_Penetration": False,
    "Motion_Condition_Consistency": True,
    "Motion_Generalizability": True,
}
# The dimensions the judge scores: when they are missing, the judge's state says why.
JUDGED_DIMENSIONS = ("Motion_Condition_Consistency", "Motion_Generalizability")
# Scores within this relative margin count as "not worse" (sampling noise of a small prompt set).
TOLERANCE = 0.02
# What an MBench score depends on besides the model (tag `mbench.<key>` on the run and the model version):
# two models' scores are compared only when every one of these is the same.
SCORING_SETUP = {"prompt_set": "prompt set", "judge": "judge", "pose_prior": "pose prior", "height_mode": "height mode"}


def scoring_setup(metadata: dict) -> dict[str, str]:
    """The SCORING_SETUP values of one MBench run, from the runner's metadata."""
    return {"prompt_set": f"{metadata['n_prompts']} prompts, sha256 {metadata['prompt_set_sha256'][:16]}",
            "judge": metadata["judge"] or "not used", "pose_prior": metadata["pose_scorer"] or "not used",
            "height_mode": metadata["height_axis"]}


def _flatten(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value
    return out


def dvc_directory_hash(directory: Path) -> str:
    """The md5 `.dir` hash DVC gives this folder (the same tree hashing `dvc add` uses), so the asset's
    data version matches the DVC-tracked version of the same shard set."""
    import tempfile

    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db.local import LocalHashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as scratch:
        _, _, tree = build(LocalHashFileDB(fs, scratch), str(directory), fs, "md5")
    return tree.hash_info.value


def open_training_run(mlflow, experiment: str, run_dir: Path) -> str:
    """A new MLflow run, left open for the training subprocess to log into."""
    experiment_id = mlflow.get_experiment_by_name(experiment).experiment_id
    run = mlflow.tracking.MlflowClient().create_run(experiment_id, run_name=f"train-{run_dir.name}")
    return run.info.run_id


def _log_input(mlflow, dataset, tags: dict) -> None:
    """mlflow.log_input, once more if another run created the same dataset row between MLflow's
    lookup and its insert (two trainings on one shard set at once); the second call finds the row."""
    from mlflow.exceptions import MlflowException

    try:
        mlflow.log_input(dataset, context="training", tags=tags)
    except MlflowException as err:
        if "UNIQUE constraint failed: datasets" not in str(err):
            raise
        mlflow.log_input(dataset, context="training", tags=tags)


def log_training_run(mlflow, run_id: str, run_dir: Path, checkpoint: Path, paths: ProjectPaths, sample_prompt: str,
                     sample_steps: int = 20, manifest_path: Path | None = None, dataset_name: str = "curated-shards",
                     extra_artifacts: tuple[Path, ...] = ()) -> dict:
    """Params, the training set as the run's dataset input (`manifest_path`, default the curated
    shards; its folder's DVC hash as a tag), a sample motion and the artifacts of a finished run."""
    from vimogen_core.curation.shard_reader import read_manifest
    from vimogen_core.motion.render import render_frames_png, render_motion
    from vimogen_core.motion.representation import features_to_joints
    from vimogen_core.train.generate import load_generator
    import torch

    manifest_path = paths.manifest if manifest_path is None else Path(manifest_path)
    config = json.loads((run_dir / "train_config.json").read_text())
    manifest = read_manifest(manifest_path).to_pandas()
    digest = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    dvc_hash = dvc_directory_hash(manifest_path.parent)
    with mlflow.start_run(run_id=run_id):  # the loss curve is already there, logged live by the trainer
        params = {k: str(v)[:500] for k, v in _flatten("", config, {}).items()}
        mlflow.log_params(params)
        summary = manifest[["id", "source", "subset", "split", "n_frames"]]
        dataset = mlflow.data.from_pandas(summary, source=str(manifest_path), name=dataset_name,
                                          digest=digest[:32])
        _log_input(mlflow, dataset, {"manifest_sha256": digest, "dvc_md5": dvc_hash})
        mlflow.set_tags({"dataset.manifest_sha256": digest, "dataset.dvc_md5": dvc_hash,
                         "dataset.samples": str(len(manifest))})
        loss_png = pictures.loss_curve_png(run_dir / "metrics.jsonl", run_dir / "loss.png")
        generator = load_generator(checkpoint)
        feats = generator.generate([sample_prompt], 80, steps=sample_steps)[0]
        joints = features_to_joints(torch.as_tensor(feats)).numpy()
        sample_gif = run_dir / "sample.gif"
        render_motion(joints, sample_gif, title=sample_prompt)
        sample_png = render_frames_png(joints, run_dir / "sample.png", n=5, title=sample_prompt)
        for artifact in (run_dir / "train_config.json", checkpoint, loss_png, sample_gif, sample_png, *extra_artifacts):
            if artifact is not None and Path(artifact).exists():
                mlflow.log_artifact(str(artifact))
    return {"loss_png": loss_png, "sample_png": Path(sample_png)}


def log_scores(mlflow, run_id: str, scores: dict, prefix: str, report_dir: Path | None,
               setup: dict[str, str] | None = None) -> None:
    """Scores as `<prefix>/<name>` metrics, what they were scored under as `<prefix>.<key>` tags. A score of
    None (the dimension could not be scored) is logged as NaN, so an earlier scoring's value of the run is
    not taken for it."""
    client = mlflow.tracking.MlflowClient()
    for key, value in scores.items():
        name = key if key.startswith(prefix) else f"{prefix}/{key}"
        client.log_metric(run_id, name.replace(" ", "_"), math.nan if value is None else float(value))
    for key, value in (setup or {}).items():
        client.set_tag(run_id, f"{prefix}.{key}", value)
    if report_dir is not None:
        for path in Path(report_dir).glob("*.md"):
            client.log_artifact(run_id, str(path), artifact_path=prefix)
        for path in Path(report_dir).glob("*.json"):
            client.log_artifact(run_id, str(path), artifact_path=prefix)


def register_candidate(mlflow, model_name: str, run: dict, serving_steps: int | None = 20):
    """Register the training `run` ({"run_id", "checkpoint", "run_dir"}) with its MBench scores and scoring
    setup. `serving_steps`: the served model's sampling steps (None: the checkpoint's own, 4 for ViMoGen-light)."""
    from orchestration.pyfunc_model import model_signature

    settings = Path(run["run_dir"]) / "serving.json"  # in the run's own folder: runs at once never share it
    settings.write_text(json.dumps({"steps": serving_steps}))  # guidance: the training preset's
    client = mlflow.tracking.MlflowClient()
    with mlflow.start_run(run_id=run["run_id"]):
        info = mlflow.pyfunc.log_model(name="model", python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
                                       artifacts={"checkpoint": run["checkpoint"], "settings": str(settings)},
                                       # the code comes from the installed project; no requirement inference run
                                       pip_requirements=["vimogen", "torch==2.13.0", "mlflow==3.17.2"],
                                       signature=model_signature(), registered_model_name=model_name)
    version = client.get_model_version(model_name, str(info.registered_model_version))
    logged = client.get_run(run["run_id"]).data
    for dim in PROMOTION_DIMENSIONS:
        value = logged.metrics.get(f"mbench/{dim}")
        if value is not None and not math.isnan(value):
            client.set_model_version_tag(model_name, version.version, f"mbench.{dim}", str(value))
    for key in SCORING_SETUP:  # the version keeps what it was scored under, whatever the run is scored with later
        if f"mbench.{key}" in logged.tags:
            client.set_model_version_tag(model_name, version.version, f"mbench.{key}", logged.tags[f"mbench.{key}"])
    client.set_registered_model_alias(model_name, "candidate", version.version)
    return version


def _refusals(candidate, champion) -> list[str]:
    """Why the candidate's scores cannot be compared with the champion's (nothing: they can)."""
    missing = [dim for dim in PROMOTION_DIMENSIONS if f"mbench.{dim}" not in candidate.tags]
    if missing:  # never compared, whatever the champion
        judge = (f" (judge: {candidate.tags.get('mbench.judge', 'not recorded')})"
                 if set(missing) & set(JUDGED_DIMENSIONS) else "")
        return [f"no {', '.join(missing)} score{judge}"]
    if champion is None:
        return []
    refusals = []
    champion_missing = [dim for dim in PROMOTION_DIMENSIONS if f"mbench.{dim}" not in champion.tags]
    if champion_missing:
        refusals.append(f"champion version {champion.version} has no {', '.join(champion_missing)} score")
    for key, label in SCORING_SETUP.items():
        new, old = candidate.tags.get(f"mbench.{key}"), champion.tags.get(f"mbench.{key}")
        if new is None or new != old:
            refusals.append(f"scored under a different {label} than champion version {champion.version} "
                            f"(candidate: {new or 'not recorded'}; champion: {old or 'not recorded'})")
    return refusals


def promote_if_not_worse(mlflow, model_name: str) -> dict:
    """Move `champion` to `candidate` when the candidate has every promotion score, was scored under the
    champion's SCORING_SETUP and is not worse on any dimension. The decision, with its reason, is the
    candidate version's `promotion_decision` tag."""
    client = mlflow.tracking.MlflowClient()
    candidate = client.get_model_version_by_alias(model_name, "candidate")
    try:
        champion = client.get_model_version_by_alias(model_name, "champion")
    except Exception:  # no champion yet: MLflow raises when the alias is unset
        champion = None
    same = champion is not None and champion.version == candidate.version
    refusals = [] if same else _refusals(candidate, champion)
    rows, worse = [], []
    for key, label in SCORING_SETUP.items():
        new, old = candidate.tags.get(f"mbench.{key}"), None if champion is None else champion.tags.get(f"mbench.{key}")
        rows.append(f"| {label} | {old} | {new} | {'-' if champion is None else 'same' if new == old else 'different'} |")
    for dim, higher_better in PROMOTION_DIMENSIONS.items():
        new = candidate.tags.get(f"mbench.{dim}")
        old = None if champion is None else champion.tags.get(f"mbench.{dim}")
        if refusals or new is None or old is None:  # not comparable: no verdict
            rows.append(f"| {dim} | {old} | {new} | - |")
            continue
        new_v, old_v = float(new), float(old)
        margin = TOLERANCE * max(abs(old_v), 1e-6)
        ok = new_v >= old_v - margin if higher_better else new_v <= old_v + margin
        rows.append(f"| {dim} | {old_v:.4g} | {new_v:.4g} | {'ok' if ok else 'worse'} |")
        if not ok:
            worse.append(dim)
    promoted = not same and not refusals and not worse
    if promoted:
        client.set_registered_model_alias(model_name, "champion", candidate.version)
    if same:
        reason = "already champion"
    elif refusals:
        reason = "; ".join(refusals)
    elif worse:
        reason = "worse on " + ", ".join(worse)
    else:
        reason = "no champion yet" if champion is None else "not worse on " + ", ".join(PROMOTION_DIMENSIONS)
    decision = f"{'promoted' if promoted else 'kept'} version {candidate.version}: {reason}"
    client.set_model_version_tag(model_name, candidate.version, "promotion_decision", decision)
    table = "| dimension | champion | candidate | verdict |\n|---|---|---|---|\n" + "\n".join(rows) + f"\n\n{decision}"
    current = candidate.version if promoted else (champion.version if champion else None)
    return {"promoted": promoted, "champion": int(current) if current else -1, "table": table, "summary": decision}


def champion_checkpoint(mlflow, model_name: str, into: Path) -> tuple[int, Path]:
    """(version, checkpoint file) of `model_name`'s champion, its model artifacts downloaded into `into`."""
    client = mlflow.tracking.MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, "champion")
    except Exception:  # MLflow raises when the alias is unset
        raise LookupError(f"registered model {model_name!r} has no champion yet") from None
    into.mkdir(parents=True, exist_ok=True)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version.version}",
                                                     dst_path=str(into)))
    (checkpoint,) = [p for p in (local / "artifacts").iterdir() if p.suffix == ".pt"]
    return int(version.version), checkpoint
