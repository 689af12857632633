"""Errors that name the offending input, so users can find and fix the file."""
from __future__ import annotations

import os


class MotionDataError(ValueError):
    """Bad motion data: `str(err)` is "<path>: <reason>"."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)
