"""The flags of `training/train.py`: parsing with range checks, the preset's recipe, and the checks across flags.

`parse_args` only reads the command line (and whether the named files exist); `loop.py` turns the result into the
typed settings of each part. Every error is a `CommandError` naming the flag, printed as one `error:` line.
`--help` ends with the recipe of every preset (`recipe_table`), `--print_recipe` prints the one the flags resolve to.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from accelerate.tracking import get_available_trackers
from accelerate.utils import LoggerType

from ..cli import CommandError, check_output_path
from ..configuration_transgan import TransGANDiscriminatorConfig, TransGANGeneratorConfig
from ..data import MNIST_5K
from ..metrics import METRICS, resolve_inception_weights
from .augment import AUGMENT_POLICIES, parse_policy
from .losses import LOSS_TYPES, uses_gradient_penalty
from .presets import TRAINING_PRESETS, TrainingRecipe, get_training_recipe, recipe_fields

DEFAULT_SHUFFLE_BUFFER_SIZE = 1000
"""--streaming's shuffle buffer per process (as `datasets`): undecoded images, in memory and in every checkpoint."""

DESCRIPTION = "Train TransGAN with Accelerate on a Hugging Face dataset or an image folder."


class TrainingArgumentParser(argparse.ArgumentParser):
    """An argument parser whose errors are `CommandError`s: `cli_main` prints them as one line, once per run (not
    once per process, and without the usage text, which runs over many lines for this script)."""

    def error(self, message: str):
        raise CommandError(message)


def number(kind: type, low: float, high: float | None = None, *, open_low: bool = False,
           open_high: bool = False) -> Callable[[str], Any]:
    """An argparse `type`: a finite `kind` (int or float) from `low` to `high` (open ends excluded)."""
    if high is None:
        bound = f"{'>' if open_low else '>='} {low}"
    else:
        bound = f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        inside = (value > low if open_low else value >= low) and (
            high is None or (value < high if open_high else value <= high))
        if not inside:
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


COUNT, NON_NEGATIVE_COUNT = number(int, 1), number(int, 0)
POSITIVE = number(float, 0, open_low=True)
FRACTION = number(float, 0, 1, open_high=True)  # [0, 1): Adam betas, EMA decay
SEED = number(int, 0, 2**32 - 1)  # numpy's legacy seeding (`set_seed`) takes no more


def sample_count(text: str) -> int:
    """An argparse `type`: the images of a square sample grid."""
    value = number(int, 1, 1024)(text)
    if math.isqrt(value) ** 2 != value:
        raise argparse.ArgumentTypeError(f"must be a square (16, 36, 64, ...) for a square grid, got {value}")
    return value


