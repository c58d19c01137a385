"""`transgan evaluate`: FID / KID / IS of a TransGAN pipeline against reference statistics, as JSON.

Image `i` is generated with `torch.Generator().manual_seed(SeedSequence([seed, i]))`, so a result depends only on
`--seed` and `--num_images` (not on `--batch_size` or the device count).

Flags follow the shared vocabulary (`transgan_hf.cli`): the result is one file, so it is `--output_file` (folders are
`--output_dir`), and the dataset of the model card entry is `--dataset_name` / `--split`, as in `transgan stats` and
training. The former spellings `--output`, `--dataset` and `--dataset_split` still work for one release.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from ..atomic_files import write_text_atomically
from ..cli import (
    INPUT_ERRORS,
    CommandError,
    add_progress_argument,
    add_renamed_argument,
    as_command_error,
    check_minimums,
    check_output_path,
)
from .generate import resolve_device

EXAMPLES = """\
examples:
  transgan evaluate --model org/transgan-cifar10 --num_images 50000 --reference fid_stats_cifar10_train.npz
  transgan evaluate --model ./pipeline --reference cifar10_train.npz --metrics fid,kid,is --device cuda \\
      --update_model_card --dataset_name cifar10 --split train
  transgan evaluate --model ./mnist-demo --feature_extractor digits --reference mnist5k_digits.npz \\
      --metrics fid,is,confidence --num_images 5000        # reports fdd_mnist (not an FID), digit IS, confidence

