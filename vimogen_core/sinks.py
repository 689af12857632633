"""Metric sinks: how library code reports progress and metrics without knowing who listens.

The library never imports MLflow or Dagster; the orchestration layer passes an object with these
methods (an MLflow run, Dagster's logger, a test recorder). `log_artifact` is optional: callers
check for it with `getattr(sink, "log_artifact", None)`.
"""
from __future__ import annotations

import sys
from typing import Protocol, TextIO, runtime_checkable


@runtime_checkable
class MetricSink(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_text(self, message: str) -> None: ...


class NullSink:
    """Discards everything (the default)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_text(self, message: str) -> None:
        pass

    def log_artifact(self, path) -> None:
        pass


class PrintSink:
    """Writes one line per call to a stream. Lines go through `tqdm.write` so that they do not
    break a progress bar that is drawing on the same terminal."""

    def __init__(self, stream: TextIO | None = None, prefix: str = ""):
        self.stream = stream
        self.prefix = prefix

    def _write(self, line: str) -> None:
        from tqdm import tqdm

        tqdm.write(self.prefix + line, file=self.stream if self.stream is not None else sys.stderr)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        values = " ".join(f"{key}={value:.4g}" for key, value in metrics.items())
        self._write(f"step {step}: {values}")

    def log_text(self, message: str) -> None:
        self._write(message)

    def log_artifact(self, path) -> None:
        self._write(f"artifact: {path}")


class RecordingSink:
    """Keeps everything in memory (for callers that want the history afterwards, and for tests)."""

    def __init__(self):
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.texts: list[str] = []
        self.artifacts: list[str] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_text(self, message: str) -> None:
        self.texts.append(message)

    def log_artifact(self, path) -> None:
        self.artifacts.append(str(path))
