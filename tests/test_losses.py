"""GAN losses and the gradient penalty against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from transgan_hf import TransGANDiscriminator, TransGANDiscriminatorConfig
from transgan_hf.training.losses import (
    LOSS_TYPES,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    gradient_penalty_weight,
    input_gradient_penalty,
    uses_gradient_penalty,
)

REAL = torch.tensor([[1.0], [2.0], [-0.5], [3.5]])  # (B, 1) like the discriminator's logits; mean 1.5
FAKE = torch.tensor([[0.5], [-1.0], [2.0], [-3.0]])  # mean -0.375


def softplus(value: float) -> float:
    return math.log1p(math.exp(value))


@pytest.mark.parametrize(
    ("loss_type", "expected"),
    [
        ("wgangp", -1.5 + -0.375),
        ("wgangp-eps", -1.5 + -0.375 + 1e-3 * 1.5**2),  # drift: square of the batch mean (official)
        ("hinge", (0 + 0 + 1.5 + 0) / 4 + (1.5 + 0 + 3.0 + 0) / 4),
        (
            "nonsaturating",
            sum(softplus(-r) for r in (1.0, 2.0, -0.5, 3.5)) / 4 + sum(softplus(f) for f in (0.5, -1.0, 2.0, -3.0)) / 4,
        ),
    ],
)
def test_discriminator_loss_values(loss_type, expected):
    loss = discriminator_loss(REAL, FAKE, loss_type)
    assert loss.ndim == 0 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_drift_is_not_the_mean_of_squares():
    eps, plain = discriminator_loss(REAL, FAKE, "wgangp-eps"), discriminator_loss(REAL, FAKE, "wgangp")
    assert (eps - plain).item() == pytest.approx(1e-3 * 2.25, rel=1e-4)  # mean of squares would give 1e-3 * 4.875


@pytest.mark.parametrize(
    ("loss_type", "expected"),
    [
        ("wgangp", 0.375),
        ("wgangp-eps", 0.375),
        ("hinge", 0.375),
        ("nonsaturating", (softplus(-0.5) + softplus(1.0) + softplus(-2.0) + softplus(3.0)) / 4),  # ≈ 1.2407
    ],
)
def test_generator_loss_values(loss_type, expected):
    assert generator_loss(FAKE, loss_type).item() == pytest.approx(expected, rel=1e-6)


def test_low_precision_logits_give_float32_losses():
    loss = discriminator_loss(REAL.bfloat16(), FAKE.bfloat16(), "wgangp-eps")
    assert loss.dtype == torch.float32
    assert generator_loss(FAKE.half(), "nonsaturating").dtype == torch.float32


def test_unknown_loss_type_lists_choices():
    for call in (
        lambda: discriminator_loss(REAL, FAKE, "lsgan"),
        lambda: generator_loss(FAKE, "lsgan"),
        lambda: uses_gradient_penalty("lsgan"),
    ):
        with pytest.raises(ValueError, match="'lsgan'.*wgangp-eps, wgangp, hinge, nonsaturating"):
            call()


def test_penalty_weight_and_switch():
    assert gradient_penalty_weight(1.0) == 10.0 and gradient_penalty_weight(2.0) == 2.5
    with pytest.raises(ValueError, match="phi"):
        gradient_penalty_weight(0.0)
    assert [uses_gradient_penalty(name) for name in LOSS_TYPES] == [True, True, False, False]


# --- gradient penalty -------------------------------------------------------------------------------------------------


class LinearCritic(nn.Module):
    """f(x) = <w, x> + b: its input gradient is w everywhere."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.linear = nn.Linear(math.prod(shape), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1))


@pytest.mark.parametrize("phi", [1.0, 2.0])
def test_penalty_of_linear_critic(phi):
    torch.manual_seed(0)
    critic = LinearCritic((3, 4, 4))
    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    penalty = gradient_penalty(critic, real, fake, phi=phi, generator=torch.Generator().manual_seed(1))
    expected = (critic.linear.weight.norm().item() - phi) ** 2
    assert penalty.item() == pytest.approx(expected, rel=1e-5)


