"""`vimogen serve`: the registered pyfunc behind an HTTP front that holds under load and hostile input.

MLflow's scoring server (`mlflow models serve`, FastAPI under uvicorn) reads any body whole before
looking at it, parses it into a DataFrame, and hands it to a thread pool whose queue has no bound;
a failure's message quotes the whole input back. This front answers the same `/invocations` JSON
(pandas orientations in, `{"predictions": [...]}` out) and `/ping`, and adds what a pyfunc cannot do
from inside `predict`:

- the body is read in chunks and refused (413) past `max_body_bytes`, or (408) when it has not all
  arrived within `read_timeout` seconds; then every limit of `vimogen_core.control.requests` is
  checked before any model work, each refusal a 4xx with a one-line JSON `message`;
- `workers` threads share one loaded model; at most `workers + queue` requests are held (from their
  body's first byte to their answer), and one more is answered 503 with Retry-After at once, its
  body dropped unread, so memory is bounded by (workers + queue) bodies of at most `max_body_bytes`.

Requests are not batched together: a motion sampled in a batch of two differs from the same motion
sampled alone (by up to 9e-7 on the tiny model, same seed, same length, same prompt), so a request's
motions are exactly what the same request gets alone, which is what a seed promises.
"""
from __future__ import annotations

import asyncio
import json
import os
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from vimogen_core.control.requests import RequestError, RequestLimits, parse_body

JSON = b"application/json"
# A body past the limit is still read (and dropped) up to this size, so that a client that is still
# sending gets its 413 instead of a reset connection; past it the connection is closed.
DRAIN_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ServerSettings:
    workers: int = 1  # threads running the model; each request's rows are one generator call
    queue: int = 16  # checked requests waiting for a worker; one more is answered 503
    read_timeout: float = 10.0  # seconds for a whole body to arrive (408 after): a slow client holds a place no longer
    threads: int = 0  # torch threads for all workers together; 0: the CPUs this process may use

    def __post_init__(self):  # refused before the model loads
        if self.workers < 1 or self.queue < 0 or self.read_timeout <= 0 or self.threads < 0:
            raise ValueError(f"workers must be >= 1, queue and threads >= 0 and read_timeout > 0, got {self.workers}, "
                             f"{self.queue}, {self.threads} and {self.read_timeout:g}")


