"""`vimogen train` and `vimogen generate`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

EXPORT_FORMATS = ("bvh", "glb", "npz", "mp4", "gif")


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train the DiT (single process, or under torchrun)",
                                  description="Pick a training preset and override fields; under "
                                              "`torchrun --nproc_per_node N -m vimogen_core.cli train ...` "
                                              "the global batch is split over the processes (--set parallel=fsdp "
                                              "shards the model: FSDP2).")
    train.add_argument("--preset", default="tiny", help="training preset (tiny, small, base, released)")
    train.add_argument("--out", required=True, help="run folder (checkpoints/, text_cache/)")
    train.add_argument("--steps", type=int, help="total optimisation steps")
    train.add_argument("--device", help="cpu, cuda, cuda:N, or auto (the GPU where there is one)")
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
    gen.add_argument("--steps", type=int, default=None,
                     help="Euler steps (default: 50, or 4 for a ViMoGen-light checkpoint)")
    gen.add_argument("--cfg", type=float, default=None,
                     help="classifier-free guidance scale (text mode; default: the training preset's)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--batch-size", type=int, default=32)
    gen.add_argument("--checkpoint", required=True, help="training checkpoint (.pt)")
    gen.add_argument("--preset", help="fail unless the checkpoint holds this model preset")
    gen.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, or auto")
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("--export", default="", help=f"comma list of extra formats: {','.join(EXPORT_FORMATS)}")
    control = gen.add_argument_group("motion control (README: Motion control; text mode, one prompt)")
    control.add_argument("--keyframes", metavar="FILE.json", help="joint positions or full-body poses at frames")
    control.add_argument("--trajectory", metavar="FILE", help="the pelvis's ground path (.json or (T, 2) .npy)")
    control.add_argument("--keep-joints", metavar="upper|lower|LIST",
                         help="keep these joints of --source (comma list of names or indices)")
    control.add_argument("--source", metavar="FEATS.npy", help="the motion --keep-joints keeps joints of")
    control.add_argument("--continue", dest="continue_from", metavar="FEATS.npy",
                         help="continue this motion: the result starts with it")
    control.add_argument("--timeline", metavar="FILE.json", help="(prompt, seconds) segments -> one long motion")
    control.add_argument("--control-method", default="inpaint", choices=("inpaint", "guidance"),
                         help="how the sampler is steered toward the constraints")
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


def _slug(text: str, index: int) -> str:
    words = "".join(ch if ch.isalnum() else "_" for ch in text.lower()).split("_")
    return f"{index:03d}_" + "_".join(w for w in words if w)[:48]


def _constraints(args) -> list:
    """The control flags as constraint objects, each file read and checked; [] without any."""
    from vimogen_core.control import files
    from vimogen_core.control.constraints import ConstraintError, KeepJoints, Prefix, combine
    from vimogen_core.motion.representation import load_features

    if args.timeline and (args.keyframes or args.trajectory or args.keep_joints or args.continue_from):
        raise ConstraintError("--timeline cannot be combined with other control flags")
    if bool(args.keep_joints) != bool(args.source):
        raise ConstraintError("--keep-joints and --source go together")
    constraints = []
    if args.keyframes:
        constraints.append(files.read_keyframes(args.keyframes))
    if args.trajectory:
        constraints.append(files.read_trajectory(args.trajectory))
    if args.keep_joints:
        group = args.keep_joints if args.keep_joints in ("upper", "lower") else [
            int(j) if j.strip().isdigit() else j.strip() for j in args.keep_joints.split(",")]
        constraints.append(KeepJoints(load_features(args.source), group))
    if args.continue_from:
        constraints.append(Prefix(load_features(args.continue_from)))
    if constraints:
        combine(constraints, args.frames)  # every check before any sampling
    if args.timeline:
        from vimogen_core.control.timeline import check_timeline

        check_timeline(files.read_timeline(args.timeline))
    return constraints


def cmd_generate(args) -> int:
    import numpy as np
    import torch

    from vimogen_core.motion.export import export_features, save_joints_npy
    from vimogen_core.motion.representation import features_to_joints, load_features
    from vimogen_core.train.generate import load_generator, read_prompt_file

    formats = [f.strip().lower() for f in args.export.split(",") if f.strip()]
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise ValueError(f"unknown export format(s) {', '.join(unknown)}; choose from {', '.join(EXPORT_FORMATS)}")
    if args.prompts and args.prompt:
        raise ValueError("give either a prompt or --prompts FILE, not both")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    prompts = read_prompt_file(args.prompts) if args.prompts else [args.prompt or ""]
    refs = None
    if args.ref_motion:
        refs = [load_features(args.ref_motion)] * len(prompts)
    constraints = _constraints(args)  # read and checked before the model loads
    if (constraints or args.timeline) and (refs is not None or len(prompts) != 1):
        raise ValueError("motion control takes one text prompt (no --ref-motion, no --prompts)")
    from vimogen_core.hardware import resolve_device

    generator = load_generator(args.checkpoint, device=str(resolve_device(args.device)), expected_preset=args.preset)
    steps = generator.default_steps if args.steps is None else args.steps
    if args.timeline:
        from vimogen_core.control.files import read_timeline
        from vimogen_core.control.timeline import generate_timeline

        segments = read_timeline(args.timeline)
        prompts = [" / ".join(s.prompt for s in segments)]
        motions = [generate_timeline(generator, segments, steps=steps, cfg_scale=args.cfg, seed=args.seed,
                                     method=args.control_method, progress=True)]
    elif constraints:
        from vimogen_core.control.constraints import combine
        from vimogen_core.control.sampling import generate_controlled

        motions = generate_controlled(generator, prompts, [combine(constraints, args.frames)], steps=steps,
                                      cfg_scale=args.cfg, seed=args.seed, method=args.control_method)
    else:  # text-mode motions longer than the checkpoint's windows are continued window by window
        from vimogen_core.control.timeline import generate_any_length

        motions = generate_any_length(generator, prompts, [args.frames] * len(prompts), ref_motions=refs, steps=steps,
                                      cfg_scale=args.cfg, seed=args.seed, batch_size=args.batch_size,
                                      progress=len(prompts) > args.batch_size)
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
                      "mode": "reference" if refs else "text",
                      "control": [type(c).__name__ for c in constraints] + (["timeline"] if args.timeline else [])})
    (out / "generated.json").write_text(json.dumps({"checkpoint": str(args.checkpoint), "steps": steps,
                                                    "cfg": generator.train_config.guidance_scale if args.cfg is None else args.cfg, "seed": args.seed, "motions": index}, indent=1))
    print(f"{out}: {len(motions)} motion(s) written")
    return 0
