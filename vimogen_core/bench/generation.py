"""Generating the benchmark's motions with a trained checkpoint, under a generation protocol
(bench/protocol.py), into `LoadedMotion`s and, optionally, a folder the runner can read back."""
from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from vimogen_core.bench.motions import LoadedMotion
from vimogen_core.bench.prompts import BenchPrompt
from vimogen_core.errors import MotionDataError
from vimogen_core.motion import metrics
from vimogen_core.motion.representation import check_features


def generate_motions(checkpoint: str | os.PathLike, prompts: Sequence[BenchPrompt], motions_dir: str | os.PathLike | None,
                     *, steps: int | None = None, cfg_scale: float | None = None, seed: int = 0,
                     batch_size: int = 32, cleanup: bool = True, protocol: str = "project",
                     prompts_path: str | os.PathLike | None = None, mbench_data: str | os.PathLike | None = None
                     ) -> tuple[dict[str, LoadedMotion], dict]:
    """Generate one motion per prompt with a trained checkpoint under `protocol`
    (bench/protocol.py: which text, length, branch, weights, sampler, guidance and joint decode);
    optionally save `{id}.npy` joints and `features/{id}.npy`. Prompts go in order of length so that
    each batch pads little; the generator seeds every motion by its position, so runs are
    reproducible. Returns the motions and what generated them (protocol, post-processing the
    generator applied (`cleanup=False`: none, the network's features as sampled), sampler, notes)."""
    from vimogen_core.bench.protocol import attach_embeddings, build_requests, get_protocol
    from vimogen_core.train.generate import load_generator

    spec = get_protocol(protocol)
    generator = load_generator(checkpoint, use_ema=spec.use_ema)
    if not cleanup or not spec.cleanup:
        generator.cleanup = None
    if spec.sampler is not None:
        generator.sampler = spec.sampler
    requests, notes = build_requests(spec, prompts, prompts_path, mbench_data)
    notes += attach_embeddings(requests, generator.text)
    cfg_scale = spec.cfg_scale if cfg_scale is None else cfg_scale
    options = {k: v for k, v in {"steps": steps, "cfg_scale": cfg_scale}.items() if v is not None}
    out: dict[str, LoadedMotion] = {r.prompt.key: LoadedMotion(None, None, r.error) for r in requests if r.error}
    ordered = sorted((r for r in requests if r.error is None), key=lambda r: (r.n_frames, r.prompt.global_id))
    generate = generator.generate
    if spec.long_motions_in_windows:
        from vimogen_core.control.timeline import generate_any_length, trained_window

        generate = partial(generate_any_length, generator)
        window = trained_window(generator)
        n_long = sum(1 for r in ordered if r.use_text and r.n_frames > window)
        if n_long:
            notes.append(f"{n_long} text-mode motions longer than {window} frames (80% of the checkpoint's longest "
                         "training window) continued in windows of that length")
    features = generate([r.text for r in ordered], n_frames=[r.n_frames for r in ordered],
                        ref_motions=[r.reference for r in ordered], seed=seed, batch_size=batch_size,
                        progress=True, **options) if ordered else []
    for request, feats in zip(ordered, features, strict=True):
        key = request.prompt.key
        feats = np.asarray(feats, dtype=np.float32)
        try:
            check_features(feats, f"generated:{key}")
            joints = metrics.validate_joints(spec.joints(feats), f"generated:{key}")
            out[key] = LoadedMotion(joints, feats)
        except MotionDataError as err:
            out[key] = LoadedMotion(None, None, str(err))
    if motions_dir is not None:
        motions_dir = Path(motions_dir)
        (motions_dir / "features").mkdir(parents=True, exist_ok=True)
        for key, motion in out.items():
            if motion.joints is not None:
                np.save(motions_dir / "features" / f"{key}.npy", motion.features)
                np.save(motions_dir / f"{key}.npy", motion.joints.astype(np.float32))
    info = {"protocol": spec.name, "postprocessing": generator.postprocessing,
            "sampler": generator.sampler_config.name, "weights": "EMA" if spec.use_ema else "raw",
            "joints_from": spec.joints_name, "cfg_scale": cfg_scale,
            "n_reference_mode": sum(1 for r in requests if not r.use_text and r.error is None),
            "n_text_mode": sum(1 for r in requests if r.use_text and r.error is None), "protocol_notes": notes}
    return out, info
