"""How MBench motions are generated: the project's protocol or the released evaluation's.

A protocol says which text a prompt feeds, how long each motion is, which entries run in reference
mode and on what, which weights, sampler and guidance generate, whether the clean-up runs, and how
joints are read from the features for scoring. `build_requests` turns prompts into one
`GenerationRequest` per prompt; the runner hands those to the Generator unchanged, so a test can
inspect exactly what each protocol asks for.

The released protocol follows RELEASED_RECIPE.md "Inference on MBench": the text is
`prompt_motion_detailed`; entries with `use_ref_motion` false are generated in text mode at 100
frames; entries with `use_ref_motion` true run in reference mode on their `motion_path` motion
(16 fps, linearly interpolated to 20 fps: T' = T * 20 // 16 frames), which sets the length; raw
weights, the released sampler, guidance 5, no clean-up; joints by integrating the velocity
channels from frame 0. The reference motions and the precomputed umT5 embeddings ship in the
separately downloaded MBench data (`--mbench-data DIR`, the released `data/mbench` layout); without
it the reference entries run in text mode, and the notes (and the report) say so.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vimogen_core.bench.prompts import BenchPrompt
from vimogen_core.errors import MotionDataError
from vimogen_core.motion.representation import features_to_joints, features_to_joints_integrated
from vimogen_core.sources.vimogen228k import read_pt

RELEASED_TEXT_FRAMES = 100  # the released evaluation's text-mode length (test_seq_len)
MBENCH_VIDEO_FPS = 16  # the Wan2.2 videos the reference motions were recovered from
FPS = 20
RELEASED_LAYOUT_PREFIX = "data/mbench/"  # how the prompt file names paths inside the MBench data


def _position_joints(feats: np.ndarray) -> np.ndarray:
    return np.asarray(features_to_joints(feats))


def _integrated_joints(feats: np.ndarray) -> np.ndarray:
    return features_to_joints_integrated(torch.from_numpy(np.asarray(feats, dtype=np.float32))).numpy()


@dataclass(frozen=True)
class Protocol:
    name: str
    text_field: str  # the MBench prompt field fed to the text branch
    text_frames: int | None  # text-mode length; None: the prompt's own (motion_duration x 20)
    reference_mode: bool  # `use_ref_motion` entries run in reference mode (given the MBench data)
    use_ema: bool
    sampler: str | None  # model/flow.py SAMPLERS; None: the checkpoint's training preset's
    cfg_scale: float | None  # None: the training preset's guidance_scale
    cleanup: bool
    joints: Callable[[np.ndarray], np.ndarray]  # (T, 276) features -> (T, 22, 3) joints for scoring
    joints_name: str
    # Text-mode motions longer than the checkpoint trained well are continued window by window
    # (control.timeline.generate_any_length) instead of sampled in one piece past its windows.
    long_motions_in_windows: bool = False


PROTOCOLS = {
    # The project's: the short `prompt` (what the local judge was trained to match) at its own
    # duration, EMA weights, the preset's sampler and guidance, the clean-up (which makes the two
    # joint decodes agree, so reading the position channels is exact).
    "project": Protocol("project", "prompt", None, False, True, None, None, True, _position_joints,
                        "position channels (126:192)", long_motions_in_windows=True),
    "released": Protocol("released", "prompt_motion_detailed", RELEASED_TEXT_FRAMES, True, False, "released", 5.0, False,
                         _integrated_joints, "velocity channels integrated from frame 0"),
}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown MBench protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}") from None


@dataclass
class GenerationRequest:
    """What the Generator is asked for one prompt."""

    prompt: BenchPrompt
    text: str
    n_frames: int
    reference: np.ndarray | None = None  # (T, 276) un-normalised 20 fps features: reference mode
    embedding_file: Path | None = None  # precomputed tokens of `text`
    error: str | None = None  # the request could not be built (e.g. an unreadable reference file)

    @property
    def use_text(self) -> bool:
        return self.reference is None


def resolve_mbench_path(mbench_data: Path, path: str) -> Path:
    """A path named in MBench_final.json (`data/mbench/...`) inside the user's MBench data folder,
    which is that `data/mbench` folder itself or a folder holding `data/mbench`."""
    relative = path[len(RELEASED_LAYOUT_PREFIX):] if path.startswith(RELEASED_LAYOUT_PREFIX) else path
    inside = mbench_data / relative
    return inside if inside.exists() or not (mbench_data / path).exists() else mbench_data / path


def resample_fps(motion: np.ndarray, src_fps: int = MBENCH_VIDEO_FPS, dst_fps: int = FPS) -> np.ndarray:
    """(T, C) -> (T * dst // src, C) by linear interpolation over time, end frames kept (align_corners)."""
    target = len(motion) * dst_fps // src_fps
    x = torch.from_numpy(np.ascontiguousarray(motion, dtype=np.float32)).T[None]  # (1, C, T)
    return torch.nn.functional.interpolate(x, size=target, mode="linear", align_corners=True)[0].T.numpy()


def load_tokens(path: Path) -> torch.Tensor:
    """A precomputed text embedding file: a tensor (L, D), read without unpickling code."""
    tokens = read_pt(path)
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        raise MotionDataError(path, f"expected a token tensor (L, D), got {getattr(tokens, 'shape', type(tokens).__name__)}")
    return tokens.float()


def _entries_by_id(prompts_path: str | os.PathLike | None) -> dict[int, dict]:
    if prompts_path is None:
        return {}
    entries = json.loads(Path(prompts_path).read_text(encoding="utf-8"))  # already validated by load_published_prompts
    return {int(entry["global_id"]): entry for entry in entries}


def build_requests(protocol: Protocol, prompts: Sequence[BenchPrompt], prompts_path: str | os.PathLike | None,
                   mbench_data: str | os.PathLike | None) -> tuple[list[GenerationRequest], list[str]]:
    """One request per prompt under `protocol`, and notes for the report (what could not be done
    as the protocol states, and why)."""
    from vimogen_core.sources.vimogen228k import load_vimogen_motion

    entries = _entries_by_id(prompts_path)
    mbench_data = None if mbench_data is None else Path(mbench_data)
    if mbench_data is not None and not mbench_data.is_dir():
        raise MotionDataError(mbench_data, "MBench data folder not found")
    requests, in_text_mode, no_field = [], 0, 0
    for prompt in prompts:
        entry = entries.get(prompt.global_id, {})
        text = str(entry.get(protocol.text_field) or "")
        if not text.strip():
            text, no_field = prompt.text, no_field + (protocol.text_field != "prompt")
        request = GenerationRequest(prompt, text, protocol.text_frames or prompt.n_frames)
        embed_key = f"{protocol.text_field}_wanvideot5_embed_path"
        if mbench_data is not None and entry.get(embed_key):
            candidate = resolve_mbench_path(mbench_data, str(entry[embed_key]))
            request.embedding_file = candidate if candidate.is_file() else None
        if protocol.reference_mode and entry.get("use_ref_motion"):
            if mbench_data is None:
                in_text_mode += 1
            else:
                try:
                    motion = load_vimogen_motion(resolve_mbench_path(mbench_data, str(entry["motion_path"])))["motion"]
                    request.reference = resample_fps(motion)
                    request.n_frames = len(request.reference)
                except (MotionDataError, KeyError) as err:
                    request.error = f"{prompt.key}: reference motion: {err}"
        requests.append(request)
    notes = []
    if in_text_mode:
        notes.append(f"{in_text_mode} use_ref_motion entries ran in text mode at {protocol.text_frames} frames: "
                     "no MBench data folder (--mbench-data) with their reference motions")
    if no_field:
        notes.append(f"{no_field} prompts have no {protocol.text_field!r}: their short prompt was used")
    return requests, notes


def attach_embeddings(requests: Sequence[GenerationRequest], text) -> list[str]:
    """Hand the precomputed embeddings to the generator's TextContext where their width fits its
    text encoder; notes say how many were used or why not."""
    files = [r for r in requests if r.embedding_file is not None and r.use_text]
    if not files:
        return []
    used, wrong_width = 0, 0
    for request in files:
        tokens = load_tokens(request.embedding_file)
        if tokens.shape[-1] != text.dim:
            wrong_width += 1
            continue
        text.add_precomputed(request.text, tokens)
        used += 1
    notes = [f"precomputed text embeddings used for {used} of {len(files)} text-mode prompts"]
    if wrong_width:
        notes.append(f"{wrong_width} precomputed embeddings not used: their width is not the model's text encoder's "
                     f"({text.dim}); the prompts were encoded with {text.encoder_name}")
    return notes