def load_pyfunc(model_uri: str):
    """The MLflow model at `model_uri` (a registry URI such as models:/vimogen@champion, runs:/ or a
    path), through the project's tracking URI; a missing model is one line, not MLflow's traceback."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from orchestration.resources import default_tracking_uri

    uri = default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except MlflowException as err:
        raise ValueError(f"{model_uri}: cannot load from the MLflow registry at {uri} ({err.message})") from None


def register_champion(checkpoint: str | os.PathLike, state: Path, name: str = "vimogen") -> str:
    """A training checkpoint as `models:/NAME@champion` of a new SQLite registry in `state`, registered
    the way the graph registers (orchestration.registry), for benchmarks and tests; returns the tracking URI."""
    from orchestration.registry import register_candidate
    from orchestration.resources import MLflowTracking, ProjectPaths

    uri = f"sqlite:///{Path(state) / 'mlflow.db'}"
    mlflow = MLflowTracking(tracking_uri=uri).setup(ProjectPaths(state_dir=str(state)))
    with mlflow.start_run() as run:
        pass
    version = register_candidate(mlflow, name, {"run_id": run.info.run_id, "checkpoint": str(checkpoint),
                                                "run_dir": str(Path(checkpoint).parent.parent)})
    mlflow.tracking.MlflowClient().set_registered_model_alias(name, "champion", version.version)
    return uri


def _error(status: int, message: str) -> tuple[int, bytes]:
    codes = {400: "BAD_REQUEST", 404: "ENDPOINT_NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 408: "REQUEST_TIMEOUT",
             413: "REQUEST_LIMIT_EXCEEDED", 415: "UNSUPPORTED_MEDIA_TYPE", 500: "INTERNAL_ERROR",
             503: "TEMPORARILY_UNAVAILABLE"}
    return status, json.dumps({"error_code": codes.get(status, "BAD_REQUEST"), "message": message}).encode()


def _resolve(future: asyncio.Future, reply) -> None:
    if not future.done():
        future.set_result(reply)


class ModelServer:
    """An ASGI app over a loaded pyfunc (its python model must have `generate_rows`, as VimogenPyfunc does)."""

    def __init__(self, model, limits: RequestLimits = RequestLimits(), settings: ServerSettings = ServerSettings()):
        self.python_model = model.unwrap_python_model()
        self.limits, self.settings = limits, settings
        self.admitted = 0  # requests queued or running; touched only on the event loop
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()  # bounded by `admitted`, not by itself
        self.threads = [threading.Thread(target=self._work, name=f"model-worker-{i}", daemon=True)
                        for i in range(settings.workers)]
        for thread in self.threads:
            thread.start()

    def _work(self) -> None:
        from mlflow.exceptions import MlflowException

        while True:
            job = self.jobs.get()
            if job is None:
                return
            rows, loop, future = job
            try:
                frame = self.python_model.generate_rows(rows)
                reply = 200, json.dumps({"predictions": frame.to_dict("records")}).encode()
            except MlflowException as err:  # the pyfunc's own refusals (bad_request) are 400s
                reply = _error(err.get_http_status_code(), " ".join(err.message.split()))
            except Exception:  # a bug, not the client's fault: logged whole, answered in one line
                traceback.print_exc(file=sys.stderr)
                reply = _error(500, "internal error while generating; the server log has the traceback")
            loop.call_soon_threadsafe(_resolve, future, reply)

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path in ("/ping", "/health"):
            status, body = (200, b"\n") if method in ("GET", "HEAD") else _error(405, f"{path} takes GET")
        elif path == "/version":
            from mlflow.version import VERSION

            status, body = 200, VERSION.encode()
        elif path == "/invocations":
            status, body = _error(405, "/invocations takes POST") if method != "POST" else \
                await self._invocations(scope, receive)
        else:
            status, body = _error(404, f"no endpoint {path}; try POST /invocations")
        headers = [(b"content-type", JSON), (b"content-length", str(len(body)).encode())]
        if status == 503:
            headers.append((b"retry-after", b"1"))
        if status in (408, 413):  # the rest of the body is not read: this connection cannot carry another request
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _invocations(self, scope, receive) -> tuple[int, bytes]:
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > DRAIN_BYTES):
            return _error(413, f"body of {declared.decode(errors='replace')[:20]} bytes; "
                               f"the limit is {self.limits.max_body_bytes}")
        if self.admitted >= self.settings.workers + self.settings.queue:  # before reading: a full server holds no more bodies
            body, refusal = await self._read_body(receive, keep=False)
            return refusal or _error(503, f"busy: {self.admitted} requests queued or running; retry shortly")
        self.admitted += 1  # from its first byte to its answer: at most workers + queue bodies are held
        try:
            body, refusal = await self._read_body(receive, keep=True)
            if refusal:
                return refusal
            try:
                rows = parse_body(body, headers.get(b"content-type", b"").decode("latin-1"), self.limits)
            except RequestError as err:
                return _error(err.status, str(err))
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            self.jobs.put((rows, loop, future))
            return await future
        finally:
            self.admitted -= 1

    async def _read_body(self, receive, keep: bool) -> tuple[bytes, tuple[int, bytes] | None]:
        """The body (b"" unless `keep`), or the refusal: past the limit (read on and dropped up to
        DRAIN_BYTES, so a client still sending gets its answer) or not all there within read_timeout."""
        limit, timeout = self.limits.max_body_bytes, self.settings.read_timeout
        deadline = time.monotonic() + timeout
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                return b"", _error(408, f"the body did not arrive within {timeout:g} s")
            if message["type"] == "http.disconnect":
                return b"", _error(400, "the client went away before sending its body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > DRAIN_BYTES:
                return b"", _error(413, f"body of more than {DRAIN_BYTES} bytes; the limit is {limit}")
            if keep and size <= limit:
                chunks.append(chunk)
            else:
                chunks = []
            if not message.get("more_body", False):
                break
        if size > limit:
            return b"", _error(413, f"body of {size} bytes; the limit is {limit}")
        return b"".join(chunks), None


def serve(model_uri: str, host: str = "127.0.0.1", port: int = 5001, limits: RequestLimits = RequestLimits(),
          settings: ServerSettings = ServerSettings(), max_connections: int = 128) -> None:
    """Load the model, then answer on host:port until interrupted (SIGTERM or Ctrl-C)."""
    import torch
    import uvicorn

    torch.set_num_threads(settings.threads or len(os.sched_getaffinity(0)))
    app = ModelServer(load_pyfunc(model_uri), limits, settings)
    print(f"serving {model_uri} on http://{host}:{port}/invocations ({settings.workers} worker(s), "
          f"queue {settings.queue}, pid {os.getpid()})", flush=True)
    # limit_concurrency: connections past it are answered 503 by uvicorn itself, before any reading
    uvicorn.run(app, host=host, port=port, log_level="warning", limit_concurrency=max_connections,
                timeout_keep_alive=5, h11_max_incomplete_event_size=64 * 1024)
