"""The `vimogen` command. Each area registers its own subcommands; errors print one line."""
from __future__ import annotations

import argparse
import importlib
import sys

from vimogen_core.errors import MotionDataError

# Modules that contribute subcommands through `register(subparsers)`.
COMMAND_MODULES = (
    "vimogen_core.motion.cli",
    "vimogen_core.curation.cli",
    "vimogen_core.train.cli",
    "vimogen_core.bench.cli",
    "vimogen_core.distill.cli",
    "playground.cli",  # the web page (a serving layer outside the library); Gradio loads only when it runs
    "orchestration.cli",  # `vimogen serve`: the registered model over HTTP; MLflow loads only when it runs
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vimogen", description="ViMoGen text-to-motion platform")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # area not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (MotionDataError, FileNotFoundError, ValueError, KeyError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"vimogen: error: {message}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
