"""`transgan` command line: one sub-command per module of `transgan_hf.commands`.

Each command module defines `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
Errors a user can fix are raised as `CommandError` and printed as one `error:` line on stderr, exit code 2 (no
traceback). Commands turn the errors of the user's input and environment into `CommandError` where that input is
read or the output written (`as_command_error`), so that a genuine bug elsewhere still shows its traceback.

Flags share one vocabulary, the training script's (diffusers' `train_unconditional.py`): `--output_dir` for a folder
written (generate, convert, export, training), `--output_file` for a single file (stats' `.npz`, evaluate's JSON,
interpolate's video), `--dataset_name` / `--dataset_config_name` / `--train_data_dir` / `--split` / `--resolution` for
data, `--model` for a pipeline, `--no_progress` to hide the progress bars (drawn on stderr). Spellings from before
(`--outdir`, `--out`, `--output`, `--dataset`, `--dataset_split`) still work for one release (`add_renamed_argument`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

COMMAND_MODULES = [
    "transgan_hf.commands.convert",
    "transgan_hf.commands.generate",
    "transgan_hf.commands.interpolate",
    "transgan_hf.commands.project",
    "transgan_hf.commands.export",
    "transgan_hf.commands.evaluate",
    "transgan_hf.commands.stats",
    "transgan_hf.commands.report",
]

INPUT_ERRORS = (OSError, ValueError, TypeError, SafetensorError)
"""What reading a user's file, folder or model (or writing an output) raises when the input, not the code, is at
fault."""


class CommandError(Exception):
    """A problem with the user's input or environment; printed as a single `error:` line."""


@contextlib.contextmanager
def as_command_error(prefix: str = "") -> Iterator[None]:
    """Re-raise `INPUT_ERRORS` of the block as a `CommandError` (message: `prefix` + the error's); wrap only the
    code that reads the input or writes the output."""
    try:
        yield
    except INPUT_ERRORS as error:
        raise CommandError(f"{prefix}{error}") from None


def check_minimums(args: argparse.Namespace, minimums: dict[str, int]) -> None:
    """Refuse flags below their minimum, e.g. `{"batch_size": 1}` (None = not given), before any work."""
    for name, minimum in minimums.items():
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise CommandError(f"--{name} must be >= {minimum}, got {value}.")


def check_output_path(path: str | os.PathLike, flag: str, folder: bool) -> Path:
    """Refuse an output path that cannot be written (checked before any work): a file where a folder is wanted or
    the reverse, or a file on the way to it."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise CommandError(f"{flag} {str(path)!r} is a file; pass a folder.")
    if not folder and path.is_dir():
        raise CommandError(f"{flag} {str(path)!r} is a folder; pass a file name.")
    existing = next(entry for entry in [path, *path.parents] if entry.exists() and (folder or entry != path))
    if not existing.is_dir():
        raise CommandError(f"{flag} {str(path)!r} cannot be created: {str(existing)!r} is a file.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CommandError(f"{flag} {str(path)!r} cannot be written: {str(existing)!r} is not writable.")
    return path


class DeprecatedSpelling(argparse.Action):
    """A flag's spelling from before the shared vocabulary: stores into the current flag's destination and prints a
    one-line notice naming the current flag on stderr (once per parse, even if given twice)."""

    def __init__(self, option_strings: list[str], dest: str, current: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.current = current
        self.noticed = False

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if not self.noticed:
            print(f"warning: {option_string} is deprecated and will be removed in the next release; use "
                  f"{self.current}.", file=sys.stderr)
            self.noticed = True
        setattr(namespace, self.dest, values)


def add_renamed_argument(parser: argparse.ArgumentParser, flag: str, *old_flags: str, required: bool = False,
                         **kwargs: Any) -> argparse.Action:
    """Add `flag` (argparse keywords in `kwargs`) and keep its former spellings `old_flags` working for one release,
    hidden from --help (`DeprecatedSpelling`). The spellings form a mutually exclusive group: any one satisfies
    `required`, and two at once are refused."""
    group = parser.add_mutually_exclusive_group(required=required)
    action = group.add_argument(flag, **kwargs)
    for old in old_flags:
        group.add_argument(old, action=DeprecatedSpelling, current=flag, dest=action.dest, type=action.type,
                           default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return action


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """`--no_progress`: every command that can run for more than a few seconds draws a progress bar on stderr."""
    parser.add_argument("--no_progress", action="store_true", help="no progress bar (drawn on stderr)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transgan",
        description="TransGAN (pure-transformer GAN) tools: sample images and latent walks, convert official "
                    "checkpoints, export to ONNX, evaluate.",
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
        print("error: " + " ".join(str(error).split()), file=sys.stderr)  # one line, whatever the message holds
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run through the package module so that `CommandError` is the class the commands raise.
    from transgan_hf.cli import main as package_main

    sys.exit(package_main())