def augment_policy(text: str) -> str:
    """A DiffAugment policy, checked at parse time (unknown names would otherwise stop the run when it starts)."""
    try:
        return ",".join(parse_policy(text)) or "none"
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def recipe_cell(value: Any) -> str:
    """A recipe value as the --help table shows it."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:g}" if isinstance(value, float) else str(value)


def recipe_table() -> str:
    """The defaults every preset gives the recipe flags, one row per flag and a column per preset (values too wide
    for a column are listed under their flag), for the --help epilog."""
    presets = list(TRAINING_PRESETS)
    width = max(map(len, presets))
    first = max(len(f"--{name}") for name in recipe_fields()) + 2
    lines = ["recipe flags: the default of each preset ('-' = none). A flag given replaces the preset's value;",
             "--print_recipe prints the values a command line resolves to.",
             "  " + "".ljust(first) + "  ".join(name.ljust(width) for name in presets).rstrip()]
    for name in recipe_fields():
        cells = [recipe_cell(getattr(TRAINING_PRESETS[preset], name)) for preset in presets]
        if max(map(len, cells)) <= width:
            lines.append("  " + f"--{name}".ljust(first) + "  ".join(cell.ljust(width) for cell in cells).rstrip())
        else:
            lines.append(f"  --{name}")
            lines += [" " * (2 + first) + f"{preset}: {cell}" for preset, cell in zip(presets, cells)]
    return "\n".join(lines)


def build_parser() -> TrainingArgumentParser:
    """The script's flags; every number has a range-checking type (`number`)."""
    parser = TrainingArgumentParser(description=DESCRIPTION, epilog=recipe_table(),
                                    formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--print_recipe", action="store_true",
                        help="print the training recipe the preset and the flags resolve to, as JSON, and exit "
                             "without training")
    model = parser.add_argument_group("model")
    model.add_argument("--preset", default="tiny", choices=sorted(TRAINING_PRESETS),
                       help="architecture and training recipe (default: tiny, the CPU demo on mnist-5k; the recipe "
                            "of each preset is listed at the end)")
    model.add_argument("--generator_config", help="generator config (JSON file or folder) replacing the preset's")
    model.add_argument("--discriminator_config", help="discriminator config (JSON file or folder), likewise")
    model.add_argument("--gradient_checkpointing", action="store_true", help="recompute activations in backward")
    model.add_argument("--compile", action="store_true",
                       help="torch.compile the generator, and the discriminator when the loss has no gradient penalty "
                            "(compiled graphs do not support the penalty's double backward)")

    data = parser.add_argument_group("data (defaults from the preset)")
    data.add_argument("--dataset_name", help="Hub dataset id, a `save_to_disk` folder, or 'mnist-5k'")
    data.add_argument("--dataset_config_name")
    data.add_argument("--train_data_dir", help="folder of images, read with the `imagefolder` builder")
    data.add_argument("--image_column")
    data.add_argument("--cache_dir", help="datasets cache folder")
    data.add_argument("--resolution", type=COUNT, help="must equal the generator's image size (default: that size)")
    data.add_argument("--center_crop", action=argparse.BooleanOptionalAction, default=None)
    data.add_argument("--random_flip", action=argparse.BooleanOptionalAction, default=None)
    data.add_argument("--skip_corrupt_images", action="store_true",
                      help="test-decode every image first and leave unreadable ones out (counted in the log)")
    data.add_argument("--dataloader_num_workers", type=NON_NEGATIVE_COUNT, default=0,
                      help="data-loader worker processes (with --streaming: threads decoding each batch)")
    data.add_argument("--streaming", action="store_true",
                      help="read the dataset (Hub id, folder of parquet/webdataset shards, or --train_data_dir) as a "
                           "stream: shards split among the processes, resumed exactly (training/README.md)")
    data.add_argument("--shuffle_buffer_size", type=NON_NEGATIVE_COUNT,
                      help="with --streaming: images in each process's shuffle buffer, saved in every checkpoint "
                           "(default 1000; 0 = shard order only)")

    recipe = parser.add_argument_group("training recipe (defaults from the preset)")
    recipe.add_argument("--train_batch_size", type=COUNT, help="global discriminator batch per loader iteration")
    recipe.add_argument("--gen_batch_size", type=COUNT, help="global generator batch per micro-step")
    recipe.add_argument("--gradient_accumulation_steps", type=COUNT, help="discriminator micro-batches per update")
    recipe.add_argument("--gen_gradient_accumulation_steps", type=COUNT, help="generator micro-batches per update")
    recipe.add_argument("--n_critic", type=COUNT, help="discriminator updates per generator update")
    recipe.add_argument("--loss", choices=LOSS_TYPES)
    recipe.add_argument("--phi", type=POSITIVE, help="gradient-penalty target norm (weight 10/phi^2)")
    recipe.add_argument("--r1_gamma", type=number(float, 0),
                        help="R1 penalty weight: gamma/2 * |grad D(real)|^2 (non-saturating and hinge losses; 0 = off)")
    recipe.add_argument("--r2_gamma", type=number(float, 0),
                        help="R2 penalty weight: gamma/2 * |grad D(fake)|^2 (likewise; 0 = off)")
    recipe.add_argument("--gp_interval", type=COUNT,
                        help="lazy regularisation (StyleGAN2): the gradient penalty (WGAN-GP, R1, R2) only on every "
                             "N-th D update, weighted by N, saving (N-1)/N of its cost. 1 = every update (official). "
                             "Keep N small for WGAN losses: 2 kept a WGAN-GP recipe's quality, 4 diverged")
    recipe.add_argument("--gp_batch_shrink", type=COUNT,
                        help="WGAN-GP: the penalty on 1/N of the batch's real/fake interpolates (an unbiased estimate "
                             "of the same mean, at 1/N of its cost; StyleGAN2's pl_batch_shrink). 1 = the whole batch "
                             "(official)")
    recipe.add_argument("--learning_rate", type=POSITIVE)
    recipe.add_argument("--adam_beta1", type=FRACTION, help="in [0, 1)")
    recipe.add_argument("--adam_beta2", type=FRACTION, help="in [0, 1)")
    recipe.add_argument("--adam_epsilon", type=POSITIVE)
    recipe.add_argument("--fused_adam", action=argparse.BooleanOptionalAction, default=None,
                        help="Adam's single-kernel update (CPU and GPU; not bitwise equal to the per-tensor loop)")
    recipe.add_argument("--max_grad_norm", type=number(float, 0),
                        help="gradient-norm clipping of both networks; 0 turns clipping off (norms are still logged)")
    ema = recipe.add_mutually_exclusive_group()
    ema.add_argument("--ema_kimg", type=POSITIVE, help="EMA half-life in thousands of discriminator images")
    ema.add_argument("--ema_decay", type=FRACTION,
                     help="fixed EMA decay per generator update, in [0, 1) (replaces the preset's half-life)")
    recipe.add_argument("--ema_warmup", type=number(float, 0, 1), help="EMA warm-up ratio in [0, 1] (0 = none)")
    recipe.add_argument("--diffaug_policy", type=augment_policy,
                        help=f"comma-separated DiffAugment policies ({', '.join(AUGMENT_POLICIES)}), or 'none'")
    length = recipe.add_mutually_exclusive_group()
    length.add_argument("--max_train_steps", type=COUNT, help="generator updates (the official max_iter)")
    length.add_argument("--max_train_kimg", type=POSITIVE, help="stop after this many thousand real images instead")
    recipe.add_argument("--max_train_minutes", type=POSITIVE,
                        help="also stop after the step at which the training time (progress/train_seconds: without "
                             "evaluations, sample grids and checkpoints) reaches this many minutes")
    recipe.add_argument("--official_d_grad_leak", action="store_true",
                        help="keep D trainable during the G update, as the official code (see training/README.md)")

    evaluation = parser.add_argument_group("evaluation of the EMA generator during training")
    evaluation.add_argument("--eval_steps", type=COUNT,
                            help="evaluate every N steps and after the last one (default: never)")
    evaluation.add_argument("--eval_num_images", type=number(int, 2), default=10_000,
                            help="generated images per evaluation, shared by all processes (default: 10000)")
    evaluation.add_argument("--eval_reference", default="train", metavar="STATS.npz|train",
                            help="reference statistics (`transgan stats`, or the official fid_stat files), or 'train' "
                                 "to compute them from the training images at start-up (default: train)")
    evaluation.add_argument("--eval_feature_extractor",
                            help="inception (TTUR FID), digits (MNIST classifier: fdd_mnist, ...), or "
                                 "package.module:factory (default: digits on mnist-5k, else inception)")
    evaluation.add_argument("--eval_inception_weights", metavar="PATH",
                            help="FID Inception weights (default: $TRANSGAN_INCEPTION_WEIGHTS, torch hub cache)")
    evaluation.add_argument("--eval_metrics",
                            help="comma-separated fid, kid, is, confidence (default: fid,kid,confidence with the "
                                 "digit network, fid with Inception)")
    evaluation.add_argument("--eval_batch_size", type=COUNT,
                            help="images per generator call on each process (default: the generator's training "
                                 "batch per process, which is known to fit)")

    run = parser.add_argument_group("run")
    run.add_argument("--output_dir", help="default: runs/transgan-<preset>")
    start = run.add_mutually_exclusive_group()
    start.add_argument("--resume_from_checkpoint", help="'latest' or a checkpoint folder")
    start.add_argument("--overwrite_output_dir", action="store_true",
                       help="start over in an --output_dir that holds a previous run: deletes its checkpoint-*, "
                            "pipeline/, samples/, the logging folder and training_log.jsonl first (other files stay)")
    run.add_argument("--seed", type=SEED, default=0)
    run.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default="no",
                     help="autocast precision; bf16 is the safe choice for GANs (fp16 shares one loss scaler)")
    run.add_argument("--allow_tf32", action="store_true", help="TF32 matmuls on Ampere+ GPUs")
    run.add_argument("--cpu_memory_reuse", action=argparse.BooleanOptionalAction, default=True,
                     help="on a CPU, keep freed memory in the process for reuse instead of returning it to the system "
                          "after every step (glibc): 10-20%% faster steps, same peak memory (default: on)")
    run.add_argument("--logging_steps", type=COUNT)
    run.add_argument("--save_images_steps", type=COUNT)
    run.add_argument("--num_sample_images", type=sample_count, default=64,
                     help="images in each sample grid (a square, at most 1024)")
    run.add_argument("--checkpointing_steps", type=COUNT)
    run.add_argument("--checkpoints_total_limit", type=COUNT, help="keep at most this many checkpoints")
    run.add_argument("--report_to", default="tensorboard",
                     help="comma-separated trackers (tensorboard, wandb, ...: Accelerate's), all, or none")
    run.add_argument("--logging_dir", default="logs", help="tracker folder, relative to --output_dir")
    run.add_argument("--push_to_hub", action="store_true")
    run.add_argument("--hub_model_id", help="org/name of the Hub model repo")
    run.add_argument("--hub_token")
    run.add_argument("--hub_private_repo", action="store_true")
    run.add_argument("--license", help="licence of the trained weights (Hub id, e.g. mit), for the model card; "
                     "default apache-2.0, and the card says that none was chosen")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the flags (`CommandError` naming the flag); nothing is read or built yet. With
    `--print_recipe`, print the resolved recipe and exit (`SystemExit(0)`, like --help)."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args = resolve_recipe(args)
    if args.print_recipe:
        print(json.dumps({"preset": args.preset, **dataclasses.asdict(training_recipe(args))}, indent=2))
        raise SystemExit(0)
    return args


