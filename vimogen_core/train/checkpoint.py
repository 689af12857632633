"""Training checkpoints: one file per save, written atomically, loaded without unpickling code.

A checkpoint is a `torch.save` of plain containers (dicts, lists, tuples, numbers, strings and
tensors), so `torch.load(..., weights_only=True)` reads it. It holds the model and its fp32 EMA,
the optimizer, the step, every RNG state, the resolved training and model configs (JSON), the
normaliser statistics and the text encoder's name. An FSDP run also writes sharded checkpoints,
folders `step_NNNNNNNN.dcp` (train/fsdp.py) whose `meta.pt` is this payload without the tensors.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch

from vimogen_core.errors import MotionDataError, pickled_objects_refused
from vimogen_core.files import atomic_path
from vimogen_core.motion.representation import Normalizer

FORMAT = "vimogen-train-checkpoint/1"
CHECKPOINT_GLOB = "step_*.pt"
SHARDED_GLOB = "step_*.dcp"


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def sharded_checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.dcp"


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # This process's GPU only: reading every GPU's state would open a context on each of them.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["key"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(path: str | os.PathLike, *, step: int, train_config, model_config, text_encoder: str,
                    normalizer: Normalizer, model_state: dict, ema_state: dict, optimizer_state: dict | None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "step": int(step),
        "train_config": train_config.to_json(),
        "model_preset": train_config.model_preset,
        "model_config": json.dumps(dataclasses.asdict(model_config), sort_keys=True),
        "text_encoder": text_encoder,
        "normalizer": {"mean": torch.from_numpy(normalizer.mean.copy()), "std": torch.from_numpy(normalizer.std.copy())},
        "model": {k: v.detach().cpu() for k, v in model_state.items()},  # {} in a sharded checkpoint's meta.pt
        "ema": {k: v.detach().cpu() for k, v in ema_state.items()},
        "optimizer": optimizer_state,
        "rng": rng_state(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read and check a checkpoint file; every failure names the file."""
    path = Path(path)
    if not path.is_file():
        raise MotionDataError(path, "checkpoint file not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise pickled_objects_refused(path, err) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
        raise MotionDataError(path, f"not a readable training checkpoint ({err.__class__.__name__}: {str(err)[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MotionDataError(path, f"not a vimogen training checkpoint (expected format {FORMAT!r})")
    return payload


def checkpoint_normalizer(payload: dict) -> Normalizer:
    return Normalizer(payload["normalizer"]["mean"].numpy(), payload["normalizer"]["std"].numpy())


def latest_checkpoint(directory: str | os.PathLike, sharded: bool = False) -> Path | None:
    """The newest `.pt` checkpoint, or (sharded) the newest complete `.dcp` folder."""
    if sharded:
        found = sorted(p for p in Path(directory).glob(SHARDED_GLOB) if (p / "meta.pt").is_file())
    else:
        found = sorted(Path(directory).glob(CHECKPOINT_GLOB))
    return found[-1] if found else None


def prune_checkpoints(directory: str | os.PathLike, keep: int) -> None:
    for old in sorted(Path(directory).glob(CHECKPOINT_GLOB))[:-keep]:
        old.unlink(missing_ok=True)
    for old in sorted(Path(directory).glob(SHARDED_GLOB))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def check_state_dict(path, preset: str, model: torch.nn.Module, state: dict) -> None:
    """Raise a clear error when `state` does not fit `model` (a checkpoint of another preset)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        details = []
        if wrong:
            details.append(f"{len(wrong)} parameter shape(s) differ, e.g. {wrong[0]}")
        if missing:
            details.append(f"{len(missing)} missing, e.g. {missing[0]}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
        raise MotionDataError(path, f"weights do not fit model preset {preset!r}: " + "; ".join(details))
