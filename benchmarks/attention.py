#!/usr/bin/env python
"""Forward + backward of attention with a learned additive bias that needs a gradient (the generator's attention in a
training step): PyTorch's `scaled_dot_product_attention` (which falls back to its math path for such a bias) against
`AttentionWithBiasGradient` (fused forward, chunked backward), at the attention shapes of a preset's generator.

    python benchmarks/attention.py --preset cifar10 --batch_size 16 --mixed_precision bf16

Prints one line per generator stage and, as the last line, a JSON object with per-stage seconds of both
implementations (`sdpa_s`, `ours_s`) and the largest relative gradient difference between them.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from harness import add_common_arguments, median_seconds, report, setup

from transgan_hf import TransGANGeneratorConfig
from transgan_hf.attention import AttentionWithBiasGradient


def stage_shapes(config: TransGANGeneratorConfig, batch_size: int) -> list[tuple[int, int, int, int]]:
    """`(batch x windows, heads, tokens, head_dim)` of each stage with blocks and a relative-position bias."""
    shapes = []
    for depth, grid, window, dim in zip(config.depths, config.stage_grid_sizes, config.window_sizes,
                                        config.stage_dims):
        if depth and config.use_relative_position_bias:
            side = window or grid
            windows = (grid // side) ** 2
            shapes.append((batch_size * windows, config.num_attention_heads, side * side,
                           dim // config.num_attention_heads))
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--batch_size", type=int, default=16, help="generator batch")
    args = parser.parse_args()
    device = setup(args)
    if device.type != "cpu":
        parser.error("AttentionWithBiasGradient is the CPU path; on CUDA SDPA's memory-efficient kernel is used.")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.mixed_precision, torch.float32)
    config = TransGANGeneratorConfig.from_preset(args.preset)
    lines, result = {}, {"sdpa_s": [], "ours_s": [], "max_grad_rel_diff": 0.0}
    for shape in stage_shapes(config, args.batch_size):
        generator = torch.Generator().manual_seed(0)
        q, k, v, grad_output = (torch.randn(shape, generator=generator).to(dtype) for _ in range(4))
        bias = (torch.randn((1, shape[1], shape[2], shape[2]), generator=generator) * 0.5).to(dtype)
        implementations = {
            "sdpa": lambda *t: F.scaled_dot_product_attention(*t[:3], attn_mask=t[3]),
            "ours": AttentionWithBiasGradient.apply,
        }
        seconds, gradients = {}, {}
        for name, attention in implementations.items():
            inputs = [t.clone().requires_grad_() for t in (q, k, v, bias)]

            def step(attention=attention, inputs=inputs, grad_output=grad_output) -> None:
                for tensor in inputs:
                    tensor.grad = None
                attention(*inputs).backward(grad_output)

            seconds[name] = median_seconds(step, device, args.steps, args.warmup)
            gradients[name] = [t.grad.float() for t in inputs]
        difference = max(((a - b).norm() / b.norm()).item() for a, b in zip(gradients["ours"], gradients["sdpa"]))
        lines[f"batch, heads, tokens, head dim {shape}"] = (
            f"SDPA {seconds['sdpa']:.3f} s, ours {seconds['ours']:.3f} s ({seconds['sdpa'] / seconds['ours']:.2f}x), "
            f"gradient difference {difference:.1e}"
        )
        result["sdpa_s"].append(round(seconds["sdpa"], 4))
        result["ours_s"].append(round(seconds["ours"], 4))
        result["max_grad_rel_diff"] = max(result["max_grad_rel_diff"], float(f"{difference:.2e}"))
    report(lines, result)


if __name__ == "__main__":
    main()
