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
    assert set(groups.values()) == {"sources", "curation", "training", "benchmark", "registry"}
    for name in ("raw_takes", "curated_samples", "curated_shards", "normalisation_stats", "text_embedding_cache",
                 "trained_model", "local_judge", "mbench_scores", "classic_metrics", "registered_model",
                 "champion_alias"):
        assert name in groups, name
    upstream = graph.get(AssetKey("champion_alias")).parent_keys
    seen, frontier = set(), set(upstream)
    while frontier:  # walk the lineage from promotion back to the sources
        key = frontier.pop()
        seen.add(key.to_user_string())
        frontier |= set(graph.get(key).parent_keys)
    assert {"raw_takes", "curated_shards", "trained_model", "mbench_scores", "registered_model"} <= seen
    checks = [graph.get_check_spec(key) for key in graph.asset_check_keys]
    assert [(c.asset_key.to_user_string(), c.name, c.blocking) for c in checks] == [
        ("curated_shards", "manifest_expectations", True)]
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


def test_training_benchmark_and_registry_groups_materialise_in_process(curated_state, tmp_path):
    state = tmp_path / "state"
    shutil.copytree(curated_state, state)
    ops = {"trained_model": {"config": {"steps": 3, "overrides": ["batch_size=4", "max_frames=60", "log_every=1"],
                                        "sample_steps": 2}},
           "local_judge": {"config": {"evaluator_preset": "quick", "evaluator_steps": 20}},
           "mbench_scores": {"config": {"steps": 2}},
           "classic_metrics": {"config": {"steps": 2}}}
    everything = [*load_assets_from_modules([assets]), assets.manifest_expectations]
    with DagsterInstance.ephemeral() as instance:
        for group in ("training", "benchmark", "registry"):
            selection = AssetSelection.groups(group)
            group_ops = {name: cfg for name, cfg in ops.items() if name in {k.path[-1] for k in selection.resolve(everything)}}
            result = materialize(everything, selection=selection, run_config={"ops": group_ops},
                                 resources=resources(state), instance=instance)
            assert result.success, group
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}",
                                          registry_uri=f"sqlite:///{state / 'mlflow.db'}")
    version = client.get_model_version_by_alias("vimogen", "champion")
    assert client.get_model_version_by_alias("vimogen", "candidate").version == version.version
    losses = client.get_metric_history(version.run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3]
    assert (state / "bench" / "mbench" / "report.md").is_file() and (state / "bench" / "classic.json").is_file()