def resolve_recipe(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset flags from the preset's recipe and check the flags that depend on each other (single values are
    range-checked by their argparse types). Errors are `CommandError`s naming the flag, like argparse's."""
    recipe = get_training_recipe(args.preset)
    explicit = {name for name in recipe_fields() if getattr(args, name, None) is not None}
    if args.dataset_name is not None or args.train_data_dir is not None:
        recipe = recipe.replace(dataset_name=None, image_column=None)
    for name in recipe_fields():
        if getattr(args, name, None) is None:
            setattr(args, name, getattr(recipe, name))
    if explicit & {"ema_kimg", "ema_warmup"} and "ema_decay" not in explicit:
        args.ema_decay = None  # a half-life was asked for: drop the preset's fixed decay
    if args.ema_decay is None and args.ema_kimg is None:
        raise CommandError("argument --ema_warmup: the preset has a fixed EMA decay; give the half-life --ema_kimg "
                           "with it")
    wgan = uses_gradient_penalty(args.loss)
    for flag in ("r1_gamma", "r2_gamma"):
        if wgan and getattr(args, flag) > 0:
            raise CommandError(f"argument --{flag}: --loss {args.loss} has its own gradient penalty (--phi); use R1/R2 "
                               f"with --loss nonsaturating or hinge, or set --{flag} 0")
    # A preset's lazy-penalty settings that the chosen loss has no use for are left alone; only flags given are refused.
    if "gp_interval" in explicit and args.gp_interval > 1 and not (wgan or args.r1_gamma > 0 or args.r2_gamma > 0):
        raise CommandError(f"argument --gp_interval: spaces out the gradient penalty, which --loss {args.loss} does "
                           "not have here; drop the flag, add --r1_gamma/--r2_gamma, or choose a WGAN-GP loss")
    if "gp_batch_shrink" in explicit and args.gp_batch_shrink > 1 and not wgan:
        raise CommandError(f"argument --gp_batch_shrink: shrinks the WGAN-GP interpolates, which --loss {args.loss} "
                           "does not use; drop the flag or choose a WGAN-GP loss")
    if args.max_train_kimg is not None:
        args.max_train_steps = math.ceil(args.max_train_kimg * 1000 / real_images_per_step(args))
    resolve_evaluation_args(args)
    resolve_streaming_args(args)
    if args.push_to_hub and not args.hub_model_id:
        raise CommandError("argument --push_to_hub: needs --hub_model_id org/name")
    if args.output_dir is None:
        args.output_dir = os.path.join("runs", f"transgan-{args.preset}")
    for name in ("output_dir", "cache_dir", "logging_dir"):
        path = getattr(args, name) if name != "logging_dir" else os.path.join(args.output_dir, args.logging_dir)
        if path:
            check_output_path(path, f"argument --{name}:", folder=True)
    trackers = [name.strip() for name in args.report_to.split(",") if name.strip() not in ("", "none")]
    available = [str(tracker) for tracker in get_available_trackers()]
    for name in trackers:
        if name != "all" and name not in available:
            known = name in LoggerType.list()
            raise CommandError(f"argument --report_to: {name!r} is "
                               + (f"not installed (pip install {name})" if known else "not a tracker")
                               + f"; choose from {', '.join(['none', 'all', *available])}")
    args.report_to = trackers or None
    return args


