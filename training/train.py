#!/usr/bin/env python
"""Train TransGAN with Accelerate on a Hugging Face dataset or an image folder.

    accelerate launch training/train.py                         # tiny preset on MNIST-5k: digits on a laptop CPU
    accelerate launch training/train.py --preset cifar10 --dataset_name cifar10 --output_dir runs/cifar10
    accelerate launch --multi_gpu --num_processes 8 training/train.py --preset stl10 --train_data_dir ./stl10
    accelerate launch training/train.py ... --resume_from_checkpoint latest

`--preset` picks the architecture (`transgan_hf.configuration_transgan`) and the official training recipe
(`transgan_hf.training_presets`); every recipe value has a flag of the same name that overrides it.

The loop is the official one (../shared/spec/transgan_official.md §2.2). A *step* is one generator update. Each step
runs `n_critic * gradient_accumulation_steps` discriminator loader iterations; the generator update comes right after
the first one, as in the official code (it updates G when `global_steps % (n_critic * accumulation) == 0`, counting from
0). Per loader iteration: fake images from G under `no_grad`; D loss on DiffAugment-ed real and fake images
(`wgangp-eps`, `wgangp`, `hinge` or `nonsaturating`) plus, for the WGAN-GP losses, the gradient penalty (weight
10/phi^2) on augmented interpolates (with `--gp_interval N` only every N-th D update, weighted by N: StyleGAN2's lazy
regularisation, not in the official code); backward; every `gradient_accumulation_steps` iterations clip D's gradient
norm to `max_grad_norm` and step Adam. The generator update accumulates `gen_gradient_accumulation_steps` micro-batches
of `-mean D(augment(G(z)))`, clips and steps; the EMA generator is then updated with the official half-life formula
(`--ema_kimg`, `--ema_warmup`) or a fixed `--ema_decay`. Latents, gradient-penalty mixing weights, noise injection and
augmentation draw from seeded `torch.Generator`s on the device, saved in every checkpoint.

Discriminator gradients during the generator update (a deliberate choice): the official code leaves D's
parameters trainable during the G update, so `backward` of the generator loss also writes `d(-mean D(G(z)))/d theta_D`
into D's gradients after they were zeroed; the next D update adds it to its own gradient (§2.2 of the spec). Since
the D loss contains `+mean D(fake)`, the two fake terms roughly cancel, turning every n-th D update into a noisy
real-only update. This script freezes D during the G update by default (the usual GAN practice and what the paper
describes); `--official_d_grad_leak` reproduces the official behaviour exactly, e.g. to compare with official runs.

Output (`--output_dir`): `samples/step_XXXXXX.png` (fixed-noise grids of the EMA generator), `logs/` (TensorBoard),
`checkpoint-N/` (resumable), and at the end `pipeline/`: a `TransGANPipeline` folder with the EMA generator, the
discriminator, a model card and `samples.png` (`TransGANPipeline.from_pretrained("<output_dir>/pipeline")`).
`--push_to_hub --hub_model_id org/name` uploads that folder. An `--output_dir` that holds a previous run is refused
unless it is resumed (`--resume_from_checkpoint`) or replaced (`--overwrite_output_dir`). The final checkpoint and
the pipeline are written before the final sample grid, evaluation and upload, whose failure is only a warning.

Bad input (a flag out of range, a missing dataset, a checkpoint of another architecture, ...) stops the script
before anything is written, with one `error:` line and exit code 2, printed by the main process only.

Checkpoints are written to `checkpoint-N.tmp` and renamed when complete, so a crash at any moment leaves the previous
checkpoint intact; `--resume_from_checkpoint latest` ignores unfinished `.tmp` folders. A checkpoint holds the
generator, EMA generator and discriminator as `save_pretrained` folders, both optimisers, the step and data
position, and every random state (per process); resuming gives the same weights as an uninterrupted run.

Fault injection for tests: with the environment variable `TRANSGAN_KILL_DURING_CHECKPOINT=N`, the process kills
itself with SIGKILL while writing checkpoint N (after the model folders, before the optimiser and random states).
"""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on a busy CPU (other programs, or several training processes)
# spinning threads that wait for a descheduled partner made small kernels up to 50x slower. Read when torch loads,
# so it must come first; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import datetime
import inspect
import json
import logging
import math
import pickle
import re
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import transformers
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.tracking import get_available_trackers
from accelerate.utils import (
    DataLoaderConfiguration,
    LoggerType,
    ProjectConfiguration,
    broadcast_object_list,
    set_seed,
)
from diffusers.utils import make_image_grid
from huggingface_hub import HfApi
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from transgan_hf import (
    TransGANDiscriminator,
    TransGANDiscriminatorConfig,
    TransGANGenerator,
    TransGANGeneratorConfig,
    TransGANPipeline,
)
from transgan_hf.atomic_files import (
    apply_umask_permissions,
    atomic_write,
    remove_stale_staging_folders,
    write_bytes_atomically,
    write_text_atomically,
)
from transgan_hf.augment import AUGMENT_POLICIES, DiffAugment, parse_policy
from transgan_hf.cli import CommandError, check_output_path
from transgan_hf.commands.evaluate import model_card_entries
from transgan_hf.cpu_memory import reuse_freed_cpu_memory
from transgan_hf.data import (
    MNIST_5K,
    CorruptImageError,
    DatasetError,
    collate_pixel_values,
    find_image_column,
    load_image_dataset,
    prepare_training_dataset,
)
from transgan_hf.ema import ExponentialMovingAverage, ema_beta
from transgan_hf.losses import (
    LOSS_TYPES,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    gradient_penalty_weight,
    uses_gradient_penalty,
)
from transgan_hf.metrics import (
    METRICS,
    ReferenceStatistics,
    build_feature_extractor,
    compute_reference_statistics,
    evaluate_generator,
    load_statistics,
)
from transgan_hf.model_card import make_model_card
from transgan_hf.pipeline_transgan import create_hub_repo, upload_pipeline_folder
from transgan_hf.training_presets import TRAINING_PRESETS, get_training_recipe, recipe_fields

logger = get_logger(__name__, log_level="INFO")

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
RUN_CHECKPOINT_PATTERN = re.compile(r"^checkpoint-\d+(\.tmp|\.old)?$")
"""Checkpoint folders of a run, including those a crash left unfinished."""
STATE_FILE = "training_state_{rank}.pt"
ARGS_FILE = "training_args.json"
KILL_ENV = "TRANSGAN_KILL_DURING_CHECKPOINT"
HUB_DATASET_IDS = {"mnist-5k": "ylecun/mnist"}
"""Model-card dataset ids of the built-in datasets (mnist-5k is a 5,000-digit subset of MNIST)."""
OTHER_RANK_GRACE_SECONDS = 20
"""How long a process other than the main one waits before reporting an error itself (see `cli_main`)."""
RESUME_MUST_MATCH = ("train_batch_size", "gradient_accumulation_steps", "n_critic", "num_processes", "seed")
"""Settings that fix the data order and the meaning of a step; a resumed run must keep them."""


class NonFiniteError(RuntimeError):
    """The training diverged: a loss or gradient became NaN or infinite."""


# ---------------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------------


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


