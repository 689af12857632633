"""Lineage and promotion through real in-process materialisations (one SQLite Dagster instance, MLflow on
SQLite, a tiny training): two training runs at once each benchmark and register their own checkpoint;
a candidate whose judge fails, or that was scored on another prompt set than the champion, is not
promoted and the decision says why; a candidate scored like the champion and not worse still is."""
from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import mlflow
import pytest
from dagster import AssetCheckResult, DagsterInstance, asset_check, load_assets_from_modules, materialize
from test_orchestration import curated_state, resources  # noqa: F401  (module fixture: the curated built-in clips)

from orchestration import assets
from orchestration.resources import ProjectPaths

GRAPH = [*load_assets_from_modules([assets]), assets.manifest_expectations]
CHAIN = [assets.trained_model, assets.mbench_scores, assets.classic_metrics, assets.registered_model]
RESCORE = [assets.mbench_scores, assets.registered_model, assets.champion_alias]
TINY = {"trained_model": {"config": {"steps": 3, "overrides": ["batch_size=4", "max_frames=60"], "sample_steps": 2}},
        "mbench_scores": {"config": {"steps": 2}},
        "classic_metrics": {"config": {"steps": 2}}}


def client_of(state: Path):
    uri = f"sqlite:///{state / 'mlflow.db'}"
    return mlflow.tracking.MlflowClient(tracking_uri=uri, registry_uri=uri)


def instance_of(state: Path) -> DagsterInstance:
    """The state's own persistent Dagster instance (SQLite), as a DAGSTER_HOME would be."""
    home = state / "dagster_home"
    home.mkdir(exist_ok=True)
    return DagsterInstance.local_temp(str(home))


def materialised(result, name: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == name]
    return {key: value.value for key, value in event.materialization.metadata.items()}


def run_selection(state: Path, selection: list, run_config: dict | None = None):
    """Materialise `selection` out of the whole graph, on the state's own Dagster instance."""
    with instance_of(state) as instance:
        return materialize(GRAPH, selection=selection, run_config={"ops": run_config or {}},
                           resources=resources(state), instance=instance)