def resolve_streaming_args(args: argparse.Namespace) -> None:
    """The default and checks of --streaming and --shuffle_buffer_size."""
    if not args.streaming:
        if args.shuffle_buffer_size is not None:
            raise CommandError("argument --shuffle_buffer_size: only with --streaming (a dataset read whole is "
                               "shuffled whole every epoch)")
        return
    if args.shuffle_buffer_size is None:
        args.shuffle_buffer_size = DEFAULT_SHUFFLE_BUFFER_SIZE
    if args.eval_steps is not None and args.eval_reference == "train":
        raise CommandError("argument --eval_reference: 'train' reads the whole training set, which --streaming does "
                           "not download; give statistics from `transgan stats` (an .npz)")


def resolve_evaluation_args(args: argparse.Namespace) -> None:
    """Defaults and checks of the --eval_* flags (the feature network itself is loaded at start-up)."""
    if args.eval_feature_extractor is None:
        args.eval_feature_extractor = "digits" if args.dataset_name == MNIST_5K else "inception"
    if args.eval_metrics is None:
        args.eval_metrics = "fid,kid,confidence" if args.eval_feature_extractor == "digits" else "fid"
    args.eval_metrics = [name.strip() for name in args.eval_metrics.split(",") if name.strip()]
    if args.eval_steps is None:
        return
    unknown = sorted(set(args.eval_metrics) - set(METRICS))
    if not args.eval_metrics or unknown:
        raise CommandError(f"argument --eval_metrics: unknown {unknown or 'empty list'}; choose from "
                           f"{', '.join(METRICS)}")
    if args.eval_reference != "train" and not os.path.isfile(args.eval_reference):
        raise CommandError(f"argument --eval_reference: {args.eval_reference!r} is not a file; give an .npz from "
                           "`transgan stats`, or 'train' to use the training images")
    if "kid" in args.eval_metrics and args.eval_num_images < 1000:
        raise CommandError("argument --eval_num_images: KID uses subsets of 1000 images; raise it to >= 1000 or drop "
                           "kid from --eval_metrics")
    if args.eval_feature_extractor == "inception":  # checked here so that a missing file names this script's flag
        try:
            resolve_inception_weights(args.eval_inception_weights, flag="--eval_inception_weights")
        except OSError as error:
            raise CommandError(f"argument --eval_inception_weights: {error}") from None