def build_parser() -> TrainingArgumentParser:
    """The script's flags; every number has a range-checking type (`number`)."""
    parser = TrainingArgumentParser(description=__doc__.split("\n\n")[0],
                                    formatter_class=argparse.RawTextHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--preset", default="tiny", choices=sorted(TRAINING_PRESETS),
                       help="architecture and training recipe (default: tiny, the CPU demo on mnist-5k)")
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
    data.add_argument("--dataloader_num_workers", type=NON_NEGATIVE_COUNT, default=0)

    recipe = parser.add_argument_group("training recipe (defaults from the preset)")
    recipe.add_argument("--train_batch_size", type=COUNT, help="global discriminator batch per loader iteration")
    recipe.add_argument("--gen_batch_size", type=COUNT, help="global generator batch per micro-step")
    recipe.add_argument("--gradient_accumulation_steps", type=COUNT, help="discriminator micro-batches per update")
    recipe.add_argument("--gen_gradient_accumulation_steps", type=COUNT, help="generator micro-batches per update")
    recipe.add_argument("--n_critic", type=COUNT, help="discriminator updates per generator update")
    recipe.add_argument("--loss", choices=LOSS_TYPES)
    recipe.add_argument("--phi", type=POSITIVE, help="gradient-penalty target norm (weight 10/phi^2)")
    recipe.add_argument("--gp_interval", type=COUNT, default=1,
                        help="lazy regularisation (StyleGAN2): the gradient penalty only on every N-th D update, "
                             "weighted by N, saving (N-1)/N of its cost. Default 1 = every update (official). Keep "
                             "N small for WGAN losses: 2 kept the tiny recipe's quality, 4 diverged")
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
    recipe.add_argument("--official_d_grad_leak", action="store_true",
                        help="keep D trainable during the G update, as the official code (see the docstring)")

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
    run.add_argument("--license", default="apache-2.0", help="licence of the trained weights, for the model card")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the flags (`CommandError` naming the flag); nothing is read or built yet."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return resolve_recipe(args)


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
    if args.gp_interval > 1 and not uses_gradient_penalty(args.loss):
        raise CommandError(f"argument --gp_interval: spaces out the gradient penalty, which --loss {args.loss} does "
                           "not have; drop the flag or choose a loss with a penalty (wgangp, wgangp-eps)")
    if args.max_train_kimg is not None:
        images_per_step = args.train_batch_size * args.gradient_accumulation_steps * args.n_critic
        args.max_train_steps = math.ceil(args.max_train_kimg * 1000 / images_per_step)
    resolve_evaluation_args(args)
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


def load_model_configs(args: argparse.Namespace) -> tuple[TransGANGeneratorConfig, TransGANDiscriminatorConfig]:
    """The preset's architectures, or the configs given with --generator_config / --discriminator_config."""

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


# ---------------------------------------------------------------------------------------------------------------------
# Training state, checkpoints
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class TrainingState:
    """Counters of the run; saved per process next to `accelerator.save_state`'s files."""

    step: int = 0  # generator updates done
    iteration: int = 0  # discriminator loader iterations done (per process; the same on every process)
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already consumed
    train_seconds: float = 0.0  # wall-clock of the training loop, summed over resumed segments
    commands: list[str] = field(default_factory=list)

    def kimg(self, train_batch_size: int) -> float:
        """Thousands of real images the discriminator has seen (all processes)."""
        return self.iteration * train_batch_size / 1000


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Finished checkpoints `(step, path)`, oldest first; unfinished `checkpoint-N.tmp` folders are ignored."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in folder.iterdir()
             if path.is_dir() and (m := CHECKPOINT_PATTERN.match(path.name))]
    return sorted(found)


def resolve_resume_path(output_dir: str, resume_from_checkpoint: str) -> Path | None:
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1][1] if checkpoints else None
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        path = Path(output_dir) / resume_from_checkpoint
    if not path.is_dir() or path.name.endswith(".tmp"):
        finished = [p.name for _, p in list_checkpoints(output_dir)]
        raise CommandError(f"argument --resume_from_checkpoint: {resume_from_checkpoint!r} is not a finished "
                           f"checkpoint folder; use 'latest' or one of {finished} (in --output_dir)")
    return path


def previous_run_entries(args: argparse.Namespace) -> list[Path]:
    """What an earlier run wrote into --output_dir: checkpoints (finished or not), pipeline, samples, tracker logs and
    the training log. Other files are the user's and never counted or removed."""
    output_dir = Path(args.output_dir)
    if not output_dir.is_dir():
        return []
    logging_dir = (output_dir / args.logging_dir).resolve()
    return sorted(entry for entry in output_dir.iterdir()
                  if entry.name in ("pipeline", "samples", TrainingLog.FILE) or RUN_CHECKPOINT_PATTERN.match(entry.name)
                  or entry.resolve() == logging_dir)


def check_output_dir(args: argparse.Namespace) -> list[Path]:
    """Refuse an --output_dir that holds a previous run, unless the run is resumed or --overwrite_output_dir asks to
    start over; returns what --overwrite_output_dir will delete (only once the inputs have been read)."""
    entries = previous_run_entries(args)
    if entries and not (args.resume_from_checkpoint or args.overwrite_output_dir):
        names = ", ".join(entry.name for entry in entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise CommandError(f"argument --output_dir: {args.output_dir!r} holds a previous run ({names}); continue it "
                           "with --resume_from_checkpoint latest, start over with --overwrite_output_dir (deletes "
                           "those), or choose another --output_dir")
    return entries if args.overwrite_output_dir else []


def prepare_output_dir(output_dir: Path, overwritten: Sequence[Path]) -> None:
    """Create --output_dir, delete the previous run that --overwrite_output_dir replaces, and remove what interrupted
    saves left behind (unfinished checkpoints, staging folders of the pipeline export, temporary files)."""
    if overwritten:
        logger.warning(f"--overwrite_output_dir: deleting the previous run in {output_dir}: "
                       f"{', '.join(entry.name for entry in overwritten)}")
    stale = [*output_dir.glob("checkpoint-*.tmp"), *output_dir.glob("checkpoint-*.old")]
    for entry in stale:
        logger.warning(f"Removing {entry}, an unfinished checkpoint of an interrupted run.")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for entry in [*overwritten, *stale]:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)
        remove_stale_staging_folders(output_dir, "pipeline")
        for folder in (output_dir, output_dir / "samples", output_dir / "pipeline"):
            for temporary in folder.glob(".*.tmp"):  # `atomic_write` files of a killed process
                temporary.unlink(missing_ok=True)
    except OSError as error:
        raise CommandError(f"argument --output_dir: cannot prepare {str(output_dir)!r}: {error}") from None


def on_main_process(accelerator: Accelerator, action: Callable[[], Any]) -> Any:
    """`action()` on the main process only (`None` elsewhere). A `CommandError` it raises is raised on every process,
    so that all stop with the same error instead of waiting for the main one at their next collective."""
    result, message = None, None
    if accelerator.is_main_process:
        try:
            result = action()
        except CommandError as error:
            message = str(error)
    if accelerator.num_processes > 1:
        message = broadcast_object_list([message])[0]
    if message is not None:
        raise CommandError(message)
    return result


