"""The Dagster UI as users meet it: the webserver on 127.0.0.1 serves the asset graph and the
schedule over its GraphQL API; it is stopped by its PID."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from playground.browser import stop_server

REPO_ROOT = Path(__file__).resolve().parents[1]

QUERY = """
{
  assetNodes { assetKey { path } groupName dependencyKeys { path } hasAssetChecks }
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes { name schedules { name cronSchedule } sensors { name } }
    }
  }
}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_webserver_serves_asset_graph_and_schedule(tmp_path):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "VIMOGEN_STATE_DIR": str(tmp_path / "state")}
    server = subprocess.Popen([str(Path(sys.executable).with_name("dagster-webserver")), "-h", "127.0.0.1",
                               "-p", str(port), "-w", "workspace.yaml"], cwd=REPO_ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/graphql"
        deadline, data = time.time() + 120, None
        while time.time() < deadline and data is None:
            try:
                reply = requests.post(url, json={"query": QUERY}, timeout=10)
                body = reply.json()
                if reply.ok and body.get("data", {}).get("assetNodes"):
                    data = body["data"]
            except (requests.ConnectionError, requests.Timeout, ValueError):
                pass
            if data is None:
                assert server.poll() is None, "webserver exited"
                time.sleep(1)
        assert data is not None, "webserver did not serve the asset graph in time"
        nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
        assert {n["groupName"] for n in nodes.values()} == {"sources", "curation", "training", "benchmark", "registry",
                                                                      "light"}
        assert {"/".join(d["path"]) for d in nodes["trained_model"]["dependencyKeys"]} == {
            "normalisation_stats", "text_embedding_cache"}
        assert {"/".join(d["path"]) for d in nodes["champion_alias"]["dependencyKeys"]} == {"registered_model"}
        assert {"/".join(d["path"]) for d in nodes["teacher_samples"]["dependencyKeys"]} == {
            "expanded_prompts", "champion_alias"}  # the light model learns from the champion
        assert {"/".join(d["path"]) for d in nodes["light_model"]["dependencyKeys"]} == {"teacher_samples"}
        assert nodes["curated_shards"]["hasAssetChecks"]
        (repository,) = data["repositoriesOrError"]["nodes"]
        assert {(s["name"], s["cronSchedule"]) for s in repository["schedules"]} == {("weekly_retrain_schedule", "0 3 * * 1")}
        assert {s["name"] for s in repository["sensors"]} == {"raw_data_sensor"}
    finally:
        stop_server(server, timeout=30)
