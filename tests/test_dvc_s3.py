"""DVC over the real pipeline: `dvc repro` in fresh clones reproduces the manifest byte for byte;
push/pull through the local default remote and through an S3 remote on a moto server."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_storage import start_moto_server

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(args: list[str], cwd: Path, env: dict) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def data_digests(repo: Path) -> dict[str, str]:
    return {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((repo / "data").rglob("*"))
        if p.is_file() and p.name != ".gitignore"
    }


@pytest.mark.slow
def test_dvc_repro_is_reproducible_and_round_trips_through_remotes(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    dvc = str(BIN / "dvc")
    origin = tmp_path / "origin"
    (origin / "data").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "dvc.yaml", origin / "dvc.yaml")
    shutil.copy(REPO_ROOT / "data" / ".gitignore", origin / "data" / ".gitignore")
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["sources"].update(clips=["walk", "punch", "crawl", "jump", "spin"], capture_presets=["clean", "gross_failure"])
    (origin / "params.yaml").write_text(yaml.safe_dump(params))
    run(["git", "init", "-q", "-b", "main"], origin, env)
    run([dvc, "init", "-q"], origin, env)
    run([dvc, "config", "core.analytics", "false"], origin, env)
    run([dvc, "remote", "add", "-d", "local", str(tmp_path / "local-remote")], origin, env)
    run(["git", "add", "-A"], origin, env)
    run(["git", "commit", "-qm", "pipeline"], origin, env)

    run([dvc, "repro"], origin, env)
    first = data_digests(origin)
    assert "data/shards/manifest.parquet" in first and "data/stats/normalizer.npz" in first
    report = (origin / "data" / "validation" / "report.json").read_text()
    assert '"success": true' in report
    run(["git", "add", "dvc.lock", "data/.gitignore", "data/validation/report.json"], origin, env)
    run(["git", "commit", "-qm", "data v1"], origin, env)

    # A fresh clone recomputes everything (no cache, no run cache) and gets the same manifest bytes.
    rebuilt = tmp_path / "rebuilt"
    run(["git", "clone", "-q", str(origin), str(rebuilt)], tmp_path, env)
    run([dvc, "repro", "--no-run-cache"], rebuilt, env)
    second = data_digests(rebuilt)
    assert second["data/shards/manifest.parquet"] == first["data/shards/manifest.parquet"]
    assert {k: v for k, v in second.items() if k.endswith(".npy")} == {k: v for k, v in first.items() if k.endswith(".npy")}

    # Push to the local default remote and to S3 on a moto server; pull each into a fresh clone.
    server, endpoint = start_moto_server()
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket="dvc-store")
        run([dvc, "remote", "add", "s3", "s3://dvc-store/vimogen"], origin, env)
        run([dvc, "remote", "modify", "s3", "endpointurl", endpoint], origin, env)
        run(["git", "commit", "-qam", "s3 remote"], origin, env)
        run([dvc, "push"], origin, env)
        run([dvc, "push", "-r", "s3"], origin, env)
        for remote in ("local", "s3"):
            clone = tmp_path / f"pulled-{remote}"
            run(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
            run([dvc, "pull", "-r", remote], clone, env)
            assert data_digests(clone) == first, remote
    finally:
        server.terminate()
        server.wait(timeout=10)
