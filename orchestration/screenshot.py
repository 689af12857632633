"""`python -m orchestration.screenshot OUT.png [--page asset-groups]`: start the Dagster UI on
127.0.0.1 over the state folder, photograph a page with headless Chromium (Debian: `apt-get install
chromium`), and stop the UI by its PID. Used to look at what the demo left in the UI."""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from orchestration.demo import demo_environment
from orchestration.resources import REPO_ROOT, default_state_dir

ALL_GROUPS = "asset-groups?expanded=benchmark%2Ccuration%2Cregistry%2Csources%2Ctraining"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--page", default=ALL_GROUPS, help="UI path, e.g. assets/trained_model")
    parser.add_argument("--state-dir", default=default_state_dir())
    parser.add_argument("--size", default="1800,1100")
    args = parser.parse_args(argv)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("screenshot: chromium not found (apt-get install chromium)")
    port = free_port()
    env = demo_environment(Path(args.state_dir).resolve())
    server = subprocess.Popen([str(Path(sys.executable).with_name("dagster-webserver")), "-h", "127.0.0.1", "-p", str(port),
                               "-w", "workspace.yaml"], cwd=REPO_ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                if requests.get(f"{base}/server_info", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit("screenshot: the Dagster UI did not start")
            time.sleep(1)
        # the first-visit community dialog would cover the page
        requests.post(f"{base}/graphql", json={"query": "mutation { setNuxSeen }"}, timeout=30)
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--window-size={args.size}", "--virtual-time-budget=30000",
                        f"--screenshot={args.out.resolve()}", f"{base}/{args.page}"],
                       check=True, timeout=180, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(args.out)
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
