"""EMA of the generator: the official β formula and the fused on-device update."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transgan_hf import TransGANGenerator, TransGANGeneratorConfig
from transgan_hf.training.ema import ExponentialMovingAverage, ema_beta, unwrap_model

# --- β formula --------------------------------------------------------------------------------------------------------


def test_beta_warmup_starts_at_zero_and_reaches_the_cifar_steady_state():
    # CIFAR-10 recipe: global D batch 64, ema_kimg 500, ema_warmup 0.1.
    assert ema_beta(0, 64, ema_kimg=500, ema_warmup=0.1) == 0.0  # the average starts as a copy
    assert ema_beta(1_000_000, 64, ema_kimg=500, ema_warmup=0.1) == pytest.approx(0.5 ** (64 / 100_000))
    steady = 0.5 ** (64 / 500_000)
    assert ema_beta(5_000_000, 64, ema_kimg=500, ema_warmup=0.1) == pytest.approx(steady)  # warm-up ends at 5 M
    assert ema_beta(80_000_000, 64, ema_kimg=500, ema_warmup=0.1) == pytest.approx(steady)
    assert steady == pytest.approx(0.999911, abs=1e-6)
    assert ema_beta(0, 64, ema_kimg=500) == pytest.approx(steady)  # no warm-up: steady from the start
    betas = [ema_beta(n, 64, 500, 0.1) for n in range(0, 6_000_000, 500_000)]
    assert betas == sorted(betas)


def test_fixed_decay_wins_and_bad_settings_are_rejected():
    assert ema_beta(123, 16, ema_kimg=500, ema_warmup=0.1, ema_decay=0.995) == 0.995  # 256-px recipe
    assert ema_beta(0, 16, ema_kimg=None, ema_decay=0.995) == 0.995
    with pytest.raises(ValueError, match="ema_kimg .* ema_decay"):
        ema_beta(0, 64, ema_kimg=None)
    with pytest.raises(ValueError, match="ema_decay"):
        ema_beta(0, 64, ema_kimg=None, ema_decay=1.5)
    with pytest.raises(ValueError, match="non-negative"):
        ema_beta(0, 64, ema_kimg=-1)


# --- update -----------------------------------------------------------------------------------------------------------


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def perturb(model: nn.Module) -> None:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))


def test_update_is_the_exponential_blend():
    model = small_model()
    ema = ExponentialMovingAverage(model)
    before = {name: p.clone() for name, p in ema.model.named_parameters()}
    perturb(model)
    ema.update(model, beta=0.9)
    for name, parameter in model.named_parameters():
        expected = 0.9 * before[name] + 0.1 * parameter
        torch.testing.assert_close(dict(ema.model.named_parameters())[name], expected)
    ema.update(model, beta=1.0)  # β = 1: frozen
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(dict(ema.model.named_parameters())[name], 0.9 * before[name] + 0.1 * parameter)
    ema.update(model, beta=0.0)  # β = 0: copy
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(dict(ema.model.named_parameters())[name], parameter, rtol=0, atol=0)


def test_buffers_are_copied_and_the_copy_is_frozen():
    model = small_model().train()
    ema = ExponentialMovingAverage(model)
    model(torch.randn(8, 3))  # moves BatchNorm running statistics
    ema.update(model, beta=0.99)
    for (name, buffer), (_, ema_buffer) in zip(model.named_buffers(), ema.model.named_buffers()):
        assert torch.equal(buffer, ema_buffer), name
    assert not ema.model.training and model.training
    assert not any(p.requires_grad for p in ema.model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert all(a is not b for a, b in zip(model.parameters(), ema.model.parameters()))


class Wrapper(nn.Module):
    """Stands in for DDP / Accelerate wrappers, which expose the real model as `.module`."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def test_update_through_wrappers_and_compile():
    model = small_model()
    compiled = torch.compile(model)  # an OptimizedModule; not called, so nothing is compiled
    assert unwrap_model(Wrapper(compiled)) is model
    ema = ExponentialMovingAverage(Wrapper(model))
    assert [n for n, _ in ema.model.named_parameters()] == [n for n, _ in model.named_parameters()]
    perturb(model)
    ema.update(Wrapper(compiled), beta=0.0)
    for parameter, ema_parameter in zip(model.parameters(), ema.model.parameters()):
        assert torch.equal(parameter, ema_parameter)


def test_state_dict_round_trip_and_mismatch_error():
    model = small_model()
    ema = ExponentialMovingAverage(model)
    perturb(model)
    ema.update(model, beta=0.5)
    restored = ExponentialMovingAverage(small_model())
    restored.load_state_dict(ema.state_dict())
    for a, b in zip(ema.model.state_dict().values(), restored.model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="same architecture"):
        ema.update(nn.Linear(3, 2), beta=0.5)


def test_tiny_generator():
    config = TransGANGeneratorConfig.from_preset("tiny")
    torch.manual_seed(0)
    generator = TransGANGenerator(config)
    ema = ExponentialMovingAverage(generator)
    assert isinstance(ema.model, TransGANGenerator) and not ema.model.training
    perturb(generator)
    ema.update(generator, beta=0.999)
    ema.update(generator, beta=0.0)
    latents = torch.randn(2, config.latent_dim)
    with torch.no_grad():
        torch.testing.assert_close(ema.model(latents).images, generator.eval()(latents).images)


def test_no_host_reads_runs_on_the_meta_device():
    model = small_model().to("meta")
    ema = ExponentialMovingAverage(model)
    ema.update(model, beta=ema_beta(0, 64, 500, 0.1))
    assert next(ema.model.parameters()).device.type == "meta"
