"""`transgan convert`: official checkpoint -> transgan_hf folders (same as `python -m transgan_hf.convert_official`).

The pipeline is a folder, so the flag is `--output_dir`, as in training and `transgan generate` (`transgan_hf.cli`).
A checkpoint that does not fit the configuration is summarised in the error line (counts and first keys); `--verbose`
lists every key first, one per line on stderr.
"""

from __future__ import annotations

import argparse
import sys

from ..cli import CommandError, add_progress_argument, check_output_path
from ..convert_official import OFFICIAL_PRESETS, ConversionError, WeightMismatchError, convert


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert an official TransGAN checkpoint",
        description="Convert a checkpoint saved by the official TransGAN code (train_derived.py).",
    )
    parser.add_argument("--checkpoint", required=True, help="official checkpoint file")
    parser.add_argument("--output_dir", required=True, help="output folder")
    layout = parser.add_mutually_exclusive_group(required=True)
    layout.add_argument("--preset", choices=sorted(OFFICIAL_PRESETS), help="official configuration of the checkpoint")
    layout.add_argument("--official_args", help="JSON file with the official training flags")
    parser.add_argument("--weights", choices=["ema", "raw"], default="ema", help="EMA (default) or raw generator")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace everything in a non-empty --output_dir (refused if it holds an input file)")
    parser.add_argument("--verbose", action="store_true",
                        help="list every missing, misshapen and unmapped key of a checkpoint that does not fit")
    add_progress_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output_path(args.output_dir, "--output_dir", folder=True)
    try:
        out = convert(args.checkpoint, args.output_dir, args.preset, args.official_args, args.weights, args.overwrite,
                      progress=not args.no_progress)
    except WeightMismatchError as error:
        if args.verbose:
            for kind, entries in error.problems.items():
                print(f"{kind} of the {error.what} ({len(entries)}):", *(f"  {entry}" for entry in entries),
                      sep="\n", file=sys.stderr)
        hint = " Run again with --verbose to list every key." if error.shortened and not args.verbose else ""
        raise CommandError(f"{error}{hint}") from None
    except (ConversionError, OSError) as error:  # OSError: the output cannot be written (disk full, permissions)
        raise CommandError(str(error)) from None
    print(f"Converted {args.checkpoint} -> {out}")
    return 0
