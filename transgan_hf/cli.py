"""`transgan` command line: one sub-command per module of `transgan_hf.commands`.

Each command module defines `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
Errors a user can fix are raised as `CommandError` and printed as one line (no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "transgan_hf.commands.convert",
    "transgan_hf.commands.generate",
    "transgan_hf.commands.evaluate",
    "transgan_hf.commands.stats",
]


class CommandError(Exception):
    """A problem with the user's input or environment; printed as a single `error:` line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transgan",
        description="TransGAN (pure-transformer GAN) tools: sample images, convert official checkpoints, evaluate.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run through the package module so that `CommandError` is the class the commands raise.
    from transgan_hf.cli import main as package_main

    sys.exit(package_main())
