"""The promotion rule on a real MLflow registry (SQLite): `champion` moves to the candidate only when
its MBench scores, under the same scoring setup, are not worse on the agreed dimensions; the decision is
a model-version tag."""
from __future__ import annotations

from orchestration.registry import PROMOTION_DIMENSIONS, SCORING_SETUP, promote_if_not_worse
from orchestration.resources import MLflowTracking, ProjectPaths

GOOD = {"Jitter_Degree": 0.010, "Foot_Sliding": 0.004, "Ground_Penetration": 0.002,
        "Motion_Condition_Consistency": 0.60, "Motion_Generalizability": 0.50}
SETUP = {"prompt_set": "30 prompts, sha256 0123456789abcdef", "judge": "local-contrastive (threshold 0.300)",
         "pose_prior": "knn-posebank (k=4)", "height_mode": "true"}


def add_version(client, tmp_path, scores: dict) -> str:
    source = tmp_path / f"model_{len(client.search_model_versions())}"
    source.mkdir()
    version = client.create_model_version("vimogen", str(source))
    for key, value in (scores | SETUP).items():
        client.set_model_version_tag("vimogen", version.version, f"mbench.{key}", str(value))
    client.set_registered_model_alias("vimogen", "candidate", version.version)
    return version.version


def test_champion_moves_only_when_not_worse(tmp_path):
    assert set(GOOD) == set(PROMOTION_DIMENSIONS) and set(SETUP) == set(SCORING_SETUP)
    paths = ProjectPaths(state_dir=str(tmp_path))
    mlflow = MLflowTracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").setup(paths)
    client = mlflow.tracking.MlflowClient()
    client.create_registered_model("vimogen")

    first = add_version(client, tmp_path, GOOD)
    decision = promote_if_not_worse(mlflow, "vimogen")
    assert decision["promoted"] and client.get_model_version_by_alias("vimogen", "champion").version == first

    worse = add_version(client, tmp_path, GOOD | {"Jitter_Degree": 0.05})
    decision = promote_if_not_worse(mlflow, "vimogen")
    assert not decision["promoted"]
    assert client.get_model_version_by_alias("vimogen", "champion").version == first
    tag = client.get_model_version("vimogen", worse).tags["promotion_decision"]
    assert tag.startswith("kept") and "Jitter_Degree" in tag
    assert "0.05" in decision["table"] and "worse" in decision["table"]

    better = add_version(client, tmp_path, GOOD | {"Motion_Condition_Consistency": 0.70})
    assert promote_if_not_worse(mlflow, "vimogen")["promoted"]
    assert client.get_model_version_by_alias("vimogen", "champion").version == better