def random_generator(device: torch.device, seed: int, rank: int, purpose: int) -> torch.Generator:
    """A `torch.Generator` on `device` with an independent stream per (seed, process, purpose)."""
    derived = int(np.random.SeedSequence([seed, rank, purpose]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator(device=device).manual_seed(derived)


class Checkpointer:
    """Writes and restores checkpoints through `accelerator.save_state` / `load_state`, atomically."""

    def __init__(self, accelerator: Accelerator, args: argparse.Namespace, ema: ExponentialMovingAverage,
                 generators: dict[str, torch.Generator], discriminator: torch.nn.Module) -> None:
        self.accelerator = accelerator
        self.args = args
        self.ema = ema
        self.generators = generators
        self.discriminator = accelerator.unwrap_model(discriminator)
        self._saving_step: int | None = None
        accelerator.register_save_state_pre_hook(self._save_models)
        accelerator.register_load_state_pre_hook(self._load_models)

    @staticmethod
    def _folder_name(model: torch.nn.Module) -> str:
        return "generator" if isinstance(model, TransGANGenerator) else "discriminator"

    def _save_models(self, models: list, weights: list, output_dir: str) -> None:
        if self.accelerator.is_main_process:
            for model in models:
                unwrapped = self.accelerator.unwrap_model(model)
                unwrapped.save_pretrained(os.path.join(output_dir, self._folder_name(unwrapped)))
            self.ema.model.save_pretrained(os.path.join(output_dir, "generator_ema"))
        weights.clear()  # saved above as `save_pretrained` folders; accelerate must not save them again
        if os.environ.get(KILL_ENV) == str(self._saving_step):
            os.kill(os.getpid(), signal.SIGKILL)  # documented fault injection (module docstring)

    def _load_models(self, models: list, input_dir: str) -> None:
        while models:
            unwrapped = self.accelerator.unwrap_model(models.pop())
            folder = os.path.join(input_dir, self._folder_name(unwrapped))
            unwrapped.load_state_dict(type(unwrapped).from_pretrained(folder).state_dict())
        averaged = TransGANGenerator.from_pretrained(os.path.join(input_dir, "generator_ema"))
        self.ema.load_state_dict(averaged.state_dict())

    def save(self, state: TrainingState) -> Path:
        accelerator, output_dir = self.accelerator, Path(self.args.output_dir)
        final = output_dir / f"checkpoint-{state.step}"
        staging = output_dir / f"checkpoint-{state.step}.tmp"
        if accelerator.is_main_process and staging.exists():
            shutil.rmtree(staging)
        accelerator.wait_for_everyone()
        self._saving_step = state.step
        accelerator.save_state(str(staging))
        self._saving_step = None
        torch.save(self._process_state(state), staging / STATE_FILE.format(rank=accelerator.process_index))
        if accelerator.is_main_process:
            (staging / ARGS_FILE).write_text(json.dumps(run_settings(self.args, accelerator), indent=2))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            apply_umask_permissions(staging)
            replaced = final.with_name(final.name + ".old")
            if final.exists():  # re-running from an older checkpoint: the new one replaces it
                os.replace(final, replaced)
            os.replace(staging, final)
            shutil.rmtree(replaced, ignore_errors=True)
            self._prune()
        accelerator.wait_for_everyone()
        return final

    def _process_state(self, state: TrainingState) -> dict[str, Any]:
        pending = {name: param.grad.detach().cpu() for name, param in self.discriminator.named_parameters()
                   if param.grad is not None}
        return {
            **{k: v for k, v in vars(state).items()},
            "generator_states": {name: gen.get_state() for name, gen in self.generators.items()},
            "pending_discriminator_grads": pending,  # only with --official_d_grad_leak and n_critic * accumulation 1
        }

    def _prune(self) -> None:
        limit = self.args.checkpoints_total_limit
        if limit is None:
            return
        checkpoints = list_checkpoints(self.args.output_dir)
        for _, path in checkpoints[: max(0, len(checkpoints) - limit)]:
            shutil.rmtree(path, ignore_errors=True)

    def load(self, path: Path, state: TrainingState) -> None:
        """Restore a checkpoint that `check_resume_settings` accepted; a damaged one is a `CommandError`."""
        accelerator = self.accelerator
        state_file = path / STATE_FILE.format(rank=accelerator.process_index)
        if not state_file.is_file():
            raise CommandError(f"argument --resume_from_checkpoint: {path} has no {state_file.name}; it was not "
                               "written by this training script (with this number of processes).")
        try:
            accelerator.load_state(str(path))
            saved = torch.load(state_file, map_location="cpu", weights_only=True)
            for name in vars(state):
                setattr(state, name, saved[name])
            for name, gen in self.generators.items():
                gen.set_state(saved["generator_states"][name])
            pending = saved["pending_discriminator_grads"]
        except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as error:
            raise CommandError(f"argument --resume_from_checkpoint: cannot read the checkpoint {path} ("
                               f"{type(error).__name__}: {error}); resume from another one or start a new "
                               "--output_dir.") from None
        for name, param in self.discriminator.named_parameters():
            grad = pending.get(name)
            param.grad = None if grad is None else grad.to(param.device)


def run_settings(args: argparse.Namespace, accelerator: Accelerator) -> dict[str, Any]:
    """The run's settings as written to every checkpoint (`training_args.json`)."""
    settings = {k: v for k, v in vars(args).items() if k not in ("argv", "hub_token")}
    settings["num_processes"] = accelerator.num_processes
    return settings


def check_resume_settings(path: Path, current: Mapping[str, Any], configs: Sequence[Any] = ()) -> None:
    """Refuse to resume with settings that change the data order or the meaning of a step, or with another
    architecture (`configs`: this run's generator and discriminator configs); log other changes."""
    args_file = path / ARGS_FILE
    try:
        saved = json.loads(args_file.read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
        saved_configs = [(folder, type(config).from_json_file(path / folder / "config.json"))
                         for config, folder in zip(configs, ("generator", "discriminator"))]
    except (OSError, ValueError) as error:
        raise CommandError(f"argument --resume_from_checkpoint: {path} is not a readable checkpoint of this training "
                           f"script ({error}); resume from another checkpoint or start a new --output_dir.") from None
    clashes = [f"--{k} {saved.get(k)} -> {current.get(k)}" for k in RESUME_MUST_MATCH if saved.get(k) != current.get(k)]
    for config, (folder, saved_config) in zip(configs, saved_configs):  # the architecture: the config's own fields
        ours, theirs = (json.loads(c.to_json_string(use_diff=False)) for c in (config, saved_config))
        clashes += [f"{folder} {name} {theirs.get(name)} -> {ours.get(name)}"
                    for name in inspect.signature(type(config).__init__).parameters
                    if name in ours and ours.get(name) != theirs.get(name)]
    if clashes:
        listed = "; ".join(clashes[:5]) + (f"; and {len(clashes) - 5} more" if len(clashes) > 5 else "")
        raise CommandError(f"argument --resume_from_checkpoint: cannot resume from {path} (checkpoint -> this run: "
                           f"{listed}). "
                           "Resume with the checkpoint's values (--preset, --generator_config/--discriminator_config "
                           "and the settings that fix the data order), or start a new --output_dir.")
    changed = [k for k in sorted(saved) if k in current and saved[k] != current[k]
               and k not in ("resume_from_checkpoint", "overwrite_output_dir")]
    if changed:
        logger.warning(f"Resuming with changed settings: {', '.join(f'{k}={current[k]!r}' for k in changed)}")


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation hooks, non-finite monitor, helpers
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class EvaluationContext:
    """What an evaluation hook gets: the EMA pipeline (on the device), the trained networks as prepared by the
    accelerator (possibly DDP-wrapped), progress and settings."""

    accelerator: Accelerator
    pipeline: TransGANPipeline
    generator: torch.nn.Module
    discriminator: torch.nn.Module
    step: int
    kimg: float
    args: argparse.Namespace


class EvaluationHook(Protocol):
    """Called every `every_steps` steps and after the last step, on every process (it may use collectives);
    returns scalars to log (e.g. `{"fid": 12.3}`, logged as `eval/fid`)."""

    every_steps: int

    def __call__(self, context: EvaluationContext) -> Mapping[str, float]: ...


class MetricEvaluation:
    """The `--eval_steps` hook: FID/KID/IS (or, on MNIST-5k, the digit-classifier metrics) of the EMA generator.

    Every process generates its share of `--eval_num_images` images and extracts their features; the features are
    gathered and the main process computes the metrics (`transgan_hf.metrics.evaluate_generator`, which never leaves
    a process waiting). Image `i` is drawn from seed `SeedSequence([--seed, i])` at every evaluation, so the numbers
    over training differ only because the generator does. The feature network and the reference statistics are
    loaded when the hook is built, so a missing weights file stops the run before training starts.
    """

    def __init__(self, args: argparse.Namespace, accelerator: Accelerator) -> None:
        self.every_steps = args.eval_steps
        self.args = args
        self.batch_size = args.eval_batch_size or max(1, args.gen_batch_size // accelerator.num_processes)
        try:
            self.feature_extractor = build_feature_extractor(
                args.eval_feature_extractor, device=accelerator.device,
                weights_path=args.eval_inception_weights if args.eval_feature_extractor == "inception" else None,
            )  # fmt: skip
        except (OSError, ValueError, ImportError) as error:
            raise CommandError(f"argument --eval_feature_extractor: {args.eval_feature_extractor!r}: {error}") from None
        self.reference: ReferenceStatistics | None = None
        if {"fid", "kid"} & set(args.eval_metrics):
            self.reference = on_main_process(
                accelerator, lambda: self._load_reference(needs_features="kid" in args.eval_metrics))
        self.latest: dict[str, Any] | None = None

    def _load_reference(self, needs_features: bool) -> ReferenceStatistics:
        args = self.args
        if args.eval_reference != "train":
            try:
                reference = load_statistics(args.eval_reference)
            except (OSError, ValueError) as error:
                raise CommandError(f"argument --eval_reference: {error}") from None
            if needs_features and reference.features is None:
                raise CommandError(f"KID needs reference features, but {args.eval_reference!r} has only mu/sigma; "
                                   "make it with `transgan stats ... --save_features` or drop kid from --eval_metrics.")
            return reference
        from transgan_hf.commands.stats import reference_batches

        try:
            dataset = load_image_dataset(args.dataset_name, args.train_data_dir, args.dataset_config_name,
                                         cache_dir=args.cache_dir)
            column = find_image_column(dataset, args.image_column)
            batches = reference_batches(dataset, column, len(dataset), self.batch_size, args.resolution)
            return compute_reference_statistics(batches, self.feature_extractor, keep_features=needs_features)
        except (DatasetError, CorruptImageError, ValueError) as error:
            raise CommandError(f"Cannot compute the evaluation reference from the training images: {error}") from None

    def __call__(self, context: EvaluationContext) -> dict[str, float]:
        args, started = self.args, time.perf_counter()
        ema_generator = context.pipeline.generator
        pipeline = TransGANPipeline(generator=ema_generator)
        pipeline.set_progress_bar_config(disable=True)

        def generate(generators: list[torch.Generator]) -> torch.Tensor:
            return pipeline(batch_size=len(generators), generator=generators, output_type="pt").images

        result = evaluate_generator(
            generate, args.eval_num_images, self.feature_extractor, self.reference, accelerator=context.accelerator,
            batch_size=self.batch_size, seed=args.seed, metrics=args.eval_metrics, progress=False,
        )  # fmt: skip
        self.latest = {
            "step": context.step, "kimg": round(context.kimg, 3), "metrics": result["metrics"],
            "protocol": result["protocol"], "feature_extractor": result["feature_extractor"],
            "num_images": result["num_images"], "seed": result["seed"], "reference": args.eval_reference,
            "seconds": round(time.perf_counter() - started, 2),
        }  # fmt: skip
        summary = ", ".join(f"{name} {value:.4g}" for name, value in result["metrics"].items())
        logger.info(f"Evaluation at step {context.step} ({context.kimg:.1f} kimg): {summary}")  # main process only
        return result["metrics"]


class TrainingLog:
    """`training_log.jsonl` in the output folder: one JSON object per logged step (losses, speed, evaluations).

    What the trackers get, in a form scripts can read without TensorBoard (`scripts/demo_report.py` plots it). On
    resume, rows after the checkpoint's step (written by the interrupted run) are dropped, so each step appears once
    per kind of row; so is a row that cannot be read (the last one, torn when the run was killed), with a warning.
    """

    FILE = "training_log.jsonl"

    def __init__(self, accelerator: Accelerator, output_dir: Path, resumed_step: int) -> None:
        self.path = output_dir / self.FILE if accelerator.is_main_process else None
        if self.path is not None and self.path.is_file():
            rows, unreadable = [], 0
            for line in filter(str.strip, self.path.read_text(errors="replace").splitlines()):
                try:
                    if json.loads(line)["step"] <= resumed_step:
                        rows.append(line)
                except (ValueError, KeyError, TypeError):
                    unreadable += 1
            if unreadable:
                logger.warning(f"{self.path}: dropped {unreadable} unreadable row(s), torn by an interrupted run.")
            write_text_atomically(self.path, "".join(row + "\n" for row in rows))

    def write(self, step: int, values: Mapping[str, Any]) -> None:
        if self.path is not None:
            with self.path.open("a") as file:
                file.write(json.dumps({"step": step, **values}) + "\n")


class NonFiniteMonitor:
    """Remembers, on the device, the first step at which each loss / gradient norm was not finite.

    `observe` never synchronises; `check` (at logging and checkpoint time) gathers from all processes and raises
    `NonFiniteError` naming the network, the quantity and the step.
    """

    QUANTITIES = (("discriminator", "loss"), ("discriminator", "gradient"), ("generator", "loss"),
                  ("generator", "gradient"))

    def __init__(self, device: torch.device) -> None:
        self.first_step = torch.full((len(self.QUANTITIES),), -1, dtype=torch.int64, device=device)

    def observe(self, network: str, quantity: str, value: torch.Tensor, step: int) -> None:
        slot = self.QUANTITIES.index((network, quantity))
        unseen = self.first_step[slot] < 0
        bad = ~torch.isfinite(value.detach()).all()
        self.first_step[slot] = torch.where(unseen & bad, step, self.first_step[slot])

    def check(self, accelerator: Accelerator, last_checkpoint: Path | None) -> None:
        steps = accelerator.gather(self.first_step[None]).cpu()
        found = [(step, column) for column in range(len(self.QUANTITIES))
                 for step in steps[:, column].tolist() if step >= 0]
        if not found:
            return
        step, column = min(found)  # the earliest; at equal steps the loss before the gradient it caused
        network, quantity = self.QUANTITIES[column]
        where = (f"The last good checkpoint is {last_checkpoint}; resume from it with --resume_from_checkpoint "
                 f"{last_checkpoint}" if last_checkpoint else "No checkpoint was written yet; restart")
        raise NonFiniteError(
            f"Training diverged: the {network} {quantity} became NaN/infinite at step {step}. {where} and a lower "
            "--learning_rate, --mixed_precision no, or another --seed. No checkpoint or pipeline was written "
            "after the divergence."
        )


def describe_hardware(accelerator: Accelerator) -> str:
    count = accelerator.num_processes
    if accelerator.device.type == "cuda":
        return f"{count} x {torch.cuda.get_device_name(accelerator.device)}"
    cpu = "CPU"
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    threads = torch.get_num_threads()  # `accelerate launch` sets OMP_NUM_THREADS=1 unless it is set
    return (f"{os.cpu_count()}-core {cpu}, {count} process{'es' if count > 1 else ''} x {threads} "
            f"thread{'s' if threads > 1 else ''}, torch {torch.__version__}")


def launch_command(args: argparse.Namespace, num_processes: int) -> str:
    script = Path(__file__).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(Path.cwd())
    launcher = "accelerate launch" + (f" --multi_gpu --num_processes {num_processes}" if num_processes > 1 else "")
    return " ".join([launcher, str(script), shlex.join(args.argv)]).strip()


def needs_cpu_flag() -> bool:
    """`accelerate launch --multi_gpu` on a machine without GPUs starts several processes, but each Accelerator
    would fall back to a single non-distributed process; `cpu=True` makes them join one gloo process group."""
    launched_distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return launched_distributed and not torch.cuda.is_available()


def save_png(image, path: Path) -> None:
    """Write a PIL image atomically, with the user's umask permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as temporary:
        image.save(temporary, format="PNG")


class SampleWriter:
    """Fixed-noise sample grids of the EMA generator: PNG under `folder` and images for the trackers.

    The grid is generated `batch_size` images per pipeline call (the generator's training batch per process, which
    is known to fit); image `i` has its own latent and noise stream, so the grid does not depend on that size. Call it
    on every process: the main process samples and writes while the others wait at a barrier (also if it fails).
    """

    def __init__(self, accelerator: Accelerator, pipeline: TransGANPipeline, folder: Path, num_images: int,
                 seed: int, batch_size: int) -> None:
        self.accelerator, self.pipeline, self.folder, self.seed = accelerator, pipeline, folder, seed
        self.batch_size = batch_size
        latent_dim = pipeline.generator.config.latent_dim
        self.latents = torch.randn((num_images, latent_dim), generator=torch.Generator().manual_seed(seed))

    def __call__(self, step: int) -> Path | None:
        path = None
        try:
            if self.accelerator.is_main_process:
                images = []
                for start in range(0, len(self.latents), self.batch_size):
                    latents = self.latents[start:start + self.batch_size]
                    noise = [random_generator(self.accelerator.device, self.seed, index, purpose=2)  # one per image
                             for index in range(start, start + len(latents))]
                    images += self.pipeline(latents=latents, generator=noise, output_type="pil").images
                columns = math.isqrt(len(images))
                grid = make_image_grid(images, rows=len(images) // columns, cols=columns)
                path = self.folder / f"step_{step:06d}.png"
                save_png(grid, path)
                pixels = np.asarray(grid)[None]
                for tracker in self.accelerator.trackers:
                    if tracker.name == "tensorboard":
                        tracker.log_images({"samples": pixels}, step=step, dataformats="NHWC")
                    elif hasattr(tracker, "log_images"):
                        tracker.log_images({"samples": pixels}, step=step)
        finally:
            self.accelerator.wait_for_everyone()
        return path


# ---------------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class TrainingResult:
    output_dir: Path
    pipeline_dir: Path
    samples_image: Path | None
    step: int
    kimg: float


class GANTrainer:
    """The official TransGAN update rules on Accelerate-prepared networks (see the module docstring)."""

    LOGGED = {  # logged scalar -> what it is averaged over
        "loss/discriminator": "d_iterations", "loss/gradient_penalty": "gp_iterations",
        "logits/real": "d_iterations", "logits/fake": "d_iterations", "grad_norm/discriminator": "d_updates",
        "loss/generator": "g_updates", "grad_norm/generator": "g_updates",
    }

    def __init__(self, accelerator: Accelerator, args: argparse.Namespace, generator, discriminator,
                 generator_optimizer, discriminator_optimizer, ema: ExponentialMovingAverage) -> None:
        self.accelerator = accelerator
        self.args = args
        self.generator, self.discriminator = generator, discriminator
        self.generator_optimizer, self.discriminator_optimizer = generator_optimizer, discriminator_optimizer
        self.ema = ema
        self.plain_generator = accelerator.unwrap_model(generator)
        self.plain_discriminator = accelerator.unwrap_model(discriminator)
        self.latent_dim = self.plain_generator.config.latent_dim
        self.device = accelerator.device
        self.augment = DiffAugment(args.diffaug_policy).to(self.device)
        self.noise_rng = random_generator(self.device, args.seed, accelerator.process_index, purpose=0)
        self.augment_rng = random_generator(self.device, args.seed, accelerator.process_index, purpose=1)
        self.gp_weight = gradient_penalty_weight(args.phi) if uses_gradient_penalty(args.loss) else 0.0
        self.g_batch = args.gen_batch_size // accelerator.num_processes
        self.monitor = NonFiniteMonitor(self.device)
        self.check_gradients = args.mixed_precision != "fp16"  # the fp16 loss scaler skips non-finite steps itself
        self.sums = {name: torch.zeros((), device=self.device) for name in self.LOGGED}
        self.counts = dict.fromkeys(self.LOGGED.values(), 0)

    @property
    def random_generators(self) -> dict[str, torch.Generator]:
        return {"noise": self.noise_rng, "augment": self.augment_rng}

    def _latents(self, batch_size: int) -> torch.Tensor:
        return torch.randn((batch_size, self.latent_dim), generator=self.noise_rng, device=self.device)

    def _critic(self, discriminator) -> Callable[[torch.Tensor], torch.Tensor]:
        """D on augmented images (DiffAugment runs on every discriminator input, as in the official code)."""
        def critic(images: torch.Tensor) -> torch.Tensor:
            return discriminator(self.augment(images, self.augment_rng), noise_generator=self.noise_rng).logits

        return critic

    def _sync_context(self, models: Sequence[torch.nn.Module], sync: bool):
        if sync:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for model in models:
            stack.enter_context(self.accelerator.no_sync(model))
        return stack

    def _clip(self, model: torch.nn.Module, optimizer) -> torch.Tensor:
        self.accelerator.unscale_gradients(optimizer=optimizer)  # fp16: only this optimiser's gradients
        # --max_grad_norm 0: no clipping, but the norm is still measured (logged and checked for NaN/inf)
        return torch.nn.utils.clip_grad_norm_(model.parameters(), self.args.max_grad_norm or math.inf)

    def discriminator_iteration(self, real: torch.Tensor, step: int, update: bool, penalize: bool = True) -> None:
        """One loader iteration: D loss on a real batch and a fresh fake batch, backward; `update` steps Adam.

        `penalize=False` leaves the gradient penalty out (lazy regularisation, `--gp_interval`); when it is in, it is
        weighted by the interval so that its average strength stays the official one.
        """
        args = self.args
        critic = self._critic(self.discriminator)
        penalize = penalize and bool(self.gp_weight)
        # `gradient_penalty` runs the critic with the math attention kernel (the only one with a double backward).
        # With gradient checkpointing the whole iteration must use it, since backward recomputes the blocks.
        if penalize and args.gradient_checkpointing:
            attention = sdpa_kernel([SDPBackend.MATH])
        else:
            attention = contextlib.nullcontext()
        with self._sync_context([self.discriminator], sync=update), attention:
            with torch.no_grad():
                fake = self.plain_generator(self._latents(real.shape[0]), noise_generator=self.noise_rng).images
            fake = fake.float()
            real_logits, fake_logits = critic(real), critic(fake)
            loss = discriminator_loss(real_logits, fake_logits, args.loss)
            if penalize:
                penalty = gradient_penalty(critic, real, fake, phi=args.phi, generator=self.noise_rng)
                loss = loss + self.gp_weight * args.gp_interval * penalty
            self.accelerator.backward(loss / args.gradient_accumulation_steps)
        self.monitor.observe("discriminator", "loss", loss, step)
        self.sums["loss/discriminator"] += loss.detach()
        if penalize:
            self.sums["loss/gradient_penalty"] += penalty.detach()
            self.counts["gp_iterations"] += 1
        self.sums["logits/real"] += real_logits.detach().float().mean()
        self.sums["logits/fake"] += fake_logits.detach().float().mean()
        if update:
            norm = self._clip(self.discriminator, self.discriminator_optimizer)
            if self.check_gradients:
                self.monitor.observe("discriminator", "gradient", norm, step)
            self.sums["grad_norm/discriminator"] += norm.detach().float()
            self.discriminator_optimizer.step()
            self.discriminator_optimizer.zero_grad(set_to_none=True)
            self.counts["d_updates"] += 1
        self.counts["d_iterations"] += 1

    def generator_update(self, step: int) -> None:
        """`gen_gradient_accumulation_steps` micro-batches of the generator loss, clip, Adam step."""
        args = self.args
        leak = args.official_d_grad_leak
        discriminator = self.discriminator if leak else self.plain_discriminator
        frozen = [] if leak else [p for p in self.plain_discriminator.parameters() if p.requires_grad]
        for parameter in frozen:
            parameter.requires_grad_(False)
        critic = self._critic(discriminator)
        total = torch.zeros((), device=self.device)
        try:
            for micro in range(args.gen_gradient_accumulation_steps):
                last = micro == args.gen_gradient_accumulation_steps - 1
                models = [self.generator] + ([self.discriminator] if leak else [])
                with self._sync_context(models, sync=last):
                    fake = self.generator(self._latents(self.g_batch), noise_generator=self.noise_rng).images
                    loss = generator_loss(critic(fake.float()), args.loss)
                    self.accelerator.backward(loss / args.gen_gradient_accumulation_steps)
                total += loss.detach() / args.gen_gradient_accumulation_steps
        finally:
            for parameter in frozen:
                parameter.requires_grad_(True)
        norm = self._clip(self.generator, self.generator_optimizer)
        self.monitor.observe("generator", "loss", total, step)
        if self.check_gradients:
            self.monitor.observe("generator", "gradient", norm, step)
        self.sums["loss/generator"] += total
        self.sums["grad_norm/generator"] += norm.detach().float()
        self.generator_optimizer.step()
        self.generator_optimizer.zero_grad(set_to_none=True)
        self.counts["g_updates"] += 1

    def update_ema(self, cur_nimg: int) -> float:
        """Blend the generator into its EMA copy (after each G update); returns the β used.

        `cur_nimg` counts real images before the current loader iteration, as the official code does."""
        args = self.args
        beta = ema_beta(cur_nimg, args.train_batch_size, args.ema_kimg, args.ema_warmup, args.ema_decay)
        self.ema.update(self.generator, beta)
        return beta

    def pop_means(self) -> dict[str, float]:
        """Means since the last call, averaged over processes (one host synchronisation). A quantity that was not
        computed in the interval (the penalty between lazy `--gp_interval` updates) is left out, not logged as 0."""
        means = torch.stack([total / max(self.counts[self.LOGGED[name]], 1) for name, total in self.sums.items()])
        values = self.accelerator.reduce(means, reduction="mean").tolist()
        computed = {name for name in self.sums if self.counts[self.LOGGED[name]]}  # same counts on every process
        for total in self.sums.values():
            total.zero_()
        self.counts = dict.fromkeys(self.counts, 0)
        return {name: value for name, value in zip(self.sums, values) if name in computed}


def build_dataloader(args: argparse.Namespace, accelerator: Accelerator):
    try:
        dataset = load_image_dataset(args.dataset_name, args.train_data_dir, args.dataset_config_name,
                                     cache_dir=args.cache_dir)
        dataset, transform, skipped = prepare_training_dataset(
            dataset, args.resolution, image_column=args.image_column, center_crop=args.center_crop,
            random_flip=args.random_flip, seed=args.seed, skip_corrupt_images=args.skip_corrupt_images,
            num_proc=args.dataloader_num_workers or None,
        )
    except (DatasetError, CorruptImageError) as error:
        raise CommandError(str(error)) from error
    if len(dataset) < args.train_batch_size:
        raise CommandError(f"The dataset has {len(dataset)} usable images, fewer than one discriminator batch "
                           f"(--train_batch_size {args.train_batch_size}); add images or lower the batch size.")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.train_batch_size // accelerator.num_processes, shuffle=True, drop_last=True,
        collate_fn=collate_pixel_values, num_workers=args.dataloader_num_workers,
    )
    return loader, transform, len(dataset), skipped


def batches(accelerator: Accelerator, dataloader, transform, state: TrainingState) -> Iterator[torch.Tensor]:
    """Endless real batches from `state`'s data position; the epoch order is a function of (seed, epoch)."""
    skip = state.batch_in_epoch
    while True:
        dataloader.set_epoch(state.epoch)
        transform.set_epoch(state.epoch)
        loader = accelerator.skip_first_batches(dataloader, skip) if skip else dataloader
        for batch in loader:
            state.batch_in_epoch += 1
            yield batch
        skip = 0
        state.epoch += 1
        state.batch_in_epoch = 0


def check_batch_sizes(args: argparse.Namespace, num_processes: int) -> None:
    for name in ("train_batch_size", "gen_batch_size"):
        if getattr(args, name) % num_processes:
            raise CommandError(f"--{name} {getattr(args, name)} is a global batch and must be divisible by the "
                               f"{num_processes} processes.")


def build_models(args: argparse.Namespace, generator_config: TransGANGeneratorConfig,
                 discriminator_config: TransGANDiscriminatorConfig, device: torch.device):
    """Fresh networks (the same on every process: seeded) and the EMA copy of the generator on `device`."""
    set_seed(args.seed)
    generator = TransGANGenerator(generator_config)
    discriminator = TransGANDiscriminator(discriminator_config)
    if args.gradient_checkpointing:
        for model in (generator, discriminator):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    ema = ExponentialMovingAverage(generator)
    ema.model.to(device)
    if args.compile:  # in place: parameter names, `save_pretrained` and the EMA copy are unaffected
        generator.compile()
        if not uses_gradient_penalty(args.loss):
            discriminator.compile()
    return generator, discriminator, ema


def configure_cpu_memory(args: argparse.Namespace, device: torch.device) -> None:
    """`--cpu_memory_reuse` (default on) for a CPU run: see `transgan_hf.cpu_memory`."""
    if args.cpu_memory_reuse and device.type == "cpu" and not reuse_freed_cpu_memory():
        logger.info("--cpu_memory_reuse has no effect here (the C library is not glibc).")


def build_optimizers(args: argparse.Namespace, generator: torch.nn.Module, discriminator: torch.nn.Module):
    """Adam for each network; `--fused_adam` (official presets) updates all tensors in one kernel."""
    adam = dict(lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                fused=args.fused_adam)
    return torch.optim.Adam(generator.parameters(), **adam), torch.optim.Adam(discriminator.parameters(), **adam)


def main(argv: Sequence[str] | None = None, evaluation_hooks: Sequence[EvaluationHook] = ()) -> TrainingResult:
    """Train; `evaluation_hooks` run besides the `--eval_steps` evaluation (e.g. custom metrics in tests).

    Every input is checked before the output folder is touched (flags, --output_dir, configs, the checkpoint to resume,
    the data, the evaluation network). The final checkpoint and pipeline are written before the end-of-run extras
    (final sample grid, evaluation, model card additions, upload), whose failure is only a warning.
    """
    args = parse_args(argv)
    overwritten = check_output_dir(args)
    generator_config, discriminator_config = load_model_configs(args)
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir),
                                            logging_dir=str(output_dir / args.logging_dir)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
        cpu=needs_cpu_flag(),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.WARNING)
    transformers.utils.logging.disable_progress_bar()  # one "Writing model shards" bar per saved model otherwise
    check_batch_sizes(args, accelerator.num_processes)
    last_checkpoint = None
    if args.resume_from_checkpoint:
        last_checkpoint = resolve_resume_path(args.output_dir, args.resume_from_checkpoint)
        if last_checkpoint is not None:
            check_resume_settings(last_checkpoint, run_settings(args, accelerator),
                                  (generator_config, discriminator_config))
    if args.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    configure_cpu_memory(args, accelerator.device)
    dataloader, transform, num_images, num_skipped = build_dataloader(args, accelerator)
    metric_evaluation = MetricEvaluation(args, accelerator) if args.eval_steps else None  # fails before training

    generator, discriminator, ema = build_models(args, generator_config, discriminator_config, accelerator.device)
    generator_optimizer, discriminator_optimizer = build_optimizers(args, generator, discriminator)
    generator, discriminator, generator_optimizer, discriminator_optimizer, dataloader = accelerator.prepare(
        generator, discriminator, generator_optimizer, discriminator_optimizer, dataloader
    )
    trainer = GANTrainer(accelerator, args, generator, discriminator, generator_optimizer, discriminator_optimizer, ema)
    checkpointer = Checkpointer(accelerator, args, ema, trainer.random_generators, discriminator)
    pipeline = TransGANPipeline(generator=ema.model, discriminator=trainer.plain_discriminator)

    on_main_process(accelerator, lambda: prepare_output_dir(output_dir, overwritten))  # the first write there
    state = TrainingState()
    if last_checkpoint is not None:
        checkpointer.load(last_checkpoint, state)
        logger.info(f"Resumed from {last_checkpoint} at step {state.step} "
                    f"({state.kimg(args.train_batch_size):.1f} kimg).")
    elif args.resume_from_checkpoint:
        logger.info(f"No checkpoint in {output_dir} yet; starting from scratch.")
    state.commands.append(launch_command(args, accelerator.num_processes))
    training_log = TrainingLog(accelerator, output_dir, state.step)
    evaluation_hooks = [*evaluation_hooks, *([metric_evaluation] if metric_evaluation else [])]

    if accelerator.is_main_process:
        accelerator.init_trackers("transgan", config={k: v for k, v in run_settings(args, accelerator).items()
                                                      if isinstance(v, (int, float, str, bool))})
    iterations_per_step = args.n_critic * args.gradient_accumulation_steps
    logger.info(
        f"{num_images} images ({num_skipped} unreadable skipped), {accelerator.num_processes} process(es) on "
        f"{accelerator.device}; {args.max_train_steps} steps of 1 G update + {args.n_critic} D updates; global "
        f"batches D {args.train_batch_size} x {args.gradient_accumulation_steps}, G {args.gen_batch_size} x "
        f"{args.gen_gradient_accumulation_steps}; D gradients during G update: "
        f"{'leak into the next D update (official)' if args.official_d_grad_leak else 'frozen'}."
    )
    write_samples = SampleWriter(accelerator, pipeline, output_dir / "samples", args.num_sample_images, args.seed,
                                 batch_size=trainer.g_batch)

    def run_evaluation(step: int, final: bool) -> None:
        for hook in evaluation_hooks:
            if final or step % hook.every_steps == 0:
                context = EvaluationContext(accelerator, pipeline, generator, discriminator, step,
                                            state.kimg(args.train_batch_size), args)
                results = {f"eval/{name}": value for name, value in hook(context).items()}
                accelerator.log(results, step=step)
                training_log.write(step, {"progress/kimg": context.kimg, **results})

    progress = tqdm(total=args.max_train_steps, initial=state.step, desc="steps", unit="step",
                    disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    data = batches(accelerator, dataloader, transform, state)
    interval_start, interval_kimg, overhead = time.perf_counter(), state.kimg(args.train_batch_size), 0.0
    segment_start, segment_seconds = time.perf_counter(), state.train_seconds
    beta = None
    while state.step < args.max_train_steps:
        step = state.step + 1
        for index in range(iterations_per_step):
            real = next(data)
            update_d = (index + 1) % args.gradient_accumulation_steps == 0
            d_update = state.iteration // args.gradient_accumulation_steps  # counted over the whole run
            trainer.discriminator_iteration(real, step, update=update_d, penalize=d_update % args.gp_interval == 0)
            if index == 0:
                trainer.generator_update(step)
                beta = trainer.update_ema(cur_nimg=state.iteration * args.train_batch_size)
            state.iteration += 1
        state.step = step
        state.train_seconds = segment_seconds + time.perf_counter() - segment_start
        progress.update(1)
        final = step == args.max_train_steps

        if step % args.logging_steps == 0 or final:
            trainer.monitor.check(accelerator, last_checkpoint)
            kimg = state.kimg(args.train_batch_size)
            seconds = time.perf_counter() - interval_start - overhead
            logs = trainer.pop_means()
            logs.update({"progress/kimg": kimg, "ema/beta": beta, "lr": args.learning_rate,
                         "speed/sec_per_kimg": seconds / max(kimg - interval_kimg, 1e-9)})
            accelerator.log(logs, step=step)
            training_log.write(step, logs)
            progress.set_postfix(kimg=f"{kimg:.1f}", d_loss=f"{logs['loss/discriminator']:.3f}",
                                 g_loss=f"{logs['loss/generator']:.3f}",
                                 sec_per_kimg=f"{logs['speed/sec_per_kimg']:.1f}", refresh=False)
            interval_start, interval_kimg, overhead = time.perf_counter(), kimg, 0.0
        started = time.perf_counter()
        if step % args.checkpointing_steps == 0 or final:  # before the grid and evaluation, which may fail
            trainer.monitor.check(accelerator, last_checkpoint)
            last_checkpoint = checkpointer.save(state)
        if not final:  # the last step's grid and evaluation come after the pipeline export
            if step % args.save_images_steps == 0:
                write_samples(step)
            run_evaluation(step, final=False)
        overhead += time.perf_counter() - started
    progress.close()

    # The run is saved (final checkpoint, then the pipeline) before the end-of-run extras, which only add to it.
    trainer.monitor.check(accelerator, last_checkpoint)
    pipeline_dir = output_dir / "pipeline"
    if accelerator.is_main_process:
        export_pipeline(args, accelerator, pipeline, pipeline_dir, state)
    accelerator.wait_for_everyone()

    def extra(what: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except Exception as error:  # the run is saved: report and go on
            if accelerator.is_main_process:
                print(f"warning: {what} failed ({type(error).__name__}: {' '.join(str(error).split())}); the run is "
                      f"saved in {last_checkpoint} and {pipeline_dir}.", file=sys.stderr)
            return None

    samples_image = extra("the final sample grid", lambda: write_samples(state.step))
    extra("the final evaluation", lambda: run_evaluation(state.step, final=True))
    if accelerator.is_main_process:
        evaluation = metric_evaluation.latest if metric_evaluation else None
        extra("adding the sample grid and metrics to the model card", lambda: complete_model_card(
            args, accelerator, pipeline, pipeline_dir, state, samples_image, evaluation))
        if args.push_to_hub:
            extra("uploading the pipeline", lambda: push_pipeline(args, pipeline_dir, state))
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:
        # gloo's worker threads free their last finished work (whose tensors Python owns) once they get the GIL. The
        # process group's destructor joins those threads and runs, GIL held, when the DDP wrappers are freed as `main`
        # returns: a worker still waiting for the GIL then deadlocks the rank (py-spy: ~ProcessGroupGloo in
        # thread::join, the worker in ~AsyncBarrierWork acquiring the GIL; 1 run in ~20). Sleeping hands them the GIL.
        time.sleep(0.25)
    accelerator.end_training()  # destroys the process group
    kimg = state.kimg(args.train_batch_size)
    if accelerator.is_main_process:
        minutes = state.train_seconds / 60
        print(f"Trained {state.step} steps ({kimg:.1f} kimg) in {minutes:.1f} min of training.")
        if samples_image is not None:
            print(f"Sample grid (EMA generator): {samples_image}")
        print(f"Pipeline: {pipeline_dir}  ->  TransGANPipeline.from_pretrained({str(pipeline_dir)!r})")
    return TrainingResult(output_dir, pipeline_dir, samples_image, state.step, kimg)


def model_card_arguments(args: argparse.Namespace, accelerator: Accelerator, state: TrainingState,
                         samples_image: str | None = None,
                         evaluation: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`make_model_card` arguments of the run; `evaluation` is the last `--eval_steps` result (used if it is of the
    final step)."""
    kimg = state.kimg(args.train_batch_size)
    ema_text = (f"fixed decay {args.ema_decay} per G update" if args.ema_decay is not None
                else f"half-life {args.ema_kimg} kimg, warm-up {args.ema_warmup}")
    training = {
        "preset": args.preset,
        "dataset": args.dataset_name or f"image folder {args.train_data_dir}",
        "steps (generator updates)": str(state.step),
        "discriminator updates": str(state.step * args.n_critic),
        "kimg (real images seen)": f"{kimg:.1f}",
        "batch D / G (global)": f"{args.train_batch_size}x{args.gradient_accumulation_steps} / "
                                f"{args.gen_batch_size}x{args.gen_gradient_accumulation_steps}",
        "loss": f"{args.loss} (phi {args.phi}"
                + (f", penalty every {args.gp_interval} D updates x {args.gp_interval}" if args.gp_interval > 1 else "")
                + f"), n_critic {args.n_critic}, Adam lr {args.learning_rate} betas "
                f"({args.adam_beta1}, {args.adam_beta2}), grad clip {args.max_grad_norm or 'off'}",
        "EMA": ema_text,
        "DiffAugment": args.diffaug_policy,
        "D gradients during G update": "official leak" if args.official_d_grad_leak else "frozen",
        "precision": "fp32" if args.mixed_precision == "no" else f"{args.mixed_precision} autocast",
        "wall-clock": str(datetime.timedelta(seconds=round(state.train_seconds))),
        "hardware": describe_hardware(accelerator),
        "exact command": " ; then ".join(state.commands),
        "seed": str(args.seed),
    }
    hub_dataset = HUB_DATASET_IDS.get(args.dataset_name, args.dataset_name)
    datasets = [hub_dataset] if hub_dataset and not os.path.exists(hub_dataset) else []
    card_kwargs = {"license": args.license, "datasets": datasets, "training": training,
                   "samples_image": samples_image}
    if evaluation is not None and evaluation["step"] == state.step:
        report = {**evaluation, "weights": {"kind": "ema"}}
        reference = "training images" if args.eval_reference == "train" else f"reference {args.eval_reference}"
        report["protocol"] += f"; {reference}"
        card_kwargs["metrics"] = model_card_entries(report, hub_dataset or "custom",
                                                    "train" if args.eval_reference == "train" else None)
    if args.hub_model_id:
        card_kwargs["repo_id"] = args.hub_model_id
    return card_kwargs


def export_pipeline(args: argparse.Namespace, accelerator: Accelerator, pipeline: TransGANPipeline,
                    pipeline_dir: Path, state: TrainingState) -> None:
    """Save the EMA pipeline and its model card; the end-of-run extras are added by `complete_model_card`."""
    (pipeline_dir / "samples.png").unlink(missing_ok=True)  # a previous segment's grid, not of these weights
    pipeline.save_pretrained(pipeline_dir, model_card_kwargs=model_card_arguments(args, accelerator, state))


def complete_model_card(args: argparse.Namespace, accelerator: Accelerator, pipeline: TransGANPipeline,
                        pipeline_dir: Path, state: TrainingState, samples_image: Path | None,
                        evaluation: Mapping[str, Any] | None) -> None:
    """Copy the final sample grid into the saved pipeline and rewrite its card with it and the final metrics."""
    if samples_image is not None:
        write_bytes_atomically(pipeline_dir / "samples.png", samples_image.read_bytes())
    card_kwargs = model_card_arguments(args, accelerator, state, "samples.png" if samples_image else None, evaluation)
    write_text_atomically(pipeline_dir / "README.md", str(make_model_card(pipeline, **card_kwargs)))


def push_pipeline(args: argparse.Namespace, pipeline_dir: Path, state: TrainingState) -> None:
    """Upload the saved pipeline folder (--push_to_hub); a failure is a warning, the local folder stays."""
    api = HfApi(token=args.hub_token)
    try:
        repo_id = create_hub_repo(api, args.hub_model_id, private=args.hub_private_repo)
        url = upload_pipeline_folder(api, pipeline_dir, repo_id, commit_message=f"TransGAN, step {state.step}")
    except OSError as error:
        print(f"warning: the pipeline is saved in {pipeline_dir}, but uploading it to {args.hub_model_id} failed: "
              f"{error}", file=sys.stderr)
    else:
        print(f"Pushed to https://huggingface.co/{repo_id} ({url})")


def cli_main() -> int:
    """Run `main`; a user's mistake is one `error:` line and exit code 2 (3: the training diverged).

    With several processes every one meets the same error, and only the main process prints it: the others wait,
    and the launcher stops them once the main process has exited. One that is still running after
    `OTHER_RANK_GRACE_SECONDS` (its error was its own) prints it too, with its rank.
    """
    try:
        main()
    except (CommandError, CorruptImageError, NonFiniteError) as error:  # CorruptImageError: met while training
        rank = int(os.environ.get("RANK", "0"))
        if rank:
            time.sleep(OTHER_RANK_GRACE_SECONDS)
        print(f"error: {f'process {rank}: ' if rank else ''}{' '.join(str(error).split())}", file=sys.stderr)
        return 3 if isinstance(error, NonFiniteError) else 2
    except KeyboardInterrupt:  # a checkpoint being written stays unfinished (`.tmp`) and is removed at the next start
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
