"""The Dagster definitions: the graph as users see it, `dagster definitions validate`, the curation
group materialised in-process on the real built-in clips, and the blocking expectation check that
keeps a bad shard set away from training."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, AssetSelection, DagsterInstance, load_assets_from_modules, materialize

from orchestration import assets
from orchestration.definitions import defs
from orchestration.resources import MLflowTracking, ProjectPaths, RawDataWatch
from vimogen_core.motion.motion import resample
from vimogen_core.motion.export import write_amass_npz
from vimogen_core.sources.deepmimic import load_builtin_clip

REPO_ROOT = Path(__file__).resolve().parents[1]
CURATION = [assets.raw_takes, assets.curated_samples, assets.curated_shards, assets.manifest_expectations,
            assets.normalisation_stats]
SOURCES = ("optical_mocap", "in_the_wild_video", "synthetic_video")


def resources(state: Path) -> dict:
    from dagster import PipesSubprocessClient

    return {"paths": ProjectPaths(state_dir=str(state)),
            "mlflow_tracking": MLflowTracking(tracking_uri=f"sqlite:///{state / 'mlflow.db'}"),
            "pipes_subprocess_client": PipesSubprocessClient(),
            "raw_data_watch": RawDataWatch(s3_bucket="")}


def test_graph_has_every_stage_lineage_and_blocking_check():
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert set(groups.values()) == {"sources", "curation", "training", "benchmark", "registry", "light"}
    for name in ("raw_takes", "curated_samples", "curated_shards", "normalisation_stats", "text_embedding_cache",
                 "trained_model", "local_judge", "mbench_scores", "classic_metrics", "registered_model",
                 "champion_alias"):
        assert name in groups, name
    assert {name for name, group in groups.items() if group == "light"} == {
        "expanded_prompts", "teacher_samples", "light_model", "light_mbench_scores", "light_classic_metrics",
        "registered_light_model", "light_champion_alias"}

    def lineage(name: str) -> set[str]:
        seen, frontier = set(), set(graph.get(AssetKey(name)).parent_keys)
        while frontier:  # walk the lineage back to the sources
            key = frontier.pop()
            seen.add(key.to_user_string())
            frontier |= set(graph.get(key).parent_keys)
        return seen

    assert {"raw_takes", "curated_shards", "trained_model", "mbench_scores", "registered_model"} <= lineage("champion_alias")
    # the student learns from the champion, on teacher samples of prompts expanded from the curated captions
    assert {"curated_shards", "champion_alias", "expanded_prompts", "teacher_samples", "light_model",
            "light_mbench_scores", "light_classic_metrics", "registered_light_model"} <= lineage("light_champion_alias")
    checks = [graph.get_check_spec(key) for key in graph.asset_check_keys]
    assert sorted((c.asset_key.to_user_string(), c.name, c.blocking) for c in checks) == [
        ("curated_shards", "manifest_expectations", True), ("teacher_samples", "teacher_sample_expectations", True)]
    assert defs.resolve_schedule_def("weekly_retrain_schedule").cron_schedule == "0 3 * * 1"
    assert defs.resolve_sensor_def("raw_data_sensor") is not None


def test_dagster_definitions_validate(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run([str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w",
                           "workspace.yaml"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful" in done.stdout + done.stderr


@pytest.fixture(scope="module")
def curated_state(tmp_path_factory) -> Path:
    """The sources (partition by partition) and curation groups materialised in-process on all 15
    built-in clips, plus a new AMASS-style take waiting in the raw inbox (as the sensor would see)."""
    state = tmp_path_factory.mktemp("state")
    inbox_take = ProjectPaths(state_dir=str(state)).raw_inbox / "optical_mocap" / "lab1" / "walk_amass.npz"
    inbox_take.parent.mkdir(parents=True)
    write_amass_npz(inbox_take, resample(load_builtin_clip("walk", min_frames=121).motion, 60.0))
    inbox_take.with_suffix(".txt").write_text("a person walks forward at an even pace\n")
    with DagsterInstance.ephemeral() as instance:
        for source in SOURCES:
            result = materialize([assets.raw_takes], partition_key=source, resources=resources(state), instance=instance)
            assert result.success, source
        result = materialize(CURATION, selection=AssetSelection.groups("curation"), resources=resources(state),
                             instance=instance)
    assert result.success
    return state


def test_source_partitions_and_inbox_take_reach_the_curated_set(curated_state):
    paths = ProjectPaths(state_dir=str(curated_state))
    for source in SOURCES:
        assert (paths.sources / source / "index.jsonl").is_file(), source
    rows = pq.read_table(paths.manifest, columns=["id", "source", "subset"]).to_pylist()
    inbox = [row for row in rows if row["id"].startswith("inbox/optical_mocap/lab1/walk_amass")]
    assert inbox and all(row["source"] == "optical_mocap" and row["subset"] == "inbox" for row in inbox)


def test_curation_group_materialises_validated_versioned_shards(curated_state):
    paths = ProjectPaths(state_dir=str(curated_state))
    assert paths.manifest.is_file()
    rows = pq.read_table(paths.manifest, columns=["split", "source"]).to_pydict()
    assert set(rows["split"]) == {"train", "val", "test"}
    assert "optical_mocap" in rows["source"] and "in_the_wild_video" in rows["source"]
    quarantine = pq.read_table(paths.curated / "quarantine.parquet").to_pylist()
    assert quarantine and all(row["reasons"] for row in quarantine), "every rejection carries its reason"
    from orchestration.registry import dvc_directory_hash

    assert dvc_directory_hash(paths.shards).endswith(".dir")


def test_bad_shard_set_fails_blocking_check_and_training_never_runs(curated_state, tmp_path):
    state = tmp_path / "state"
    shutil.copytree(curated_state, state)
    curated_manifest = state / "data" / "curated" / "manifest.parquet"
    table = pq.read_table(curated_manifest)
    pq.write_table(pa.concat_tables([table, table.slice(0, 3)]), curated_manifest)  # planted duplicate ids

    selection = [assets.curated_shards, assets.manifest_expectations, assets.normalisation_stats,
                 assets.text_embedding_cache, assets.trained_model]
    with DagsterInstance.ephemeral() as instance:
        result = materialize(selection, resources=resources(state), instance=instance, raise_on_error=False)
    assert not result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    failed = evaluation.metadata["failed_expectations"].value
    assert any("unique" in name and "id" in name for name in failed), failed
    materialized = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert materialized == {"curated_shards"}
    assert not (state / "runs").exists(), "the training subprocess must not have been launched"


def report_teacher_samples(instance, state: Path, teacher_checkpoint: str, corrupt=None) -> Path:
    """A teacher-sample set made of a real clip (`corrupt` damages one sample as stored) where the
    teacher_samples asset writes it, reported to Dagster as that asset's materialisation. A teacher
    trained for a few test steps performs no prompt well enough to pass the gates; the asset itself
    runs in test_training_benchmark_registry_and_light_groups_materialise_in_process."""
    from dagster import AssetMaterialization

    from test_distill import _write_teacher_set

    out = ProjectPaths(state_dir=str(state)).path("distill", "teacher_samples")
    shutil.rmtree(out, ignore_errors=True)
    manifest = _write_teacher_set(out, corrupt=corrupt)
    instance.report_runless_asset_event(AssetMaterialization(asset_key="teacher_samples", metadata={
        "teacher_checkpoint": teacher_checkpoint, "teacher_version": 1, "manifest": manifest}))
    return Path(manifest)


def test_bad_teacher_samples_fail_the_blocking_check_and_the_student_never_trains(curated_state, tmp_path):
    from test_distill import _with_nan

    state = tmp_path / "state"
    shutil.copytree(curated_state, state)
    everything = [*load_assets_from_modules([assets]), assets.manifest_expectations, assets.teacher_sample_expectations]
    with DagsterInstance.ephemeral() as instance:
        report_teacher_samples(instance, state, str(tmp_path / "unused_teacher.pt"), corrupt=_with_nan)
        selection = AssetSelection.checks(assets.teacher_sample_expectations) | AssetSelection.assets(assets.light_model)
        result = materialize(everything, selection=selection, resources=resources(state), instance=instance,
                             raise_on_error=False)
    assert not result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert "expect_column_values_to_be_between(n_nonfinite)" in evaluation.metadata["failed_expectations"].value
    assert not result.get_asset_materialization_events()
    assert not list((state / "runs").glob("light-*")), "the student's training must not have been launched"


OPS = {"trained_model": {"config": {"steps": 3, "overrides": ["batch_size=4", "max_frames=60", "log_every=1"],
                                    "sample_steps": 2}},
       "local_judge": {"config": {"evaluator_preset": "quick", "evaluator_steps": 20}},
       "mbench_scores": {"config": {"steps": 2}},
       "classic_metrics": {"config": {"steps": 2}},
       "expanded_prompts": {"config": {"count": 4}},
       "teacher_samples": {"config": {"steps": 2}},
       "light_model": {"config": {"steps": 3, "batch_size": 2}},
       "light_mbench_scores": {"config": {"steps": 1}},
       "light_classic_metrics": {"config": {"steps": 1}}}


@pytest.fixture(scope="module")
def registered_state(curated_state, tmp_path_factory) -> Path:
    """Training, benchmark and registry groups, then the light group, materialised in-process:
    the first group by group, the light one in two runs (the teacher's own samples, then the
    student on a clip-made teacher-sample set: see report_teacher_samples)."""
    state = tmp_path_factory.mktemp("registered") / "state"
    shutil.copytree(curated_state, state)
    everything = [*load_assets_from_modules([assets]), assets.manifest_expectations, assets.teacher_sample_expectations]

    def run(selection, instance, **kwargs):
        names = {k.path[-1] for k in selection.resolve(everything)}
        ops = {name: cfg for name, cfg in OPS.items() if name in names}
        return materialize(everything, selection=selection, run_config={"ops": ops}, resources=resources(state),
                           instance=instance, **kwargs)

    with DagsterInstance.ephemeral() as instance:
        for group in ("training", "benchmark", "registry"):
            assert run(AssetSelection.groups(group), instance).success, group
        sampled = run(AssetSelection.assets(assets.expanded_prompts, assets.teacher_samples), instance,
                      raise_on_error=False)  # the check passes or fails on what the 3-step teacher made
        (teacher,) = [e for e in sampled.get_asset_materialization_events() if e.asset_key.path[-1] == "teacher_samples"]
        metadata = teacher.materialization.metadata
        assert metadata["accepted"].value + metadata["quarantined"].value == 4
        assert metadata["teacher_version"].value == 1
        report_teacher_samples(instance, state, metadata["teacher_checkpoint"].value)
        student = AssetSelection.groups("light") - AssetSelection.assets(assets.expanded_prompts, assets.teacher_samples)
        assert run(student, instance).success
    return state


def test_training_benchmark_and_registry_groups_materialise_in_process(registered_state):
    state = registered_state
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}",
                                          registry_uri=f"sqlite:///{state / 'mlflow.db'}")
    version = client.get_model_version_by_alias("vimogen", "champion")
    assert client.get_model_version_by_alias("vimogen", "candidate").version == version.version
    losses = client.get_metric_history(version.run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3]
    assert (state / "bench" / "mbench" / "report.md").is_file() and (state / "bench" / "classic.json").is_file()


def test_light_group_distils_the_champion_and_registers_vimogen_light(registered_state):
    """expanded_prompts -> teacher_samples (the champion's samples, gated and quarantined) -> light_model
    (Pipes, MLflow) -> its MBench / classic scores -> `vimogen-light` with candidate and champion."""
    import json

    import mlflow

    from vimogen_core.distill.prompts import normalise, training_captions
    from vimogen_core.train.generate import load_generator

    state = registered_state
    prompts = (state / "distill" / "prompts.txt").read_text().splitlines()
    assert len(prompts) == 4 and not {normalise(c) for c in training_captions()} & set(map(normalise, prompts))
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}",
                                          registry_uri=f"sqlite:///{state / 'mlflow.db'}")
    light = client.get_model_version_by_alias("vimogen-light", "champion")
    assert client.get_model_version_by_alias("vimogen-light", "candidate").version == light.version
    assert light.tags["promotion_decision"].startswith("promoted")
    run = client.get_run(light.run_id)
    assert run.data.tags["distilled_from"] == "vimogen version 1"
    assert [m.step for m in client.get_metric_history(light.run_id, "loss")] == [1, 2, 3]
    assert any(key.startswith("mbench/") for key in run.data.metrics) and "classic/FID" in run.data.metrics
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "teacher-samples"
    (student_dir,) = (state / "runs").glob("light-*")
    distilled = json.loads((student_dir / "distill.json").read_text())
    assert distilled["method"] == "reflow" and distilled["step"] == 3 and distilled["teacher_samples"] == 2
    assert load_generator(distilled["checkpoint"]).is_light
    report = (state / "bench" / "mbench_light" / "report.md").read_text()
    assert "ViMoGen-light" in report and "vimogen-light run" in report


@pytest.mark.slow
def test_light_champion_served_by_mlflow_answers_with_motions_of_the_requested_length(registered_state):
    """`mlflow models serve` of models:/vimogen-light@champion, a real server on 127.0.0.1 stopped by its PID."""
    import json

    import requests

    from orchestration.demo import demo_environment
    from test_e2e_demo import assert_motions_of_requested_length, served_by_mlflow

    env = {**demo_environment(registered_state), "MLFLOW_TRACKING_URI": f"sqlite:///{registered_state / 'mlflow.db'}"}
    with served_by_mlflow("models:/vimogen-light@champion", env) as base:
        assert_motions_of_requested_length(base, [30, 45])
        ref = requests.post(f"{base}/invocations", json={"dataframe_records": [
            {"prompt": "a person walks", "frames": 30, "ref_motion": json.dumps([[0.0] * 276] * 30)}]}, timeout=60)
        assert ref.status_code == 400 and "reference mode asked of a ViMoGen-light checkpoint" in ref.text
