"""`vimogen playground`: registered here without importing Gradio, so other commands stay fast."""
from __future__ import annotations

import argparse

DEFAULT_MODEL = "models:/vimogen@champion"


def register(subparsers: argparse._SubParsersAction) -> None:
    play = subparsers.add_parser("playground", help="a web page to try a model: prompt in, 3D motion out")
    source = play.add_mutually_exclusive_group()
    source.add_argument("--model", default=None,
                        help=f"an MLflow model URI (default {DEFAULT_MODEL}); any model registered with the project's "
                             "pyfunc wrapper, e.g. a ViMoGen-light student registered as vimogen-light")
    source.add_argument("--checkpoint", help="a training checkpoint (.pt) instead of the registry")
    play.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    play.add_argument("--port", type=int, default=7860)
    play.add_argument("--out", help="where generated files go (default: the state folder's playground/)")
    play.set_defaults(func=cmd_playground)


def cmd_playground(args) -> int:
    from playground.app import launch

    launch(model=args.model or (None if args.checkpoint else DEFAULT_MODEL), checkpoint=args.checkpoint,
           host=args.host, port=args.port, out=args.out)
    return 0
