"""The served model under concurrent clients: throughput, latency, errors by status and the server's
peak memory; prints JSON.

Starts `vimogen serve` on 127.0.0.1 (the registry's model, or a checkpoint registered in a scratch
SQLite registry first), then for each client count runs that many clients for a bounded time and
request count. Each client posts one motion per request (seeds cycling over a few values), keeps
its connection, and on a 503 waits the Retry-After the server names, as a well-behaved client does.
Every 200 is compared byte for byte with the same request answered alone before the load: a motion
must not depend on what else the server was doing. The server's peak RSS (VmHWM, reset before each
load) is read from /proc; the server is stopped by its PID at the end.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serving.py --checkpoint CKPT [--clients 1,8,32 --seconds 30]
    MLFLOW_TRACKING_URI=... .venv/bin/python benchmarks/serving.py --model-uri models:/vimogen@champion
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

SEEDS = (0, 1, 2, 3)


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)


def drive(url: str, bodies: dict[int, bytes], expected: dict[int, bytes], clients: int, seconds: float,
          max_requests: int) -> dict:
    """`clients` threads posting for `seconds` (at most `max_requests` each); what they saw."""
    latencies, statuses, mismatches, failures = [], Counter(), [0], Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(k: int) -> None:
        with requests.Session() as session:
            for n in range(max_requests):
                now = time.monotonic()
                if now >= deadline:
                    return
                seed = SEEDS[(k + n) % len(SEEDS)]
                try:
                    reply = session.post(url, data=bodies[seed], headers={"Content-Type": "application/json"},
                                         timeout=max(5.0, deadline - now + 60))
                except requests.RequestException as err:
                    with lock:
                        failures[type(err).__name__] += 1
                    continue
                took = time.monotonic() - now
                with lock:
                    statuses[reply.status_code] += 1
                    if reply.status_code == 200:
                        latencies.append(took)
                        mismatches[0] += reply.content != expected[seed]
                if reply.status_code == 503:
                    time.sleep(max(0.0, min(float(reply.headers.get("Retry-After", 1)), deadline - time.monotonic())))

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    ok = statuses.get(200, 0)
    return {"clients": clients, "seconds": round(elapsed, 2), "requests": sum(statuses.values()),
            "ok": ok, "throughput_per_s": round(ok / elapsed, 3),
            "latency_s": {"p50": percentile(latencies, 0.50), "p95": percentile(latencies, 0.95),
                          "p99": percentile(latencies, 0.99),
                          "mean": round(statistics.fmean(latencies), 4) if latencies else None},
            "status_counts": {str(k): v for k, v in sorted(statuses.items())},
            "server_errors_5xx_other_than_503": sum(v for k, v in statuses.items() if k >= 500 and k != 503),
            "connection_failures": dict(failures), "seed_mismatches": mismatches[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-uri", help="an MLflow model URI (the registry: MLFLOW_TRACKING_URI)")
    source.add_argument("--checkpoint", help="a training checkpoint, registered in a scratch registry first")
    parser.add_argument("--clients", default="1,8,32", help="client counts, one load each")
    parser.add_argument("--seconds", type=float, default=30.0, help="each load's duration")
    parser.add_argument("--max-requests", type=int, default=10_000, help="per client and load")
    parser.add_argument("--prompt", default="a person walks forward")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--queue", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="the server's torch threads (0: all CPUs)")
    args = parser.parse_args()

    from orchestration.model_server import register_champion
    from playground.browser import free_port, start_model_server, stop_server

    state = Path(tempfile.mkdtemp(prefix="serving_bench_"))
    env = {"VIMOGEN_STATE_DIR": str(state)}
    model_uri = args.model_uri
    if args.checkpoint:
        env["MLFLOW_TRACKING_URI"] = register_champion(args.checkpoint, state)
        model_uri = "models:/vimogen@champion"
    port = free_port()
    url = f"http://127.0.0.1:{port}/invocations"
    server = start_model_server(["--model-uri", model_uri, "--workers", str(args.workers), "--queue", str(args.queue),
                                 "--threads", str(args.threads)], port, env=env, log=state / "server.log")
    try:
        bodies = {seed: json.dumps({"dataframe_records": [{"prompt": args.prompt, "frames": args.frames, "seed": seed}]})
                  .encode() for seed in SEEDS}
        expected = {}
        for seed, body in bodies.items():  # each alone, before any load
            reply = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=300)
            reply.raise_for_status()
            expected[seed] = reply.content
        idle_kib = memory_kib(server.pid, "VmRSS")
        runs = []
        for clients in [int(c) for c in args.clients.split(",")]:
            Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # VmHWM from here on
            load_before = os.getloadavg()[0]
            run = drive(url, bodies, expected, clients, args.seconds, args.max_requests)
            # the machine's 1-minute load average around the run: figures on a shared machine need it
            run["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            run["peak_rss_mib"] = round(memory_kib(server.pid, "VmHWM") / 1024, 1)
            run["peak_over_idle"] = round(memory_kib(server.pid, "VmHWM") / idle_kib, 3)
            runs.append(run)
        pid, alive = server.pid, server.poll() is None
    finally:
        code = stop_server(server)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    print(json.dumps({"server": {"model_uri": model_uri, "pid": pid, "alive_after_loads": alive, "exit_code": code,
                                 "workers": args.workers, "queue": args.queue, "threads": args.threads or os.cpu_count(),
                                 "idle_rss_mib": round(idle_kib / 1024, 1)},
                      "request": {"prompt": args.prompt, "frames": args.frames, "rows": 1, "seeds": list(SEEDS),
                                  "response_bytes": len(expected[SEEDS[0]])},
                      "runs": runs,
                      "cpu": next((line.split(":", 1)[1].strip() for line in cpu.splitlines()
                                   if line.startswith("Model name")), None)}, indent=2))


if __name__ == "__main__":
    main()