The Inception network needs pt_inception-2015-12-05-6726825d.pth (--inception_weights, $TRANSGAN_INCEPTION_WEIGHTS
or the torch hub cache); nothing is downloaded. The JSON result goes to stdout (and to --output_file).
"""


def add_feature_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared with `transgan stats`: which feature network, its weights, the device and batch size."""
    parser.add_argument(
        "--feature_extractor", default="inception",
        help="inception (TTUR FID network, default), digits (MNIST demo classifier: metrics fdd_mnist, ...), or "
        "package.module:factory",
    )  # fmt: skip
    parser.add_argument("--inception_weights", metavar="PATH",
                        help="pt_inception-2015-12-05-6726825d.pth (default: $TRANSGAN_INCEPTION_WEIGHTS, torch hub)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    parser.add_argument("--batch_size", type=int, default=64, help="images per batch (default: 64)")


def load_feature_extractor(args: argparse.Namespace, device):
    from ..metrics import build_feature_extractor, resolve_inception_weights

    try:
        weights = None
        if args.feature_extractor == "inception":  # located here, so that a missing file names this command's flag
            weights = resolve_inception_weights(args.inception_weights, flag="--inception_weights")
        return build_feature_extractor(args.feature_extractor, weights_path=weights, device=device)
    except (*INPUT_ERRORS, ImportError) as error:  # ImportError: an optional dependency is not installed
        raise CommandError(f"cannot load --feature_extractor {args.feature_extractor!r}: {error}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="FID / KID / IS of a pipeline (JSON)",
        description="Generate images with a TransGAN pipeline and compute FID, KID and/or IS against reference "
        "statistics (TTUR protocol with the Inception network; a digit-classifier metric for the MNIST demo).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, metavar="ORG/NAME_OR_DIR", help="Hub repo id or pipeline folder")
    parser.add_argument("--reference", metavar="STATS.npz",
                        help="reference statistics (`transgan stats`, or the official fid_stat files); FID/KID")
    parser.add_argument("--num_images", type=int, default=50_000, help="generated images (default: 50000)")
    parser.add_argument("--metrics", default="fid", help="comma-separated: fid, kid, is, confidence, precision, "
                        "recall, density, coverage (default: fid)")
    parser.add_argument("--seed", type=int, default=0, help="image i uses seed SeedSequence([seed, i]) (default: 0)")
    add_feature_arguments(parser)
    parser.add_argument("--kid_subsets", type=int, default=100, help="KID subsets (default: 100)")
    parser.add_argument("--kid_subset_size", type=int, default=1000, help="KID subset size (default: 1000)")
    parser.add_argument("--is_splits", type=int, default=10, help="IS splits (default: 10)")
    parser.add_argument("--weights_kind", choices=["ema", "raw"],
                        help="record which generator weights the pipeline holds (default: read from its model card)")
    add_renamed_argument(parser, "--output_file", "--output", metavar="RESULT.json",
                         help="also write the JSON result to this file")
    parser.add_argument("--update_model_card", action="store_true",
                        help="write the results into the model card (README.md) of the --model folder")
    add_renamed_argument(parser, "--dataset_name", "--dataset",
                         help="dataset name for the model card entry, e.g. cifar10")
    add_renamed_argument(parser, "--split", "--dataset_split",
                         help="dataset split of the reference statistics, e.g. train")
    add_progress_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hub import resolve_pipeline_folder
    from ..metrics import METRICS, evaluate_generator, load_statistics
    from ..model_card import weights_kind_from_card
    from ..pipeline_transgan import TransGANPipeline

    metrics = [name.strip() for name in args.metrics.split(",") if name.strip()]
    unknown = sorted(set(metrics) - set(METRICS))
    if not metrics or unknown:
        raise CommandError(f"--metrics {args.metrics!r}: choose from {', '.join(METRICS)}.")
    check_minimums(args, {"num_images": 2, "seed": 0, "batch_size": 1, "kid_subsets": 1, "kid_subset_size": 2,
                          "is_splits": 1})
    if "is" in metrics and args.is_splits > args.num_images:
        raise CommandError(f"--is_splits {args.is_splits} is more than --num_images {args.num_images}; lower it.")
    if {"fid", "kid"} & set(metrics) and args.reference is None:
        raise CommandError("FID/KID need --reference STATS.npz (create it with `transgan stats`).")
    if args.update_model_card and not args.dataset_name:
        raise CommandError("--update_model_card needs --dataset_name (the dataset name shown in the model card).")
    if args.update_model_card and not os.path.isdir(args.model):
        raise CommandError("--update_model_card needs --model to be a local pipeline folder.")
    if args.output_file:
        check_output_path(args.output_file, "--output_file", folder=False)
    reference = None
    if args.reference is not None:
        with as_command_error():
            reference = load_statistics(args.reference)

    device = resolve_device(args.device)
    feature_extractor = load_feature_extractor(args, device)
    with as_command_error(f"cannot load --model {args.model!r}: "):
        folder = resolve_pipeline_folder(args.model)
        pipeline = TransGANPipeline.from_pretrained(folder).to(device)
    pipeline.set_progress_bar_config(disable=True)

    def generate(generators):
        return pipeline(batch_size=len(generators), generator=generators, output_type="pt").images

    started = time.perf_counter()
    try:
        result = evaluate_generator(
            generate, args.num_images, feature_extractor, reference, batch_size=args.batch_size, seed=args.seed,
            metrics=metrics, kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size,
            is_splits=args.is_splits, progress=not args.no_progress,
        )  # fmt: skip
    except ValueError as error:
        raise CommandError(str(error)) from None
    seconds = time.perf_counter() - started

    report = {
        "model": str(args.model),
        "weights": {"kind": args.weights_kind or weights_kind_from_card(folder), "path": str(folder / "generator")},
        "metrics": result["metrics"],
        "protocol": result["protocol"],
        "feature_extractor": result["feature_extractor"],
        "num_images": result["num_images"],
        "seed": result["seed"],
        "options": {"kid_subsets": args.kid_subsets, "kid_subset_size": args.kid_subset_size,
                    "is_splits": args.is_splits},  # the model card's protocol of KID and IS
        "reference": args.reference,
        "device": str(device),
        "seconds": round(seconds, 3),
    }
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.output_file:
        with as_command_error(f"cannot write --output_file {args.output_file!r}: "):
            Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(args.output_file, text + "\n")
    if args.update_model_card:
        from ..model_card import model_card_entries, update_model_card_metrics

        try:
            update_model_card_metrics(args.model, model_card_entries(report, args.dataset_name, args.split))
        except (OSError, ValueError) as error:
            raise CommandError(f"cannot update the model card: {error}") from None
    return 0
