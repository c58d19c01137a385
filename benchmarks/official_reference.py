#!/usr/bin/env python
"""The official code's training step and sampling, re-enacted on this machine, so that speed ratios come from runs
side by side instead of from figures taken on another day.

    python benchmarks/official_reference.py train_step --preset cifar10 --batch_size 8 --gen_batch_size 16
    python benchmarks/official_reference.py sample --preset cifar10 --batch_size 64

The official code is not in this repository (its licence is non-commercial). This script computes what it computes,
the way `../shared/spec/transgan_official.md` (§1.1, §2.2, §2.3, §8) says it does, on this package's networks (whose
outputs equal the official ones, `tests/test_convert_official.py`), fp32 only, as the official code has no mixed
precision:

- attention written out: `softmax(q @ kᵀ * scale + bias) @ v`, the bias gathered from the table through an int64
  index buffer that every block holds, on every forward (§1.1, §8.4); GELU written out with `erf` (§8.10);
- D step: latents drawn with NumPy in float64 and copied (§8.2); the fake batch generated with autograd on, then
  detached (§8.6); D called on real, fake and interpolated images; the penalty with `create_graph=True`; clipping
  at 5; `torch.optim.Adam` (one tensor at a time on a CPU); `loss.item()` (§8.9);
- G step: the loss through D with D's parameters still requiring gradients (the official D-gradient leak, §2.2),
  clipping, Adam, then the EMA kept as a host-side list and blended from a `deepcopy` of every parameter (§2.3,
  §8.1);
- sampling: NumPy latents, `G(z)` under `no_grad`.

The rest is this package's code (DiffAugment, norms, pixel shuffle, penalty interpolation), which is at least as fast
as the official one, so the figures here are at most the official code's: a ratio against them is a lower bound.
`--check` first compares both networks' outputs with the package's own forward (they must agree to float rounding).
The last line is one JSON object with the keys of `train_step.py` or `sample.py`.
"""

from __future__ import annotations

import argparse
import copy
import math

import numpy as np
import torch
from harness import add_common_arguments, median_seconds, peak_memory_mb, report, setup
from torch import nn

from transgan_hf import (
    TransGANDiscriminator,
    TransGANDiscriminatorConfig,
    TransGANGenerator,
    TransGANGeneratorConfig,
)
from transgan_hf.cpu_memory import reuse_freed_cpu_memory
from transgan_hf.modeling_transgan import TransGANSelfAttention
from transgan_hf.training.augment import DiffAugment
from transgan_hf.training.losses import discriminator_loss, generator_loss, gradient_penalty, gradient_penalty_weight
from transgan_hf.training.presets import get_training_recipe


class WrittenOutGELU(nn.Module):
    """The official `gelu`: the erf formula as separate element-wise ops."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states * 0.5 * (1.0 + torch.erf(hidden_states / math.sqrt(2.0)))


class WrittenOutAttention(TransGANSelfAttention):
    """Self-attention as the official code computes it: the full logits materialised, the bias re-gathered per call."""

    def forward(self, hidden_states: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if self.noise_strength is not None and noise is not None:
            hidden_states = hidden_states + noise * self.noise_strength
        batch, tokens, channels = hidden_states.shape
        head_dim = channels // self.num_heads
        qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv[0], qkv[1], qkv[2]
        logits = (query @ key.transpose(-2, -1)) * head_dim**-0.5
        if self.bias_window:
            bias = self.relative_position_bias_table[self.official_index.view(-1)].view(tokens, tokens, -1)
            logits = logits + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        attended = (logits.softmax(dim=-1) @ value).transpose(1, 2).reshape(batch, tokens, channels)
        return self.proj(attended)


def official_pattern(model: nn.Module) -> nn.Module:
    """Swap attention and GELU for the official code's written-out forms, in place (parameters unchanged)."""
    for module in list(model.modules()):
        if isinstance(module, TransGANSelfAttention):
            module.__class__ = WrittenOutAttention
            if module.bias_window:  # a copy per block, as the official state dicts hold one
                index = module.relative_position_index.clone()
                module.register_buffer("official_index", index, persistent=False)
        for name, child in module.named_children():
            if isinstance(child, nn.GELU) and child.approximate == "none":
                setattr(module, name, WrittenOutGELU())
    return model


def numpy_latents(batch_size: int, latent_dim: int, device: torch.device) -> torch.Tensor:
    """Latents as the official loop draws them: float64 NumPy on the host, converted and copied each call."""
    return torch.tensor(np.random.normal(0, 1, (batch_size, latent_dim)), dtype=torch.float32, device=device)