def load_model_configs(args: argparse.Namespace) -> tuple[TransGANGeneratorConfig, TransGANDiscriminatorConfig]:
    """The preset's architectures, or the configs given with --generator_config / --discriminator_config; sets
    --resolution to their image size when it is not given."""

    def load(config_class, path: str | None, flag: str):
        if path is None:
            return config_class.from_preset(args.preset)
        try:
            if os.path.isdir(path):
                return config_class.from_pretrained(path)
            return config_class.from_json_file(path)
        except (OSError, ValueError) as error:
            raise CommandError(f"argument --{flag}: cannot read {path!r}: {error}") from None

    generator_config = load(TransGANGeneratorConfig, args.generator_config, "generator_config")
    discriminator_config = load(TransGANDiscriminatorConfig, args.discriminator_config, "discriminator_config")
    size = generator_config.image_size
    if discriminator_config.image_size != size:
        raise CommandError(f"The generator makes {size}x{size} images but the discriminator expects "
                           f"{discriminator_config.image_size} px ones; use matching configs.")
    if args.resolution is None:
        args.resolution = size
    elif args.resolution != size:
        others = ", ".join(f"{name} ({TransGANGeneratorConfig.from_preset(name).image_size} px)"
                           for name in TransGANGeneratorConfig.available_presets())
        raise CommandError(
            f"--resolution {args.resolution} cannot be produced by the {args.preset!r} preset, whose generator makes "
            f"{size}x{size} images. Drop --resolution (images are resized to {size}), or pick a preset of that size "
            f"({others}), or pass --generator_config/--discriminator_config with image_size {args.resolution}."
        )
    return generator_config, discriminator_config


