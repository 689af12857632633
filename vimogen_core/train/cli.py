"""`vimogen train` and `vimogen generate`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

EXPORT_FORMATS = ("bvh", "npz", "mp4", "gif")


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train the DiT (single process, or under torchrun)",
                                  description="Pick a training preset and override fields; under "
                                              "`torchrun --nproc_per_node N -m vimogen_core.cli train ...` "
                                              "the global batch is split over the processes.")
    train.add_argument("--preset", default="tiny", help="training preset (tiny, small, released)")
    train.add_argument("--out", required=True, help="run folder (checkpoints/, text_cache/)")
    train.add_argument("--steps", type=int, help="total optimisation steps")
    train.add_argument("--device", help="cpu, cuda, cuda:1 ...")
    train.add_argument("--data", help="'builtin' or a curated shard manifest.parquet")
    train.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                       help="override a TrainConfig field, or model.FIELD for the DiT config (repeatable)")
    train.add_argument("--resume", help="a checkpoint file, or 'auto' for the latest one in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bar or metric lines")
    train.set_defaults(func=cmd_train)

    gen = subparsers.add_parser("generate", help="generate motions from text (or a reference motion)")
    gen.add_argument("prompt", nargs="?", help="what the person does")
    gen.add_argument("--prompts", help="a text file with one prompt per line (batch generation)")
    gen.add_argument("--frames", type=int, default=100, help="motion length in frames (20 fps)")
    gen.add_argument("--ref-motion", help="(T, 276) features .npy: generate in reference mode")
    gen.add_argument("--steps", type=int, default=50, help="Euler steps")
    gen.add_argument("--cfg", type=float, default=None,
                     help="classifier-free guidance scale (text mode; default: the training preset's)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--batch-size", type=int, default=32)
    gen.add_argument("--checkpoint", required=True, help="training checkpoint (.pt)")
    gen.add_argument("--preset", help="fail unless the checkpoint holds this model preset")
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("--export", default="", help=f"comma list of extra formats: {','.join(EXPORT_FORMATS)}")
    gen.set_defaults(func=cmd_generate)


def cmd_train(args) -> int:
    from vimogen_core.sinks import NullSink, PrintSink
    from vimogen_core.train.config import apply_overrides, get_train_preset
    from vimogen_core.train.loop import train

    config = get_train_preset(args.preset)
    overrides = list(args.assignments)
    for key in ("steps", "device", "data"):
        if getattr(args, key) is not None:
            overrides.append(f"{key}={getattr(args, key)}")
    config = apply_overrides(config, overrides)
    result = train(config, args.out, sink=NullSink() if args.quiet else PrintSink(), resume=args.resume,
                   progress=not args.quiet)
    print(json.dumps({"checkpoint": str(result.checkpoint), "step": result.step, "final_loss": result.final_loss,
                      "wall_s": round(result.wall_s, 2), "samples_per_s": round(result.samples_per_s, 2)}))
    return 0


def _read_prompts(path: str) -> list[str]:
    from vimogen_core.errors import MotionDataError

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise MotionDataError(path, "prompts file not found") from None
    except UnicodeDecodeError:
        raise MotionDataError(path, "prompts file is not UTF-8 text") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise MotionDataError(path, "prompts file has no prompts")
    return prompts


def _slug(text: str, index: int) -> str:
    words = "".join(ch if ch.isalnum() else "_" for ch in text.lower()).split("_")
    return f"{index:03d}_" + "_".join(w for w in words if w)[:48]


def cmd_generate(args) -> int:
    import numpy as np
    import torch

    from vimogen_core.motion.cli import export_features
    from vimogen_core.motion.export import save_joints_npy
    from vimogen_core.motion.representation import features_to_joints, load_features
    from vimogen_core.train.generate import load_generator

    formats = [f.strip().lower() for f in args.export.split(",") if f.strip()]
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise ValueError(f"unknown export format(s) {', '.join(unknown)}; choose from {', '.join(EXPORT_FORMATS)}")
    if args.prompts and args.prompt:
        raise ValueError("give either a prompt or --prompts FILE, not both")
    prompts = _read_prompts(args.prompts) if args.prompts else [args.prompt or ""]
    refs = None
    if args.ref_motion:
        refs = [load_features(args.ref_motion)] * len(prompts)
    generator = load_generator(args.checkpoint, device=args.device, expected_preset=args.preset)
    motions = generator.generate(prompts, args.frames, ref_motions=refs, steps=args.steps, cfg_scale=args.cfg,
                                 seed=args.seed, batch_size=args.batch_size, progress=len(prompts) > args.batch_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for i, (prompt, feats) in enumerate(zip(prompts, motions)):
        stem = _slug(prompt or "reference", i)
        np.save(out / f"{stem}.features.npy", feats)
        save_joints_npy(out / f"{stem}.joints.npy", features_to_joints(torch.from_numpy(feats)).numpy())
        for fmt in formats:
            export_features(feats, fmt, str(out / f"{stem}.{fmt}"))
        index.append({"prompt": prompt, "stem": stem, "frames": int(len(feats)),
                      "mode": "reference" if refs else "text"})
    (out / "generated.json").write_text(json.dumps({"checkpoint": str(args.checkpoint), "steps": args.steps,
                                                    "cfg": generator.train_config.guidance_scale if args.cfg is None else args.cfg, "seed": args.seed, "motions": index}, indent=1))
    print(f"{out}: {len(motions)} motion(s) written")
    return 0
