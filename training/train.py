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
`--push_to_hub --hub_model_id org/name` uploads that folder.

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
import json
import logging
import math
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
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
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
from transgan_hf.augment import DiffAugment
from transgan_hf.cli import CommandError
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
from transgan_hf.pipeline_transgan import create_hub_repo, upload_pipeline_folder
from transgan_hf.training_presets import TRAINING_PRESETS, get_training_recipe, recipe_fields

logger = get_logger(__name__, log_level="INFO")

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "training_state_{rank}.pt"
ARGS_FILE = "training_args.json"
KILL_ENV = "TRANSGAN_KILL_DURING_CHECKPOINT"
HUB_DATASET_IDS = {"mnist-5k": "ylecun/mnist"}
"""Model-card dataset ids of the built-in datasets (mnist-5k is a 5,000-digit subset of MNIST)."""
RESUME_MUST_MATCH = ("train_batch_size", "gradient_accumulation_steps", "n_critic", "num_processes", "seed")
"""Settings that fix the data order and the meaning of a step; a resumed run must keep them."""


class NonFiniteError(RuntimeError):
    """The training diverged: a loss or gradient became NaN or infinite."""


# ---------------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
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
    data.add_argument("--resolution", type=int, help="must equal the generator's image size (default: that size)")
    data.add_argument("--center_crop", action=argparse.BooleanOptionalAction, default=None)
    data.add_argument("--random_flip", action=argparse.BooleanOptionalAction, default=None)
    data.add_argument("--skip_corrupt_images", action="store_true",
                      help="test-decode every image first and leave unreadable ones out (counted in the log)")
    data.add_argument("--dataloader_num_workers", type=int, default=0)

    recipe = parser.add_argument_group("training recipe (defaults from the preset)")
    recipe.add_argument("--train_batch_size", type=int, help="global discriminator batch per loader iteration")
    recipe.add_argument("--gen_batch_size", type=int, help="global generator batch per micro-step")
    recipe.add_argument("--gradient_accumulation_steps", type=int, help="discriminator micro-batches per update")
    recipe.add_argument("--gen_gradient_accumulation_steps", type=int, help="generator micro-batches per update")
    recipe.add_argument("--n_critic", type=int, help="discriminator updates per generator update")
    recipe.add_argument("--loss", choices=LOSS_TYPES)
    recipe.add_argument("--phi", type=float, help="gradient-penalty target norm (weight 10/phi^2)")
    recipe.add_argument("--gp_interval", type=int, default=1,
                        help="lazy regularisation (StyleGAN2): the gradient penalty only on every N-th D update, "
                             "weighted by N, saving (N-1)/N of its cost. Default 1 = every update (official). Keep "
                             "N small for WGAN losses: 2 kept the tiny recipe's quality, 4 diverged")
    recipe.add_argument("--learning_rate", type=float)
    recipe.add_argument("--adam_beta1", type=float)
    recipe.add_argument("--adam_beta2", type=float)
    recipe.add_argument("--adam_epsilon", type=float)
    recipe.add_argument("--fused_adam", action=argparse.BooleanOptionalAction, default=None,
                        help="Adam's single-kernel update (CPU and GPU; not bitwise equal to the per-tensor loop)")
    recipe.add_argument("--max_grad_norm", type=float, help="gradient-norm clipping of both networks")
    recipe.add_argument("--ema_kimg", type=float, help="EMA half-life in thousands of discriminator images")
    recipe.add_argument("--ema_warmup", type=float, help="EMA warm-up ratio (0 = none)")
    recipe.add_argument("--ema_decay", type=float, help="fixed EMA decay per generator update (overrides ema_kimg)")
    recipe.add_argument("--diffaug_policy", help="comma-separated DiffAugment policies, or 'none'")
    recipe.add_argument("--max_train_steps", type=int, help="generator updates (the official max_iter)")
    recipe.add_argument("--max_train_kimg", type=float, help="stop after this many thousand real images instead")
    recipe.add_argument("--official_d_grad_leak", action="store_true",
                        help="keep D trainable during the G update, as the official code (see the docstring)")

    evaluation = parser.add_argument_group("evaluation of the EMA generator during training")
    evaluation.add_argument("--eval_steps", type=int,
                            help="evaluate every N steps and after the last one (default: never)")
    evaluation.add_argument("--eval_num_images", type=int, default=10_000,
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
    evaluation.add_argument("--eval_batch_size", type=int, default=64, help="images per generator call (default: 64)")

    run = parser.add_argument_group("run")
    run.add_argument("--output_dir", help="default: runs/transgan-<preset>")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default="no",
                     help="autocast precision; bf16 is the safe choice for GANs (fp16 shares one loss scaler)")
    run.add_argument("--allow_tf32", action="store_true", help="TF32 matmuls on Ampere+ GPUs")
    run.add_argument("--cpu_memory_reuse", action=argparse.BooleanOptionalAction, default=True,
                     help="on a CPU, keep freed memory in the process for reuse instead of returning it to the system "
                          "after every step (glibc): 10-20%% faster steps, same peak memory (default: on)")
    run.add_argument("--logging_steps", type=int)
    run.add_argument("--save_images_steps", type=int)
    run.add_argument("--num_sample_images", type=int, default=64, help="images in each sample grid (a square)")
    run.add_argument("--checkpointing_steps", type=int)
    run.add_argument("--checkpoints_total_limit", type=int, help="keep at most this many checkpoints")
    run.add_argument("--resume_from_checkpoint", help="'latest' or a checkpoint folder")
    run.add_argument("--report_to", default="tensorboard", help="tensorboard, wandb, all, or none")
    run.add_argument("--logging_dir", default="logs", help="tracker folder, relative to --output_dir")
    run.add_argument("--push_to_hub", action="store_true")
    run.add_argument("--hub_model_id", help="org/name of the Hub model repo")
    run.add_argument("--hub_token")
    run.add_argument("--hub_private_repo", action="store_true")
    run.add_argument("--license", default="apache-2.0", help="licence of the trained weights, for the model card")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return resolve_recipe(args)


