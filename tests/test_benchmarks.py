"""The benchmark scripts run and print their JSON line; the re-enacted official code computes what the package does."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transgan_hf import (
    TransGANDiscriminator,
    TransGANDiscriminatorConfig,
    TransGANGenerator,
    TransGANGeneratorConfig,
)

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def load_official_reference():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling `harness`
    try:
        spec = importlib.util.spec_from_file_location("official_reference", BENCHMARKS / "official_reference.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_official_pattern_computes_what_the_package_computes() -> None:
    """The written-out attention (gathered bias, materialised logits) and erf GELU give the package's outputs and input
    gradients, so the reference times the same computation; the swap really happened."""
    reference = load_official_reference()
    torch.manual_seed(0)
    # The tiny preset with the official features it leaves out: bias tables, windowed attention, noise in D.
    generator = TransGANGenerator(
        TransGANGeneratorConfig.from_preset("tiny", use_relative_position_bias=True, window_sizes=[0, 8, 4])
    )
    discriminator = TransGANDiscriminator(
        TransGANDiscriminatorConfig.from_preset("tiny", use_relative_position_bias=True, noise_injection=True,
                                                window_sizes=[4, 0])
    )
    tables = [m.relative_position_bias_table for m in (*generator.modules(), *discriminator.modules())
              if getattr(m, "bias_window", 0)]
    assert len(tables) == 7  # 5 generator blocks, 2 discriminator blocks
    for table in tables:  # non-zero tables, so a wrongly gathered bias shows
        torch.nn.init.normal_(table, std=0.5)
    latents = torch.randn(3, generator.config.latent_dim)
    config = discriminator.config
    images = (torch.rand(3, config.in_channels, config.image_size, config.image_size) * 2 - 1).requires_grad_(True)

    def run():
        fake = generator(latents, noise_generator=torch.Generator().manual_seed(1)).images
        logits = discriminator(images, noise_generator=torch.Generator().manual_seed(1)).logits
        (gradient,) = torch.autograd.grad(logits.sum(), images)
        return fake.detach(), logits.detach(), gradient

    expected = run()
    reference.official_pattern(generator), reference.official_pattern(discriminator)
    swapped = [type(m).__name__ for m in (*generator.modules(), *discriminator.modules())]
    assert "WrittenOutAttention" in swapped and "WrittenOutGELU" in swapped
    assert "TransGANSelfAttention" not in swapped and "GELU" not in swapped
    for actual, wanted in zip(run(), expected):
        torch.testing.assert_close(actual, wanted, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "command, keys",
    [
        (["train_step.py"], {"d_step_s", "g_step_s", "peak_mem_mb"}),
        (["sample.py", "--batch_size", "8"], {"images_per_s", "peak_mem_mb"}),
        (["official_reference.py", "train_step", "--check"], {"d_step_s", "g_step_s", "peak_mem_mb"}),
        (["official_reference.py", "sample", "--batch_size", "8"], {"images_per_s", "peak_mem_mb"}),
    ],
)
def test_benchmark_script_prints_its_json_line(command: list[str], keys: set[str]) -> None:
    result = subprocess.run(
        [sys.executable, *command, "--preset", "tiny", "--steps", "1", "--warmup", "0", "--threads", "1"],
        cwd=BENCHMARKS, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(numbers) == keys
    assert all(value > 0 for value in numbers.values())


def test_official_reference_refuses_mixed_precision() -> None:
    result = subprocess.run(
        [sys.executable, "official_reference.py", "sample", "--preset", "tiny", "--mixed_precision", "bf16"],
        cwd=BENCHMARKS, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2 and "neither mixed precision" in result.stderr


def test_side_by_side_reports_a_ratio_per_configuration() -> None:
    result = subprocess.run(
        [sys.executable, "side_by_side.py", "--preset", "tiny", "--rounds", "1", "--steps", "1", "--warmup", "0",
         "--sample_batch_size", "8", "--also_official_with_cpu_memory_reuse"],
        cwd=BENCHMARKS, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    names = {"train fp32", "train bf16", "train bf16 gp_interval 2", "train bf16 gp_interval 2 OMP active",
             "sample fp32", "sample bf16", "sample bf16 weights"}
    names |= {f"{name} vs official + reuse" for name in names}
    assert set(summary["median_speedup"]) == names == set(summary["rounds"])
    assert all(len(values) == 1 and values[0] > 0 for values in summary["rounds"].values())


def test_train_step_benchmark_times_training_with_its_openmp_wait_policy() -> None:
    """training/train.py sets OMP_WAIT_POLICY before torch loads; the benchmark must time the same setting."""
    pattern = re.compile(r'^os\.environ\.setdefault\("OMP_WAIT_POLICY", "(\w+)"\)$', re.MULTILINE)
    training = pattern.findall((ROOT / "training" / "train.py").read_text())
    benchmark = pattern.findall((BENCHMARKS / "train_step.py").read_text())
    assert training == benchmark == ["PASSIVE"]
