"""`transgan stats`: reference statistics (`mu`, `sigma` [+ `features`]) of a dataset as `.npz`, for FID/KID."""

from __future__ import annotations

import argparse
import json

from ..cli import CommandError, as_command_error, check_minimums, check_output_path
from .evaluate import add_feature_arguments, load_feature_extractor
from .generate import resolve_device

EXAMPLES = """\
examples:
  transgan stats --dataset_name cifar10 --split train --out cifar10_train.npz
  transgan stats --train_data_dir ./church_images --resolution 256 --out church_256.npz --device cuda
  transgan stats --dataset_name mnist-5k --feature_extractor digits --save_features --out mnist5k_digits.npz

Images are used at their own size unless --resolution is given (resize of the shorter side + centre crop, as in
training); mnist-5k defaults to 32, the resolution the demo trains at. The file records the feature network, so it is
never compared with statistics of another network.
"""

MNIST_DEFAULT_RESOLUTION = 32


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stats",
        help="reference statistics of a dataset (.npz)",
        description="Compute FID reference statistics (feature mean and covariance) of a dataset.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset_name", help="Hub dataset id, a save_to_disk folder, or mnist-5k")
    source.add_argument("--train_data_dir", help="folder of images")
    parser.add_argument("--dataset_config_name", help="configuration of the Hub dataset")
    parser.add_argument("--split", default="train", help="dataset split (default: train)")
    parser.add_argument("--image_column", help="image column (default: detected)")
    parser.add_argument("--resolution", type=int, help="resize + centre-crop to this size (default: native size)")
    parser.add_argument("--max_images", type=int, help="use at most this many images (default: all)")
    parser.add_argument("--out", required=True, metavar="STATS.npz", help="output file")
    parser.add_argument("--save_features", action="store_true",
                        help="also store the features (needed for KID; large for Inception: N x 2048 float32)")
    parser.add_argument("--cache_dir", help="datasets cache folder")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    add_feature_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import MNIST_5K, find_image_column, load_image_dataset
    from ..metrics import compute_reference_statistics, reference_batches, save_statistics

    if not args.out.endswith(".npz"):
        raise CommandError(f"--out must end in .npz, got {args.out!r}.")
    check_output_path(args.out, "--out", folder=False)
    check_minimums(args, {"max_images": 2, "resolution": 1, "batch_size": 1})
    resolution = args.resolution
    if resolution is None and args.dataset_name == MNIST_5K:
        resolution = MNIST_DEFAULT_RESOLUTION
    device = resolve_device(args.device)
    feature_extractor = load_feature_extractor(args, device)  # first: missing weights fail before a long data load
    with as_command_error():
        dataset = load_image_dataset(
            args.dataset_name, args.train_data_dir, args.dataset_config_name, args.split, args.cache_dir
        )
        column = find_image_column(dataset, args.image_column)
    num_images = len(dataset) if args.max_images is None else min(args.max_images, len(dataset))
    batches = reference_batches(dataset, column, num_images, args.batch_size, resolution)
    try:
        statistics = compute_reference_statistics(
            batches, feature_extractor, keep_features=args.save_features, progress=not args.no_progress,
            total=num_images,
        )  # fmt: skip
        path = save_statistics(args.out, statistics)
    except (OSError, ValueError) as error:  # unreadable images (named), different sizes, --out not writable
        raise CommandError(str(error)) from None
    summary = {
        "out": str(path),
        "num_images": statistics.num_images,
        "feature_extractor": statistics.feature_extractor,
        "protocol": feature_extractor.protocol,
        "resolution": resolution,
        "with_features": args.save_features,
        "source": args.dataset_name or args.train_data_dir,
        "split": args.split,
    }
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0

