"""Atomic file writes: a reader sees the old file or the new one, never part of one.

Every writer in the library goes through `atomic_path` (or the two calls it is made of, for a
writer that streams into a file over many calls). The data goes to a hidden temporary file in
the target's own folder (a rename is atomic only within one file system), under a name unique to
this writer (process id and a random token, so concurrent threads or processes never share
one); the file is flushed to disk, renamed over the target, and the folder is flushed too, so a
crash after the write returns can bring back neither the old file nor an empty one. A writer
that raises leaves the old file as it was and no temporary behind.
"""
from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_MARKER = ".tmp-"  # in every temporary name, so `remove_stale_temporaries` finds a killed run's leftovers


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A fresh hidden name next to `path` that ends in the same suffix (imageio and PIL pick
    their format by it)."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")


def replace_durably(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """fsync `tmp`, rename it over `path`, fsync the folder; returns `path`."""
    path = Path(path)
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path to write; on leaving without an error it replaces `path`, on an
    error it is deleted. For writers that take a file name: np.save, torch.save, Parquet, video."""
    tmp = temporary_sibling(path)
    try:
        yield tmp
        replace_durably(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, value, **dumps_options) -> Path:
    """`json.dumps(value, **dumps_options)` as UTF-8."""
    return atomic_write_text(path, json.dumps(value, **dumps_options))


def remove_stale_temporaries(directory: str | os.PathLike) -> int:
    """Delete the temporaries a killed run left in `directory`; returns how many."""
    removed = 0
    for path in Path(directory).glob(f".*{TEMP_MARKER}*"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
