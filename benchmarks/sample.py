#!/usr/bin/env python
"""Sampling throughput of `TransGANPipeline` (the code path of `transgan generate`, the Space and training samples).

    python benchmarks/sample.py --preset cifar10 --batch_size 64 --mixed_precision bf16
    python benchmarks/sample.py --preset cifar10 --batch_size 64 --dtype bfloat16

Prints median seconds per batch, images/s and peak memory; the last line is a JSON object with `images_per_s` and
`peak_mem_mb`. Weights are random (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from harness import add_common_arguments, median_seconds, peak_memory_mb, report, setup

from transgan_hf import (
    TransGANDiscriminator,
    TransGANDiscriminatorConfig,
    TransGANGenerator,
    TransGANGeneratorConfig,
    TransGANPipeline,
)
from transgan_hf.commands.generate import DTYPES
from transgan_hf.cpu_memory import reuse_freed_cpu_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_candidates", type=int, default=1, help="discriminator ranking (draws k x batch)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="weights and compute in this type (as `transgan generate --dtype`)")
    parser.add_argument("--cpu_memory_reuse", action=argparse.BooleanOptionalAction, default=True,
                        help="keep freed memory for reuse on a CPU, as `transgan generate` does (default: on)")
    args = parser.parse_args()
    device = setup(args)
    if args.cpu_memory_reuse and device.type == "cpu":
        reuse_freed_cpu_memory()
    generator = TransGANGenerator(TransGANGeneratorConfig.from_preset(args.preset))
    discriminator = None
    if args.num_candidates > 1:
        discriminator = TransGANDiscriminator(TransGANDiscriminatorConfig.from_preset(args.preset))
    pipe = TransGANPipeline(generator=generator, discriminator=discriminator).to(device, DTYPES[args.dtype])
    pipe.set_progress_bar_config(disable=True)
    if args.compile:
        pipe.generator.compile()  # in place, as training/train.py --compile does
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.mixed_precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    seed = torch.Generator(device=device).manual_seed(0)

    def sample() -> None:
        with autocast:
            pipe(batch_size=args.batch_size, generator=seed, num_candidates=args.num_candidates, output_type="pt")

    seconds = median_seconds(sample, device, args.steps, args.warmup)
    images_per_s = args.batch_size / seconds
    memory = peak_memory_mb(device)
    report(
        {"preset": args.preset, "device": str(device), "mixed_precision": args.mixed_precision, "dtype": args.dtype,
         "batch_size": str(args.batch_size), "seconds per batch": f"{seconds:.3f}",
         "images/s": f"{images_per_s:.2f}", "peak memory (MB)": f"{memory:.0f}"},
        {"images_per_s": round(images_per_s, 3), "peak_mem_mb": round(memory, 1)},
    )


if __name__ == "__main__":
    main()
