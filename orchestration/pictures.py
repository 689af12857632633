"""Pictures and tables for asset metadata: PNGs embedded in markdown, so the UI shows them inline."""
from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import numpy as np


def png_markdown(path: Path, title: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"**{title}**\n\n![{title}](data:image/png;base64,{data})\n"


def table_markdown(rows: dict[str, object], key: str = "name", value: str = "count") -> str:
    lines = [f"| {key} | {value} |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows.items()]
    return "\n".join(lines)


# pyplot and its mathtext parser (the log axis's 10^k tick labels) keep global state: two runs of the
# graph in one process (in-process executor, threads) must not plot at the same time.
_PYPLOT_LOCK = threading.Lock()


def loss_curve_png(metrics_jsonl: Path, out: Path) -> Path | None:
    with _PYPLOT_LOCK:
        return _loss_curve_png(metrics_jsonl, out)


def _loss_curve_png(metrics_jsonl: Path, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return None
    steps = np.array([r["step"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.plot(steps, loss, lw=0.8, alpha=0.5, label="loss")
    if len(loss) >= 10:
        k = max(1, len(loss) // 20)
        ax.plot(steps[k - 1:], np.convolve(loss, np.ones(k) / k, mode="valid"), lw=1.6, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def rows_markdown(rows: list[dict], columns: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")).replace("|", "/") for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def composition_markdown(by_source: dict, by_subset: dict, by_split: dict) -> str:
    parts = [("source", by_source), ("subset", by_subset), ("split", by_split)]
    return "\n\n".join(table_markdown(counts, kind, "samples") for kind, counts in parts if counts)
