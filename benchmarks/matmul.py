#!/usr/bin/env python
"""Raw matrix-multiply throughput of this machine: the yardstick for every other figure here.

    python benchmarks/matmul.py --size 2048

The official code's reference figures were measured on this machine kind when a 2048 x 2048 matmul ran at about
200 GFLOP/s in fp32 and 860 GFLOP/s in bf16 (`../shared/spec/cpu_measurements.md`). A machine of the same kind can be
slower on a given day (shared hosts); run this beside the other benchmarks to see how far. The last line is a JSON
object with `fp32_gflops` and `bf16_gflops`.
"""

from __future__ import annotations

import argparse

import torch
from harness import add_common_arguments, median_seconds, report, setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--size", type=int, default=2048, help="side of the square matrices")
    parser.set_defaults(steps=5, warmup=2)  # a product takes tens of milliseconds: more repetitions are cheap
    args = parser.parse_args()
    device = setup(args)
    flops = 2 * args.size**3
    lines, result = {}, {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = (torch.randn((args.size, args.size), device=device).to(dtype) for _ in range(2))
        seconds = median_seconds(lambda a=a, b=b: a @ b, device, args.steps, args.warmup)
        gflops = flops / seconds / 1e9
        lines[f"{name} {args.size}x{args.size} matmul"] = f"{gflops:.0f} GFLOP/s ({torch.get_num_threads()} threads)"
        result[f"{name}_gflops"] = round(gflops, 1)
    report(lines, result)


if __name__ == "__main__":
    main()