def test_penalty_interpolates_with_seeded_alpha():
    """f(x) = ½‖x‖² has gradient x, so the penalty reveals where the interpolates lie."""
    real, fake = torch.randn(6, 2, 3, 3), torch.randn(6, 2, 3, 3)
    penalty = gradient_penalty(lambda x: 0.5 * x.square().sum(dim=(1, 2, 3)), real, fake, phi=1.0,
                               generator=torch.Generator().manual_seed(7))
    alpha = torch.rand((6, 1, 1, 1), generator=torch.Generator().manual_seed(7))
    norms = (alpha * real + (1 - alpha) * fake).flatten(1).norm(dim=1)
    assert penalty.item() == pytest.approx((norms - 1).square().mean().item(), rel=1e-5)
    again = gradient_penalty(lambda x: 0.5 * x.square().sum(dim=(1, 2, 3)), real, fake,
                             generator=torch.Generator().manual_seed(7))
    assert torch.equal(penalty, again)
    other = gradient_penalty(lambda x: 0.5 * x.square().sum(dim=(1, 2, 3)), real, fake,
                             generator=torch.Generator().manual_seed(8))
    assert not torch.equal(penalty, other)


def test_penalty_double_backward_matches_finite_differences():
    real, fake = torch.randn(3, 1, 2, 2, dtype=torch.float64), torch.randn(3, 1, 2, 2, dtype=torch.float64)

    def penalty_of(weight: torch.Tensor) -> torch.Tensor:
        critic = lambda x: torch.tanh(x.flatten(1) @ weight).sum(dim=1)  # noqa: E731
        return gradient_penalty(critic, real, fake, phi=1.0, generator=torch.Generator().manual_seed(3))

    weight = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(penalty_of, (weight,))


def test_penalty_does_not_reach_the_inputs():
    real, fake = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4, requires_grad=True)
    penalty = gradient_penalty(LinearCritic((3, 4, 4)), real, fake)
    penalty.backward()
    assert fake.grad is None  # interpolates are detached: the penalty trains the critic only


def test_penalty_through_transgan_discriminator_under_bf16_autocast():
    torch.manual_seed(0)
    discriminator = TransGANDiscriminator(TransGANDiscriminatorConfig.from_preset("tiny"))
    real, fake = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    penalty = gradient_penalty(discriminator, real, fake, generator=torch.Generator().manual_seed(0))  # ModelOutput
    penalty.backward()  # double backward through attention (needs the math SDPA backend)
    grads = [p.grad for p in discriminator.parameters() if p.grad is not None]
    assert len(grads) > 10 and all(torch.isfinite(g).all() for g in grads)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = gradient_penalty(discriminator, real, fake, generator=torch.Generator().manual_seed(0))
    assert low.dtype == torch.float32 and torch.isfinite(low)
    assert low.item() == pytest.approx(penalty.item(), rel=0.1)


def test_mismatched_batches_are_rejected():
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(LinearCritic((3, 4, 4)), torch.zeros(2, 3, 4, 4), torch.zeros(3, 3, 4, 4))


def test_no_host_reads_runs_on_the_meta_device():
    """Meta tensors have no data: a host read (`.item()`, `bool(tensor)`) anywhere in the losses would raise."""
    critic = LinearCritic((3, 4, 4)).to("meta")
    real = torch.empty(2, 3, 4, 4, device="meta")
    penalty = gradient_penalty(critic, real, real)
    logits = critic(real)
    for loss_type in LOSS_TYPES:
        total = discriminator_loss(logits, logits, loss_type) + generator_loss(logits, loss_type) + penalty
        assert total.device.type == "meta" and total.shape == ()


def test_input_gradient_penalty_is_the_mean_squared_gradient_norm_and_reaches_the_parameters():
    """For D(x) = sum(w * x) per sample, grad_x D = w for every sample: the penalty is |w|^2, and its own gradient
    with respect to w is 2w (double backward)."""
    weight = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    images = torch.randn(4, 3).requires_grad_(True)
    logits = (images * weight).sum(dim=1, keepdim=True)
    penalty = input_gradient_penalty(logits, images)
    assert penalty.item() == pytest.approx(1 + 4 + 0.25)
    (gradient,) = torch.autograd.grad(penalty, weight)
    torch.testing.assert_close(gradient, 2 * weight.detach())
    quadratic = input_gradient_penalty((images**2).sum(dim=1, keepdim=True), images)  # grad 2x: mean of 4|x|^2
    assert quadratic.item() == pytest.approx((4 * images.detach() ** 2).sum(dim=1).mean().item(), rel=1e-6)
