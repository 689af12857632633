"""The one state folder: where generated, cached and trained files live.

`$VIMOGEN_STATE_DIR` when it is set, else the project-local `.state` of the repository checkout
(the folder above the `vimogen_core` package) - never the working directory or the home cache,
so every caller (body models, the local judge, the asset graph) agrees on one place.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def state_dir() -> Path:
    """$VIMOGEN_STATE_DIR, else `<repository>/.state`."""
    return Path(os.environ.get("VIMOGEN_STATE_DIR") or REPO_ROOT / ".state")
