"""`transgan convert`: official checkpoint -> transgan_hf folders (same as `python -m transgan_hf.convert_official`)."""

from __future__ import annotations

import argparse

from ..cli import CommandError, check_output_path
from ..convert_official import OFFICIAL_PRESETS, ConversionError, convert


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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output_path(args.output_dir, "--output_dir", folder=True)
    try:
        out = convert(args.checkpoint, args.output_dir, args.preset, args.official_args, args.weights, args.overwrite)
    except (ConversionError, OSError) as error:  # OSError: the output cannot be written (disk full, permissions)
        raise CommandError(str(error)) from None
    print(f"Converted {args.checkpoint} -> {out}")
    return 0
