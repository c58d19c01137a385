"""`transgan stats`: reference statistics (`mu`, `sigma` [+ `features`]) of a dataset as `.npz`, for FID/KID.

The statistics are one file, so the flag is `--output_file` (folders are `--output_dir`, see `transgan_hf.cli`);
`--out`, its former spelling, still works for one release.

Images are measured at the size the evaluated model generates: `--resolution`, else the image size of `--model`'s
generator (mnist-5k: 32, the size the demo trains at). Never at the images' own size, which would not match the
generated images (STL-10, for one, is 96 px on disk and 48 px in the paper), so without either flag the command stops
and asks for one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator

from ..cli import (
    CommandError,
    add_progress_argument,
    add_renamed_argument,
    as_command_error,
    check_minimums,
    check_output_path,
)
from .evaluate import add_feature_arguments, load_feature_extractor
from .generate import resolve_device

EXAMPLES = """\
examples:
  transgan stats --dataset_name cifar10 --split train --resolution 32 --output_file cifar10_train.npz
  transgan stats --train_data_dir ./church_images --model org/transgan-church --output_file church_256.npz --device cuda
  transgan stats --dataset_name mnist-5k --feature_extractor digits --save_features --output_file mnist5k_digits.npz

Images are resized (shorter side) and centre-cropped to --resolution, or to the image size of --model's generator, as
in training; mnist-5k defaults to 32, the resolution the demo trains at. The file records the feature network, so it
is never compared with statistics of another network.
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
    parser.add_argument("--resolution", type=int,
                        help="resize + centre-crop to this size (default: the image size of --model; needed without "
                             "it, except for mnist-5k: 32)")
    parser.add_argument("--model", metavar="ORG/NAME_OR_DIR",
                        help="take --resolution from this pipeline's generator (Hub repo id or folder; only its "
                             "config is read)")
    parser.add_argument("--max_images", type=int, help="use at most this many images (default: all)")
    add_renamed_argument(parser, "--output_file", "--out", required=True, metavar="STATS.npz", help="output file")
    parser.add_argument("--save_features", action="store_true",
                        help="also store the features (needed for KID; large for Inception: N x 2048 float32)")
    parser.add_argument("--cache_dir", help="datasets cache folder")
    add_progress_argument(parser)
    add_feature_arguments(parser)
    parser.set_defaults(func=run)


def resolve_resolution(args: argparse.Namespace) -> int:
    """The size the images are measured at: --resolution, else --model's, else mnist-5k's; a `CommandError` asks for
    one of them otherwise."""
    from ..configuration_transgan import TransGANGeneratorConfig
    from ..data import MNIST_5K

    model_size = None
    if args.model is not None:
        with as_command_error(f"cannot read the generator config of --model {args.model!r}: "):
            model_size = TransGANGeneratorConfig.from_pretrained(args.model, subfolder="generator").image_size
    if args.resolution is not None and model_size is not None and args.resolution != model_size:
        raise CommandError(f"--resolution {args.resolution} differs from the {model_size} px images of --model "
                           f"{args.model!r}; drop one of the two flags.")
    resolution = args.resolution if args.resolution is not None else model_size
    if resolution is None and args.dataset_name == MNIST_5K:
        resolution = MNIST_DEFAULT_RESOLUTION
    if resolution is None:
        raise CommandError("give --resolution N (the image size of the model to evaluate) or --model ORG/NAME_OR_DIR "
                           "(its generator's size): statistics of the images at their own size do not match "
                           "generated ones.")
    return resolution


@contextlib.contextmanager
def dataset_progress_bars(shown: bool) -> Iterator[None]:
    """`datasets`' own bars (preparing an image folder or a Hub dataset) follow --no_progress too, for this block."""
    from datasets.utils import disable_progress_bars, enable_progress_bars, is_progress_bar_enabled

    switch = not shown and is_progress_bar_enabled()
    if switch:
        disable_progress_bars()
    try:
        yield
    finally:
        if switch:
            enable_progress_bars()


def run(args: argparse.Namespace) -> int:
    from ..data import find_image_column, load_image_dataset
    from ..metrics import compute_reference_statistics, reference_batches, save_statistics

    if not args.output_file.endswith(".npz"):
        raise CommandError(f"--output_file must end in .npz, got {args.output_file!r}.")
    check_output_path(args.output_file, "--output_file", folder=False)
    check_minimums(args, {"max_images": 2, "resolution": 1, "batch_size": 1})
    resolution = resolve_resolution(args)
    device = resolve_device(args.device)
    feature_extractor = load_feature_extractor(args, device)  # first: missing weights fail before a long data load
    with as_command_error(), dataset_progress_bars(shown=not args.no_progress):
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
        path = save_statistics(args.output_file, statistics)
    except (OSError, ValueError) as error:  # unreadable images (named), --output_file not writable
        raise CommandError(str(error)) from None
    summary = {
        "output_file": str(path),
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