@pytest.fixture(scope="module")
def two_runs(curated_state, tmp_path_factory):  # noqa: F811
    """Normaliser, text cache and judge materialised; then two runs of training -> benchmarks -> registry at once,
    each held after its training (a blocking check) until the other has trained too."""
    state = tmp_path_factory.mktemp("lineage") / "state"
    shutil.copytree(curated_state, state)
    prepared = run_selection(state, [assets.normalisation_stats, assets.text_embedding_cache, assets.local_judge],
                             {"local_judge": {"config": {"evaluator_preset": "quick", "evaluator_steps": 20}}})
    assert prepared.success
    # The MLflow experiment exists before the two runs start, as it does after any earlier run.
    resources(state)["mlflow_tracking"].setup(ProjectPaths(state_dir=str(state)))

    both_trained = threading.Barrier(2, timeout=600)

    @asset_check(asset=assets.trained_model, blocking=True)
    def other_run_has_trained() -> AssetCheckResult:
        both_trained.wait()
        return AssetCheckResult(passed=True)

    results, errors = {}, []
    with instance_of(state) as instance:
        def chain(index: int) -> None:
            try:
                results[index] = materialize([*CHAIN, other_run_has_trained], run_config={"ops": TINY},
                                             resources=resources(state), instance=instance)
            except BaseException as err:  # raised in the test's thread below
                errors.append(err)
                both_trained.abort()  # the other run stops waiting

        threads = [threading.Thread(target=chain, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    return state, [results[0], results[1]]


def test_two_training_runs_at_once_each_benchmark_and_register_their_own_checkpoint(two_runs):
    state, results = two_runs
    client = client_of(state)
    trained = [materialised(result, "trained_model") for result in results]
    assert trained[0]["mlflow_run_id"] != trained[1]["mlflow_run_id"]
    assert trained[0]["checkpoint"] != trained[1]["checkpoint"]
    for result, training in zip(results, trained, strict=True):
        version = client.get_model_version("vimogen", str(materialised(result, "registered_model")["version"]))
        assert version.run_id == training["mlflow_run_id"], "registered the other run's model"
        metrics = client.get_run(training["mlflow_run_id"]).data.metrics
        assert "mbench/Jitter_Degree" in metrics and "classic/FID" in metrics, "scores logged to the other run"
    for result, training in zip(results, trained, strict=True):  # and each asset says which model it used
        for name in ("mbench_scores", "classic_metrics", "registered_model"):
            downstream = materialised(result, name)
            assert downstream["checkpoint"] == training["checkpoint"], name
            assert downstream["mlflow_run_id"] == training["mlflow_run_id"], name
    assert not (state / "runs" / "latest.json").exists()


def decide(state: Path, selection: list, run_config: dict | None = None) -> tuple[bool, str, dict]:
    """Materialise `selection` (ending in champion_alias): whether the candidate was promoted, the decision
    its model version records, and the champion_alias metadata."""
    metadata = materialised(run_selection(state, selection, run_config), "champion_alias")
    candidate = client_of(state).get_model_version_by_alias("vimogen", "candidate")
    return metadata["promoted"], candidate.tags["promotion_decision"], metadata


def copy_with_champion(two_runs, tmp_path) -> Path:
    """A copy of the two runs' state in which the last registered candidate has been promoted."""
    state = tmp_path / "state"
    shutil.copytree(two_runs[0], state)
    promoted, decision, _ = decide(state, [assets.champion_alias])
    assert promoted and decision.endswith("no champion yet"), decision
    return state


def test_candidate_whose_judge_fails_is_not_promoted_and_the_decision_says_why(two_runs, tmp_path):
    state = copy_with_champion(two_runs, tmp_path)
    client = client_of(state)
    champion = client.get_model_version_by_alias("vimogen", "champion").version
    shutil.rmtree(ProjectPaths(state_dir=str(state)).judge_dir)  # the judge cannot be loaded: it raises

    promoted, decision, metadata = decide(state, RESCORE, {"mbench_scores": {"config": {"steps": 2}}})
    assert not promoted, decision
    assert client.get_model_version_by_alias("vimogen", "champion").version == champion
    assert decision.startswith("kept version")
    assert "no Motion_Condition_Consistency, Motion_Generalizability score" in decision
    assert "judge: unavailable" in decision, decision
    assert metadata["summary"] == decision


def test_candidate_scored_on_another_prompt_set_is_not_compared_one_scored_alike_is_promoted(two_runs, tmp_path, shared):
    state = copy_with_champion(two_runs, tmp_path)
    client = client_of(state)

    # The same checkpoint scored again the same way: the scores agree, so it is promoted.
    promoted, decision, _ = decide(state, RESCORE, {"mbench_scores": {"config": {"steps": 2}}})
    assert promoted and "not worse on" in decision, decision
    champion = client.get_model_version_by_alias("vimogen", "champion").version

    # Scored on two published prompts of each group instead of the project's own set: not comparable.
    published = json.loads((shared / "mbench" / "MBench_final.json").read_text())
    groups = sorted({entry["dimension"] for entry in published})
    subset = [e for g in groups for e in [e for e in published if e["dimension"] == g][:2]]
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(subset))
    promoted, decision, metadata = decide(state, RESCORE, {"mbench_scores": {"config": {"steps": 2,
                                                                                       "prompts_path": str(prompts)}}})
    assert "different prompt set" in decision and "8 prompts" in decision, decision
    assert not promoted
    assert client.get_model_version_by_alias("vimogen", "champion").version == champion
    assert metadata["summary"] == decision
    assert "| prompt set |" in metadata["decision"] and "| Jitter_Degree |" in metadata["decision"]
    assert not any(row.endswith(("| ok |", "| worse |")) for row in metadata["decision"].splitlines()), \
        "scores under different prompt sets were compared"
