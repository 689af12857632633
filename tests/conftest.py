"""Shared test set-up: telemetry off, offline, and where the published reference files live."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestration.quiet import QUIET_ENV

for _name, _value in QUIET_ENV.items():
    os.environ.setdefault(_name, _value)

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The published reference files (MBench prompts, released statistics), read in place."""
    return Path(os.environ.get("VIMOGEN_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    assert path.is_dir(), f"reference files not found at {path}; set VIMOGEN_SHARED_DIR"
    return path
