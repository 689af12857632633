"""`vimogen serve`: registered here without importing MLflow or uvicorn, so other commands stay fast."""
from __future__ import annotations

import argparse

from vimogen_core.control.requests import RequestLimits

DEFAULT_MODEL = "models:/vimogen@champion"


def register(subparsers: argparse._SubParsersAction) -> None:
    from orchestration.model_server import ServerSettings

    serve = subparsers.add_parser("serve", help="serve a registered model over HTTP, with request limits and a "
                                                "bounded queue (the same /invocations as `mlflow models serve`)")
    serve.add_argument("--model-uri", "-m", default=DEFAULT_MODEL,
                       help=f"an MLflow model URI or path (default {DEFAULT_MODEL}; the registry is MLFLOW_TRACKING_URI "
                            "or the state folder's mlflow.db)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    serve.add_argument("--port", "-p", type=int, default=5001)
    defaults, limits = ServerSettings(), RequestLimits()
    serve.add_argument("--workers", "-w", type=int, default=defaults.workers,
                       help=f"threads generating at once, sharing one model (default {defaults.workers})")
    serve.add_argument("--queue", type=int, default=defaults.queue,
                       help=f"requests waiting for a worker before 503 (default {defaults.queue})")
    serve.add_argument("--threads", type=int, default=defaults.threads,
                       help="torch threads for all workers (default: the CPUs this process may use)")
    serve.add_argument("--read-timeout", type=float, default=defaults.read_timeout,
                       help=f"seconds for a whole request body to arrive before 408 (default {defaults.read_timeout:g})")
    serve.add_argument("--max-connections", type=int, default=128, help="open connections before uvicorn answers 503")
    serve.add_argument("--max-body-bytes", type=int, default=limits.max_body_bytes)
    serve.add_argument("--max-rows", type=int, default=limits.max_rows, help="motions per request")
    serve.add_argument("--max-prompt-chars", type=int, default=limits.max_prompt_chars)
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from orchestration.model_server import ServerSettings, serve

    limits = RequestLimits(max_body_bytes=args.max_body_bytes, max_rows=args.max_rows,
                           max_prompt_chars=args.max_prompt_chars)
    settings = ServerSettings(workers=args.workers, queue=args.queue, read_timeout=args.read_timeout,
                              threads=args.threads)
    serve(args.model_uri, args.host, args.port, limits, settings, max_connections=args.max_connections)
    return 0
