#!/usr/bin/env python
"""Speed of one discriminator step (with gradient penalty) and one generator step (with the EMA update), using
training's own flags, `build_models` and `GANTrainer` (`transgan_hf.training`: the same code path as
`accelerate launch training/train.py`, including `--compile` and `--gradient_checkpointing`).

    python benchmarks/train_step.py --preset cifar10 --batch_size 8 --gen_batch_size 16 --mixed_precision bf16

A D step = one loader iteration that updates D: fake batch from G under no_grad, D on augmented real and fake images,
gradient penalty, backward, clipping, Adam (with `--gp_interval N`: the mean over N such steps, the penalty in the
first only). A G step = the generator update (loss through the augmented D, backward, clipping, Adam) plus the EMA
update. Prints medians and peak memory; the last line is a JSON object with `d_step_s`, `g_step_s`, `peak_mem_mb`.
Real images are random tensors: speed does not depend on the data.
"""

from __future__ import annotations

import os

# The OpenMP wait policy of training/train.py, which sets it before torch loads (an explicit setting wins): the steps
# are timed the way training runs them. `OMP_WAIT_POLICY=ACTIVE python benchmarks/train_step.py` times the setting
# that training/README.md recommends on a dedicated machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import tempfile

import torch
from accelerate import Accelerator
from harness import add_common_arguments, median_seconds, peak_memory_mb, report, setup

from transgan_hf.training.args import load_model_configs, parse_args, training_recipe
from transgan_hf.training.loop import configure_cpu_memory
from transgan_hf.training.trainer import GANTrainer, build_models, build_optimizers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--batch_size", type=int, default=8, help="discriminator batch")
    parser.add_argument("--gen_batch_size", type=int, default=16, help="generator batch")
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--gp_interval", type=int, default=1,
                        help="lazy gradient penalty (training/train.py --gp_interval): the D step is then the mean "
                             "over N D steps, the first with the penalty")
    parser.add_argument("--cpu_memory_reuse", action=argparse.BooleanOptionalAction, default=True,
                        help="training/train.py --cpu_memory_reuse (default on, as in training)")
    args = parser.parse_args()
    device = setup(args)
    with tempfile.TemporaryDirectory() as output_dir:
        flags = ["--preset", args.preset, "--train_batch_size", str(args.batch_size), "--gen_batch_size",
                 str(args.gen_batch_size), "--mixed_precision", args.mixed_precision, "--report_to", "none",
                 "--output_dir", output_dir]
        flags += ["--gradient_checkpointing"] if args.gradient_checkpointing else []
        flags += ["--compile"] if args.compile else []
        flags += ["--gp_interval", str(args.gp_interval)]
        flags += [] if args.cpu_memory_reuse else ["--no-cpu_memory_reuse"]
        train_args = parse_args(flags)
        g_config, d_config = load_model_configs(train_args)
        recipe = training_recipe(train_args)
        accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=device.type == "cpu")
        configure_cpu_memory(train_args.cpu_memory_reuse, accelerator.device)
        generator, discriminator, ema = build_models(
            g_config, d_config, accelerator.device, seed=train_args.seed, loss=recipe.loss,
            gradient_checkpointing=train_args.gradient_checkpointing, compile=train_args.compile,
        )
        g_opt, d_opt = build_optimizers(generator, discriminator, recipe)
        generator, discriminator, g_opt, d_opt = accelerator.prepare(generator, discriminator, g_opt, d_opt)
        trainer = GANTrainer(accelerator, generator, discriminator, g_opt, d_opt, ema, recipe, seed=train_args.seed,
                             gradient_checkpointing=train_args.gradient_checkpointing)
        real = torch.rand((args.batch_size, 3, g_config.image_size, g_config.image_size), device=device) * 2 - 1

        def d_steps() -> None:  # one penalised D step, then the N - 1 without the penalty
            for index in range(args.gp_interval):
                trainer.discriminator_iteration(real, step=0, update=True, penalize=index == 0)

        def g_step() -> None:
            trainer.generator_update(step=0)
            trainer.update_ema(cur_nimg=10**6)

        d_seconds = median_seconds(d_steps, device, args.steps, args.warmup) / args.gp_interval
        g_seconds = median_seconds(g_step, device, args.steps, args.warmup)
    memory = peak_memory_mb(device)
    report(
        {"preset": args.preset, "device": str(device), "mixed_precision": args.mixed_precision,
         "D batch / G batch": f"{args.batch_size} / {args.gen_batch_size}", "gp_interval": str(args.gp_interval),
         "OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"],
         "D step (s, median)": f"{d_seconds:.3f}", "G step (s, median)": f"{g_seconds:.3f}",
         "D images/s": f"{args.batch_size / d_seconds:.2f}", "G images/s": f"{args.gen_batch_size / g_seconds:.2f}",
         "peak memory (MB)": f"{memory:.0f}"},
        {"d_step_s": round(d_seconds, 4), "g_step_s": round(g_seconds, 4), "peak_mem_mb": round(memory, 1)},
    )


if __name__ == "__main__":
    main()