def swap_and_check(generator: TransGANGenerator, discriminator: TransGANDiscriminator, device: torch.device) -> str:
    """`official_pattern` on both networks, checking that their outputs stay the package's (same weights); returns
    the largest relative difference."""
    torch.manual_seed(0)
    latents = torch.randn(2, generator.config.latent_dim, device=device)
    config = discriminator.config
    images = torch.rand(2, config.in_channels, config.image_size, config.image_size, device=device) * 2 - 1
    with torch.no_grad():
        ours_g = generator(latents, noise_generator=torch.Generator(device).manual_seed(1)).images
        ours_d = discriminator(images, noise_generator=torch.Generator(device).manual_seed(1)).logits
        official_pattern(generator), official_pattern(discriminator)
        theirs_g = generator(latents, noise_generator=torch.Generator(device).manual_seed(1)).images
        theirs_d = discriminator(images, noise_generator=torch.Generator(device).manual_seed(1)).logits
    worst = max(
        ((a - b).abs().max() / b.abs().max()).item() for a, b in ((theirs_g, ours_g), (theirs_d, ours_d))
    )
    if worst > 1e-4:
        raise SystemExit(f"error: the written-out forwards differ from the package's by {worst:.2e}")
    return f"{worst:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=("train_step", "sample"))
    add_common_arguments(parser)
    parser.add_argument("--batch_size", type=int, default=None,
                        help="D batch (train_step, default 8) or sampling batch (sample, default 64)")
    parser.add_argument("--gen_batch_size", type=int, default=16, help="generator batch (train_step)")
    parser.add_argument("--check", action="store_true", help="compare the forwards with the package's first")
    parser.add_argument("--cpu_memory_reuse", action="store_true",
                        help="give the official code our CPU allocator setting (transgan_hf.cpu_memory), which it "
                             "does not have: to tell that setting's share of a speed-up from the code's")
    args = parser.parse_args()
    if args.mixed_precision != "no" or args.compile:
        parser.error("the official code has neither mixed precision nor torch.compile: drop those flags")
    device = setup(args)
    if args.cpu_memory_reuse and device.type == "cpu":
        reuse_freed_cpu_memory()
    np.random.seed(0)
    torch.manual_seed(0)
    generator = TransGANGenerator(TransGANGeneratorConfig.from_preset(args.preset)).to(device)
    discriminator = TransGANDiscriminator(TransGANDiscriminatorConfig.from_preset(args.preset)).to(device)
    if args.check:
        checked = swap_and_check(generator, discriminator, device)
    else:
        checked = "not run (--check)"
        official_pattern(generator), official_pattern(discriminator)
    latent_dim = generator.config.latent_dim
    lines = {"preset": args.preset, "device": str(device), "pattern": "official code (re-enacted), fp32",
             "forwards vs package": checked}

    if args.task == "sample":
        batch_size = args.batch_size or 64
        generator.eval()

        def sample() -> None:
            with torch.no_grad():
                generator(numpy_latents(batch_size, latent_dim, device))

        seconds = median_seconds(sample, device, args.steps, args.warmup)
        memory = peak_memory_mb(device)
        lines.update({"batch_size": str(batch_size), "seconds per batch": f"{seconds:.3f}",
                      "images/s": f"{batch_size / seconds:.2f}", "peak memory (MB)": f"{memory:.0f}"})
        report(lines, {"images_per_s": round(batch_size / seconds, 3), "peak_mem_mb": round(memory, 1)})
        return

    recipe = get_training_recipe(args.preset)
    batch_size = args.batch_size or 8
    augment = DiffAugment(recipe.diffaug_policy).to(device)
    g_opt = torch.optim.Adam(generator.parameters(), recipe.learning_rate, betas=(recipe.adam_beta1, recipe.adam_beta2))
    d_opt = torch.optim.Adam(discriminator.parameters(), recipe.learning_rate,
                             betas=(recipe.adam_beta1, recipe.adam_beta2))
    ema = [copy.deepcopy(parameter.data).cpu() for parameter in generator.parameters()]
    penalty_weight = gradient_penalty_weight(recipe.phi)
    size = generator.config.image_size
    real = torch.rand((batch_size, generator.config.out_channels, size, size), device=device) * 2 - 1

    def critic(images: torch.Tensor) -> torch.Tensor:  # DiffAugment inside every D call, as in the official D
        return discriminator(augment(images)).logits

    def d_step() -> None:
        fake = generator(numpy_latents(batch_size, latent_dim, device)).images.detach()
        real_logits, fake_logits = critic(real), critic(fake)
        loss = discriminator_loss(real_logits, fake_logits, recipe.loss)
        loss = loss + penalty_weight * gradient_penalty(critic, real, fake, phi=recipe.phi)
        loss.backward()
        nn.utils.clip_grad_norm_(discriminator.parameters(), recipe.max_grad_norm)
        d_opt.step()
        d_opt.zero_grad()
        loss.item()

    def g_step() -> None:
        fake = generator(numpy_latents(args.gen_batch_size, latent_dim, device)).images
        loss = generator_loss(critic(fake), recipe.loss)
        loss.backward()  # D's parameters require gradients here too (the official leak)
        nn.utils.clip_grad_norm_(generator.parameters(), recipe.max_grad_norm)
        g_opt.step()
        g_opt.zero_grad()
        loss.item()
        beta = 0.999  # any value: the cost is the copies and the blend
        for parameter, average in zip(generator.parameters(), ema):
            host_copy = copy.deepcopy(parameter)
            average.mul_(beta).add_(host_copy.cpu().data, alpha=1 - beta)
            del host_copy

    d_seconds = median_seconds(d_step, device, args.steps, args.warmup)
    g_seconds = median_seconds(g_step, device, args.steps, args.warmup)
    memory = peak_memory_mb(device)
    lines.update({"D batch / G batch": f"{batch_size} / {args.gen_batch_size}",
                  "D step (s, median)": f"{d_seconds:.3f}", "G step (s, median)": f"{g_seconds:.3f}",
                  "D images/s": f"{batch_size / d_seconds:.2f}", "G images/s": f"{args.gen_batch_size / g_seconds:.2f}",
                  "peak memory (MB)": f"{memory:.0f}"})
    report(lines, {"d_step_s": round(d_seconds, 4), "g_step_s": round(g_seconds, 4), "peak_mem_mb": round(memory, 1)})


if __name__ == "__main__":
    main()
