"""GAN losses of the official TransGAN training loop (../shared/spec/transgan_official.md §2.2).

`wgangp-eps` is the recipe of every official config: WGAN critic loss, gradient penalty weighted 10 / φ², plus a drift
term 1e-3 · (mean D(real))² — the square of the batch *mean*, as the official code computes it (ProGAN's ε-drift is
the mean of the squares). The penalty is returned unweighted so the caller can log it separately. `hinge` and
`nonsaturating` are regularised instead with R1 / R2 (`input_gradient_penalty`), as modern conv GAN baselines are.

Half-precision logits are promoted to float32 before reduction, and the penalty's gradient norm is taken in float32,
so the losses stay sound when the discriminator runs under bf16/fp16 autocast.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

LOSS_TYPES: tuple[str, ...] = ("wgangp-eps", "wgangp", "hinge", "nonsaturating")

DRIFT_WEIGHT = 1e-3


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Promote bf16/fp16 to float32 (float64 stays float64) before reductions."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _check_loss_type(loss_type: str) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"Unknown loss type {loss_type!r}; valid choices are {', '.join(LOSS_TYPES)}.")


def uses_gradient_penalty(loss_type: str) -> bool:
    """Whether the discriminator loss of `loss_type` is completed by `gradient_penalty` (the WGAN-GP family)."""
    _check_loss_type(loss_type)
    return loss_type.startswith("wgangp")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, loss_type: str) -> torch.Tensor:
    """Discriminator (critic) loss, without the gradient penalty; a scalar, at least float32."""
    _check_loss_type(loss_type)
    real, fake = _at_least_float32(real_logits), _at_least_float32(fake_logits)
    if loss_type == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if loss_type == "nonsaturating":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    real_mean = real.mean()
    loss = fake.mean() - real_mean
    if loss_type == "wgangp-eps":
        loss = loss + DRIFT_WEIGHT * real_mean.square()
    return loss


def generator_loss(fake_logits: torch.Tensor, loss_type: str) -> torch.Tensor:
    """Generator loss on the discriminator's logits of generated images; a scalar, at least float32."""
    _check_loss_type(loss_type)
    fake = _at_least_float32(fake_logits)
    if loss_type == "nonsaturating":
        return F.softplus(-fake).mean()
    return -fake.mean()


def gradient_penalty_weight(phi: float) -> float:
    """Weight of the penalty in the discriminator loss, 10 / φ² (official)."""
    if not 0 < phi < math.inf:  # also refuses NaN
        raise ValueError(f"The gradient-penalty target norm phi must be positive and finite, got {phi}.")
    return 10.0 / phi**2


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    phi: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP penalty `mean((‖∇ₓ critic(x)‖₂ − φ)²)` at `x = α·real + (1 − α)·fake`, α ~ U(0, 1) per sample.

    α is drawn on the images' device (from `generator` when given). The gradient is taken with `create_graph=True`,
    so back-propagating the result reaches the critic's parameters (double backward). `critic` may return a tensor
    or a model output with `.logits`. The result is a scalar (at least float32), not yet weighted: see
    `gradient_penalty_weight`.

    The critic runs with the math `scaled_dot_product_attention` backend: the fused (flash / memory-efficient)
    kernels have no double backward, on CPU or GPU.
    """
    if real.shape != fake.shape:
        raise ValueError(
            f"real and fake batches must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}."
        )
    alpha_shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    alpha = torch.rand(alpha_shape, generator=generator, device=real.device).to(real.dtype)
    interpolates = torch.lerp(fake.detach(), real.detach(), alpha).requires_grad_(True)
    with sdpa_kernel(SDPBackend.MATH):
        scores = critic(interpolates)
    scores = getattr(scores, "logits", scores)
    (gradients,) = torch.autograd.grad(outputs=_at_least_float32(scores).sum(), inputs=interpolates, create_graph=True)
    norms = _at_least_float32(gradients).flatten(start_dim=1).norm(dim=1)
    return (norms - phi).square().mean()


def input_gradient_penalty(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """`mean ‖∇ₓ D(x)‖²` over the batch, at the images D was given: R1 on real images (Mescheder et al. 2018,
    StyleGAN2), R2 on generated ones (R3GAN). `images` must require grad and `logits` come from a critic run with a
    double-backward kernel (see `gradient_penalty`). Unweighted: the loss adds `gamma / 2` times it."""
    (gradients,) = torch.autograd.grad(_at_least_float32(logits).sum(), images, create_graph=True)
    return _at_least_float32(gradients).flatten(start_dim=1).square().sum(dim=1).mean()
