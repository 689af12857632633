"""Run the playground (or the `vimogen serve` front) as its own process and drive the page in headless
Chromium: the acceptance tests and the latency/serving benchmarks share these, so both see what a
person or client sees.

Needs Debian's `chromium` and `chromium-driver` (`make system-deps`) and selenium (test extra).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LOCAL_PREFIXES = ("http://127.0.0.1:", "blob:http://127.0.0.1:", "data:")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_cli_server(args: list[str], port: int, probe: str, env: dict | None = None, log: Path | None = None,
                     timeout: float = 180.0) -> subprocess.Popen:
    """`vimogen ARGS --port PORT` in a subprocess, returned once http://127.0.0.1:PORT/PROBE answers;
    stop it with `stop_server` (by its PID)."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})}
    handle = open(log or os.devnull, "w")
    proc = subprocess.Popen([sys.executable, "-m", "vimogen_core.cli", *args, "--port", str(port)],
                            env=env, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vimogen {args[0]} exited with {proc.returncode}" + (f"; see {log}" if log else ""))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{probe}", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    stop_server(proc)
    raise TimeoutError(f"vimogen {args[0]} did not answer on port {port} within {timeout:.0f} s")


def start_server(source_args: list[str], port: int, out: Path, env: dict | None = None,
                 log: Path | None = None, timeout: float = 180.0) -> subprocess.Popen:
    """`vimogen playground SOURCE_ARGS --out OUT` on PORT, returned once the page answers."""
    env = {"OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    return start_cli_server(["playground", *source_args, "--out", str(out)], port, "", env, log, timeout)


def start_model_server(args: list[str], port: int, env: dict | None = None, log: Path | None = None,
                       timeout: float = 180.0) -> subprocess.Popen:
    """`vimogen serve ARGS` on PORT (orchestration/model_server.py), returned once /ping answers."""
    return start_cli_server(["serve", *args], port, "ping", env, log, timeout)


def stop_server(proc: subprocess.Popen, timeout: float = 20.0, group: bool = False) -> int:
    """SIGTERM to the server's own PID (its process group with `group`, for servers that start
    workers), SIGKILL if it lingers; returns its exit code."""
    kill = os.killpg if group else os.kill
    if proc.poll() is None:
        kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    return proc.returncode


def chromium(width: int = 1400, height: int = 1100):
    """Headless Chromium with WebGL in software (SwiftShader) and the network log on."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                 "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class Page:
    """The playground page in a browser: fill the inputs, press Generate, read the status."""

    def __init__(self, driver, port: int):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.port, self._by, self._wait = driver, port, By, WebDriverWait
        self.requested: list[str] = []
        driver.get(f"http://127.0.0.1:{port}/")
        self.wait_for(lambda: self._find("#prompt textarea"), 60)

    def _find(self, css: str):
        found = self.driver.find_elements(self._by.CSS_SELECTOR, css)
        return found[0] if found else None

    def wait_for(self, condition, timeout: float):
        return self._wait(self.driver, timeout, poll_frequency=0.02).until(lambda _: condition())

    def fill(self, prompt: str, duration, steps, seed) -> None:
        from selenium.webdriver.common.keys import Keys

        for css, value in (("#prompt textarea", prompt), ("#duration input", duration), ("#steps input", steps),
                           ("#seed input", seed)):
            # Select-all + delete as a person would: WebElement.clear() fires no input event, so the
            # page's own copy of the value would keep the old text.
            self._find(css).send_keys(Keys.CONTROL, "a", Keys.NULL, Keys.BACKSPACE, str(value))

    @property
    def status(self) -> str:
        return self._find("#status").text

    def generate(self, done: str, timeout: float = 300.0) -> float:
        """Press Generate; seconds until the status shows `done` (or an error, which the caller sees
        in `status`)."""
        before = self.status
        started = time.perf_counter()
        self._find("#generate").click()
        self.wait_for(lambda: self.status != before and (done in self.status or "Error:" in self.status), timeout)
        return time.perf_counter() - started

    def network(self) -> list[str]:
        """Every URL the page has requested so far (the browser's own network log)."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requested.append(message["params"]["request"]["url"])
        return self.requested

    def fetch(self, url: str) -> bytes:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()