def resolve_recipe(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset flags from the preset's recipe and check the combination (`CommandError` on bad values)."""
    recipe = get_training_recipe(args.preset)
    explicit = {name for name in recipe_fields() if getattr(args, name, None) is not None}
    if args.max_train_kimg is not None and args.max_train_steps is not None:
        raise CommandError("Give --max_train_steps or --max_train_kimg, not both.")
    if args.dataset_name is not None or args.train_data_dir is not None:
        recipe = recipe.replace(dataset_name=None, image_column=None)
    for name in recipe_fields():
        if getattr(args, name, None) is None:
            setattr(args, name, getattr(recipe, name))
    if explicit & {"ema_kimg", "ema_warmup"} and "ema_decay" not in explicit:
        args.ema_decay = None  # a half-life was asked for: drop the preset's fixed decay
    if args.ema_decay is None and args.ema_kimg is None:
        raise CommandError("Give --ema_kimg (EMA half-life) or --ema_decay (fixed decay).")
    for name in ("train_batch_size", "gen_batch_size", "gradient_accumulation_steps",
                 "gen_gradient_accumulation_steps", "n_critic", "logging_steps", "save_images_steps",
                 "checkpointing_steps", "num_sample_images"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if args.gp_interval < 1:
        raise CommandError(f"--gp_interval must be >= 1, got {args.gp_interval}.")
    if args.gp_interval > 1 and not uses_gradient_penalty(args.loss):
        raise CommandError(f"--gp_interval spaces out the gradient penalty, which --loss {args.loss} does not have; "
                           "drop the flag or choose a loss with a penalty (wgangp, wgangp-eps, ...).")
    if args.max_train_kimg is not None:
        if args.max_train_kimg <= 0:
            raise CommandError(f"--max_train_kimg must be > 0, got {args.max_train_kimg}.")
        images_per_step = args.train_batch_size * args.gradient_accumulation_steps * args.n_critic
        args.max_train_steps = math.ceil(args.max_train_kimg * 1000 / images_per_step)
    if args.max_train_steps < 1:
        raise CommandError(f"--max_train_steps must be >= 1, got {args.max_train_steps}.")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        raise CommandError("--checkpoints_total_limit must be >= 1.")
    if math.isqrt(args.num_sample_images) ** 2 != args.num_sample_images:
        raise CommandError(f"--num_sample_images must be a square (16, 36, 64, ...), got {args.num_sample_images}.")
    resolve_evaluation_args(args)
    if args.push_to_hub and not args.hub_model_id:
        raise CommandError("--push_to_hub needs --hub_model_id org/name.")
    if args.output_dir is None:
        args.output_dir = os.path.join("runs", f"transgan-{args.preset}")
    args.report_to = None if args.report_to in ("none", "") else args.report_to
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
        raise CommandError(f"--eval_metrics: unknown {unknown or 'empty list'}; choose from {', '.join(METRICS)}.")
    for name in ("eval_steps", "eval_batch_size"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if args.eval_num_images < 2:
        raise CommandError(f"--eval_num_images must be >= 2, got {args.eval_num_images}.")
    if args.eval_reference != "train" and not os.path.isfile(args.eval_reference):
        raise CommandError(f"--eval_reference {args.eval_reference!r} is not a file; give an .npz from "
                           "`transgan stats`, or 'train' to use the training images.")
    if "kid" in args.eval_metrics and args.eval_num_images < 1000:
        raise CommandError("KID uses subsets of 1000 images; raise --eval_num_images to >= 1000 or drop kid from "
                           "--eval_metrics.")


def load_model_configs(args: argparse.Namespace) -> tuple[TransGANGeneratorConfig, TransGANDiscriminatorConfig]:
    """The preset's architectures, or the configs given with --generator_config / --discriminator_config."""

    def load(config_class, path: str | None):
        if path is None:
            return config_class.from_preset(args.preset)
        try:
            if os.path.isdir(path):
                return config_class.from_pretrained(path)
            return config_class.from_json_file(path)
        except (OSError, ValueError) as error:
            raise CommandError(f"Cannot read the config {path!r}: {error}") from error

    generator_config = load(TransGANGeneratorConfig, args.generator_config)
    discriminator_config = load(TransGANDiscriminatorConfig, args.discriminator_config)
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
        raise CommandError(f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a finished checkpoint folder; "
                           f"use 'latest' or one of {[p.name for _, p in list_checkpoints(output_dir)]}.")
    return path


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
        accelerator = self.accelerator
        check_resume_settings(path, run_settings(self.args, accelerator))
        state_file = path / STATE_FILE.format(rank=accelerator.process_index)
        if not state_file.is_file():
            raise CommandError(f"{path} has no {state_file.name}; it was not written by this training script.")
        accelerator.load_state(str(path))
        saved = torch.load(state_file, map_location="cpu", weights_only=True)
        for name in vars(state):
            setattr(state, name, saved[name])
        for name, gen in self.generators.items():
            gen.set_state(saved["generator_states"][name])
        for name, param in self.discriminator.named_parameters():
            grad = saved["pending_discriminator_grads"].get(name)
            param.grad = None if grad is None else grad.to(param.device)


def run_settings(args: argparse.Namespace, accelerator: Accelerator) -> dict[str, Any]:
    """The run's settings as written to every checkpoint (`training_args.json`)."""
    settings = {k: v for k, v in vars(args).items() if k not in ("argv", "hub_token")}
    settings["num_processes"] = accelerator.num_processes
    return settings


def check_resume_settings(path: Path, current: Mapping[str, Any]) -> None:
    """Refuse to resume with settings that change the data order or the meaning of a step; log other changes."""
    args_file = path / ARGS_FILE
    if not args_file.is_file():
        raise CommandError(f"{path} has no {ARGS_FILE}; it is not a checkpoint of this training script.")
    saved = json.loads(args_file.read_text())
    clashes = [f"--{k} {saved.get(k)} -> {current.get(k)}" for k in RESUME_MUST_MATCH if saved.get(k) != current.get(k)]
    if clashes:
        raise CommandError(f"Cannot resume from {path}: {'; '.join(clashes)}. Resume with the checkpoint's values "
                           "(they fix the data order and what a step is), or start a new --output_dir.")
    changed = [k for k in sorted(saved) if k in current and saved[k] != current[k] and k != "resume_from_checkpoint"]
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
        try:
            self.feature_extractor = build_feature_extractor(
                args.eval_feature_extractor, device=accelerator.device,
                weights_path=args.eval_inception_weights if args.eval_feature_extractor == "inception" else None,
            )  # fmt: skip
        except (OSError, ValueError, ImportError) as error:
            raise CommandError(f"--eval_feature_extractor {args.eval_feature_extractor!r}: {error}") from None
        self.reference: ReferenceStatistics | None = None
        if accelerator.is_main_process and {"fid", "kid"} & set(args.eval_metrics):
            self.reference = self._load_reference(needs_features="kid" in args.eval_metrics)
        self.latest: dict[str, Any] | None = None

    def _load_reference(self, needs_features: bool) -> ReferenceStatistics:
        args = self.args
        if args.eval_reference != "train":
            try:
                reference = load_statistics(args.eval_reference)
            except (OSError, ValueError) as error:
                raise CommandError(f"--eval_reference: {error}") from None
            if needs_features and reference.features is None:
                raise CommandError(f"KID needs reference features, but {args.eval_reference!r} has only mu/sigma; "
                                   "make it with `transgan stats ... --save_features` or drop kid from --eval_metrics.")
            return reference
        from transgan_hf.commands.stats import reference_batches

        try:
            dataset = load_image_dataset(args.dataset_name, args.train_data_dir, args.dataset_config_name,
                                         cache_dir=args.cache_dir)
            column = find_image_column(dataset, args.image_column)
            batches = reference_batches(dataset, column, len(dataset), args.eval_batch_size, args.resolution)
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
            batch_size=args.eval_batch_size, seed=args.seed, metrics=args.eval_metrics, progress=False,
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
    per kind of row.
    """

    FILE = "training_log.jsonl"

    def __init__(self, accelerator: Accelerator, output_dir: Path, resumed_step: int) -> None:
        self.path = output_dir / self.FILE if accelerator.is_main_process else None
        if self.path is not None and self.path.is_file():
            rows = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resumed_step]
            self.path.write_text("".join(row + "\n" for row in rows))

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
    """Write a PIL image atomically (temporary sibling, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    image.save(staging, format="PNG")
    os.replace(staging, path)


class SampleWriter:
    """Fixed-noise sample grids of the EMA generator: PNG under `folder` and images for the trackers.

    Call it on every process: the main process samples and writes while the others wait at a barrier.
    """

    def __init__(self, accelerator: Accelerator, pipeline: TransGANPipeline, folder: Path, num_images: int,
                 seed: int) -> None:
        self.accelerator, self.pipeline, self.folder, self.seed = accelerator, pipeline, folder, seed
        latent_dim = pipeline.generator.config.latent_dim
        self.latents = torch.randn((num_images, latent_dim), generator=torch.Generator().manual_seed(seed))

    def __call__(self, step: int) -> Path | None:
        path = None
        if self.accelerator.is_main_process:
            noise = torch.Generator(device=self.accelerator.device).manual_seed(self.seed)
            images = self.pipeline(latents=self.latents, generator=noise, output_type="pil").images
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
        return torch.nn.utils.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)

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
    """Train; `evaluation_hooks` run besides the `--eval_steps` evaluation (e.g. custom metrics in tests)."""
    args = parse_args(argv)
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
    if args.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    configure_cpu_memory(args, accelerator.device)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*output_dir.glob("checkpoint-*.tmp"), *output_dir.glob("checkpoint-*.old")]:
            logger.warning(f"Removing {stale}, an unfinished checkpoint of an interrupted run.")
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    metric_evaluation = MetricEvaluation(args, accelerator) if args.eval_steps else None  # fails early

    generator, discriminator, ema = build_models(args, generator_config, discriminator_config, accelerator.device)
    generator_optimizer, discriminator_optimizer = build_optimizers(args, generator, discriminator)
    dataloader, transform, num_images, num_skipped = build_dataloader(args, accelerator)
    generator, discriminator, generator_optimizer, discriminator_optimizer, dataloader = accelerator.prepare(
        generator, discriminator, generator_optimizer, discriminator_optimizer, dataloader
    )
    trainer = GANTrainer(accelerator, args, generator, discriminator, generator_optimizer, discriminator_optimizer, ema)
    checkpointer = Checkpointer(accelerator, args, ema, trainer.random_generators, discriminator)
    pipeline = TransGANPipeline(generator=ema.model, discriminator=trainer.plain_discriminator)

    state = TrainingState()
    last_checkpoint = None
    if args.resume_from_checkpoint:
        last_checkpoint = resolve_resume_path(args.output_dir, args.resume_from_checkpoint)
        if last_checkpoint is None:
            logger.info(f"No checkpoint in {output_dir} yet; starting from scratch.")
        else:
            checkpointer.load(last_checkpoint, state)
            logger.info(f"Resumed from {last_checkpoint} at step {state.step} "
                        f"({state.kimg(args.train_batch_size):.1f} kimg).")
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
    write_samples = SampleWriter(accelerator, pipeline, output_dir / "samples", args.num_sample_images, args.seed)
    samples_image: Path | None = None

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
    beta, final_samples_written = None, False
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
        if step % args.save_images_steps == 0 or final:
            samples_image = write_samples(step) or samples_image
            final_samples_written = final
        if step % args.checkpointing_steps == 0 or final:
            trainer.monitor.check(accelerator, last_checkpoint)
            last_checkpoint = checkpointer.save(state)
        run_evaluation(step, final)
        overhead += time.perf_counter() - started
    progress.close()

    trainer.monitor.check(accelerator, last_checkpoint)
    pipeline_dir = output_dir / "pipeline"
    if not final_samples_written:  # resumed from a checkpoint of the last step: nothing was trained
        samples_image = write_samples(state.step)
    if accelerator.is_main_process:
        export_pipeline(args, accelerator, pipeline, pipeline_dir, samples_image, state,
                        metric_evaluation.latest if metric_evaluation else None)
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


def export_pipeline(args: argparse.Namespace, accelerator: Accelerator, pipeline: TransGANPipeline,
                    pipeline_dir: Path, samples_image: Path | None, state: TrainingState,
                    evaluation: Mapping[str, Any] | None = None) -> None:
    """Save the EMA pipeline with its model card (and push it with --push_to_hub); `evaluation` is the last
    `--eval_steps` result, written into the card's metrics."""
    card_samples = None
    if samples_image is not None:
        pipeline_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(samples_image, pipeline_dir / "samples.png")
        card_samples = "samples.png"
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
                f"({args.adam_beta1}, {args.adam_beta2}), grad clip {args.max_grad_norm}",
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
                   "samples_image": card_samples}
    if evaluation is not None and evaluation["step"] == state.step:
        report = {**evaluation, "weights": {"kind": "ema"}}
        reference = "training images" if args.eval_reference == "train" else f"reference {args.eval_reference}"
        report["protocol"] += f"; {reference}"
        card_kwargs["metrics"] = model_card_entries(report, hub_dataset or "custom",
                                                    "train" if args.eval_reference == "train" else None)
    if args.hub_model_id:
        card_kwargs["repo_id"] = args.hub_model_id
    pipeline.save_pretrained(pipeline_dir, model_card_kwargs=card_kwargs)
    if args.push_to_hub:
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
    try:
        main()
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except CorruptImageError as error:  # met while training (the first image is checked at start)
        print(f"error: {error}", file=sys.stderr)
        return 2
    except NonFiniteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
