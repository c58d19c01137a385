"""`transgan convert`: official checkpoint -> transgan_hf folders (same as `python -m transgan_hf.convert_official`)."""

from __future__ import annotations

import argparse

from ..cli import CommandError
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
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output_dir")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        out = convert(args.checkpoint, args.output_dir, args.preset, args.official_args, args.weights, args.overwrite)
    except ConversionError as error:
        raise CommandError(str(error)) from None
    print(f"Converted {args.checkpoint} -> {out}")
    return 0
