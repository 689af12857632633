"""Retry with backoff for calls that cross the network (MLflow tracking server, S3, PostgreSQL): a
transient failure is retried after a growing wait and logged as it happens; when the attempts are
spent the error names what was being done and how long it was tried."""
from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

T = TypeVar("T")
LOG = logging.getLogger("vimogen.retry")  # deploy/dagster.yaml routes it into the Dagster run log

# Words of error messages that mean "try again later": a refused or reset connection, a timeout, a
# server restarting or overloaded (HTTP 5xx / 429), a database not accepting connections yet.
_TRANSIENT_WORDS = ("connection refused", "connection reset", "connection aborted", "timed out", "timeout",
                    "max retries exceeded", "temporarily unavailable", "service unavailable", "bad gateway",
                    "too many requests", "server closed the connection", "could not connect", "starting up",
                    "the database system is", "broken pipe", "remote end closed", "error code 500",
                    "error code 502", "error code 503", "error code 504", "internal_error", "database is locked")


# ... and words that mean the same call will fail the same way however often it is tried, even when the
# error's type is one that usually means a lost connection (psycopg2's OperationalError says both).
_PERMANENT_WORDS = ("authentication failed", "password", "permission denied", "does not exist", "no such")


class RetriesExhausted(RuntimeError):
    """A retried call that kept failing; the message says what it was, how often and how long it was tried."""


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; the wait before retry n is first_wait_s * 2**(n-1), at most max_wait_s,
    with up to 25% random jitter so clients restarted together do not retry in step."""

    attempts: int = 6
    first_wait_s: float = 1.0
    max_wait_s: float = 30.0

    def __post_init__(self):
        if self.attempts < 1 or self.first_wait_s < 0 or self.max_wait_s < self.first_wait_s:
            raise ValueError(f"retry policy: attempts >= 1 and 0 <= first_wait_s <= max_wait_s, got {self}")

    @classmethod
    def from_environment(cls) -> "RetryPolicy":
        """VIMOGEN_RETRY_ATTEMPTS / VIMOGEN_RETRY_FIRST_WAIT_S / VIMOGEN_RETRY_MAX_WAIT_S, else the defaults."""
        default = cls()
        return cls(attempts=int(os.environ.get("VIMOGEN_RETRY_ATTEMPTS", default.attempts)),
                   first_wait_s=float(os.environ.get("VIMOGEN_RETRY_FIRST_WAIT_S", default.first_wait_s)),
                   max_wait_s=float(os.environ.get("VIMOGEN_RETRY_MAX_WAIT_S", default.max_wait_s)))

    def wait_s(self, retry: int) -> float:
        base = min(self.max_wait_s, self.first_wait_s * 2 ** (retry - 1))
        return base * (1 + 0.25 * random.random())


def is_transient(error: BaseException) -> bool:
    """Whether `error` (or what caused it) looks like a network or server hiccup worth retrying, as
    opposed to a mistake that fails the same way every time (missing object, bad request, bad credentials)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if any(word in str(error).lower() for word in _PERMANENT_WORDS):
            return False
        if isinstance(error, (ConnectionError, TimeoutError)):
            return True
        if type(error).__name__ in {"EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError",
                                    "ConnectTimeoutError", "OperationalError", "InterfaceError"}:
            return True  # botocore's connection errors; psycopg2 / SQLAlchemy losing the database
        status = getattr(error, "response", None)
        code = status.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(status, dict) else None
        if code in (429, 500, 502, 503, 504):  # an S3 server error answered through botocore
            return True
        if any(word in str(error).lower() for word in _TRANSIENT_WORDS):
            return True
        error = error.__cause__ or error.__context__
    return False


def with_retries(what: str, call: Callable[[], T], policy: RetryPolicy | None = None,
                 log: logging.Logger | None = LOG) -> T:
    """`call()`, retried on transient errors under `policy` (default: from the environment). Each retry
    is logged with `what` and the error (log=None: waiting for a server known to be starting, not worth
    a line); a non-transient error is raised at once; the last transient one is raised as
    RetriesExhausted naming `what`."""
    policy = policy or RetryPolicy.from_environment()
    started, attempt = time.monotonic(), 1
    while True:
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - classified below; anything else is re-raised as it is
            if not is_transient(error):
                raise
            if attempt == policy.attempts:
                raise RetriesExhausted(f"{what}: still failing after {attempt} attempts over "
                                       f"{time.monotonic() - started:.0f} s: {type(error).__name__}: {error}") from error
            wait = policy.wait_s(attempt)
            if log is not None:
                log.warning(f"{what}: {type(error).__name__}: {_first_line(error)}; retry {attempt} of "
                            f"{policy.attempts - 1} in {wait:.1f} s")
            time.sleep(wait)
            attempt += 1


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else repr(error)