def check_batch_sizes(args: argparse.Namespace, num_processes: int) -> None:
    """The batch flags are global: each process takes an equal share."""
    for name in ("train_batch_size", "gen_batch_size"):
        if getattr(args, name) % num_processes:
            raise CommandError(f"--{name} {getattr(args, name)} is a global batch and must be divisible by the "
                               f"{num_processes} processes.")
    per_process = args.train_batch_size // num_processes
    if uses_gradient_penalty(args.loss) and args.gp_batch_shrink > per_process:
        raise CommandError(f"--gp_batch_shrink {args.gp_batch_shrink} leaves no interpolate of the {per_process} "
                           f"images each process has per D batch; use at most {per_process}.")


def real_images_per_step(args: argparse.Namespace) -> int:
    """Real images the discriminator sees per training step, all processes together."""
    return args.train_batch_size * args.gradient_accumulation_steps * args.n_critic


def training_recipe(args: argparse.Namespace) -> TrainingRecipe:
    """The recipe the flags resolved to: the preset's values with the flags' overrides."""
    return TrainingRecipe(**{name: getattr(args, name) for name in recipe_fields()})


def run_settings(args: argparse.Namespace, num_processes: int) -> dict[str, Any]:
    """The run's settings as written to every checkpoint (`training_args.json`) and given to the trackers."""
    settings = {k: v for k, v in vars(args).items() if k not in ("argv", "hub_token")}
    settings["num_processes"] = num_processes
    return settings
