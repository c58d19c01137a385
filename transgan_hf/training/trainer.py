"""The official TransGAN update rules (../shared/spec/transgan_official.md §2.2) on Accelerate-prepared networks.

A *step* is one generator update. Each step runs `n_critic * gradient_accumulation_steps` discriminator loader
iterations; the generator update comes right after the first one, as in the official code (it updates G when
`global_steps % (n_critic * accumulation) == 0`, counting from 0). Per loader iteration: fake images from G under
`no_grad`; D loss on DiffAugment-ed real and fake images (`wgangp-eps`, `wgangp`, `hinge` or `nonsaturating`) plus,
for the WGAN-GP losses, the gradient penalty (weight 10/phi^2) on augmented interpolates, for the others the optional
R1 / R2 penalties (weight gamma/2) on the real / generated images (with `gp_interval` N only every N-th D update,
weighted by N: StyleGAN2's lazy regularisation, not in the official code; `gp_batch_shrink` N takes the WGAN-GP
penalty on the first 1/N of the interpolates, like StyleGAN2's `pl_batch_shrink`); backward; every
`gradient_accumulation_steps` iterations clip D's gradient norm to `max_grad_norm` and step Adam. The generator update
accumulates `gen_gradient_accumulation_steps` micro-batches of `-mean D(augment(G(z)))`, clips and steps; the EMA
generator is then updated with the official half-life formula (`ema_kimg`, `ema_warmup`) or a fixed `ema_decay`.
Latents, gradient-penalty mixing weights, noise injection and augmentation draw from seeded `torch.Generator`s on the
device, saved in every checkpoint.

Discriminator gradients during the generator update (a deliberate choice): the official code leaves D's
parameters trainable during the G update, so `backward` of the generator loss also writes `d(-mean D(G(z)))/d theta_D`
into D's gradients after they were zeroed; the next D update adds it to its own gradient (§2.2 of the spec). Since
the D loss contains `+mean D(fake)`, the two fake terms roughly cancel, turning every n-th D update into a noisy
real-only update. `GANTrainer` freezes D during the G update by default (the usual GAN practice and what the paper
describes); `official_d_grad_leak=True` (`--official_d_grad_leak`) reproduces the official behaviour exactly, e.g. to
compare with official runs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..configuration_transgan import TransGANDiscriminatorConfig, TransGANGeneratorConfig
from ..modeling_transgan import TransGANDiscriminator, TransGANGenerator
from .augment import DiffAugment
from .ema import ExponentialMovingAverage, ema_beta
from .losses import (
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    gradient_penalty_weight,
    input_gradient_penalty,
    uses_gradient_penalty,
)
from .presets import TrainingRecipe


class NonFiniteError(RuntimeError):
    """The training diverged: a loss or gradient became NaN or infinite."""


def random_generator(device: torch.device, seed: int, rank: int, purpose: int) -> torch.Generator:
    """A `torch.Generator` on `device` with an independent stream per (seed, process, purpose). Purposes: 0 latents,
    noise injection and penalty mixing weights, 1 augmentation (both `GANTrainer`), 2 sample-grid noise."""
    derived = int(np.random.SeedSequence([seed, rank, purpose]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator(device=device).manual_seed(derived)


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


class GANTrainer:
    """The update rules of the module docstring. `recipe` gives the losses, batches, accumulation, clipping and EMA;
    `official_d_grad_leak` keeps D trainable during the G update;
    `gradient_checkpointing` must say whether the networks recompute their blocks in backward."""

    LOGGED = {  # logged scalar -> what it is averaged over
        "loss/discriminator": "d_iterations", "loss/gradient_penalty": "gp_iterations",
        "loss/r1_penalty": "r1_iterations", "loss/r2_penalty": "r2_iterations",
        "logits/real": "d_iterations", "logits/fake": "d_iterations", "grad_norm/discriminator": "d_updates",
        "loss/generator": "g_updates", "grad_norm/generator": "g_updates",
    }

    def __init__(self, accelerator: Accelerator, generator: torch.nn.Module, discriminator: torch.nn.Module,
                 generator_optimizer: torch.optim.Optimizer, discriminator_optimizer: torch.optim.Optimizer,
                 ema: ExponentialMovingAverage, recipe: TrainingRecipe, *, seed: int,
                 official_d_grad_leak: bool = False, gradient_checkpointing: bool = False) -> None:
        self.accelerator = accelerator
        self.recipe = recipe
        self.official_d_grad_leak = official_d_grad_leak
        self.gradient_checkpointing = gradient_checkpointing
        self.generator, self.discriminator = generator, discriminator
        self.generator_optimizer, self.discriminator_optimizer = generator_optimizer, discriminator_optimizer
        self.ema = ema
        self.plain_generator = accelerator.unwrap_model(generator)
        self.plain_discriminator = accelerator.unwrap_model(discriminator)
        self.latent_dim = self.plain_generator.config.latent_dim
        self.device = accelerator.device
        self.augment = DiffAugment(recipe.diffaug_policy).to(self.device)
        self.noise_rng = random_generator(self.device, seed, accelerator.process_index, purpose=0)
        self.augment_rng = random_generator(self.device, seed, accelerator.process_index, purpose=1)
        self.gp_weight = gradient_penalty_weight(recipe.phi) if uses_gradient_penalty(recipe.loss) else 0.0
        self.g_batch = recipe.gen_batch_size // accelerator.num_processes
        self.monitor = NonFiniteMonitor(self.device)
        self.check_gradients = accelerator.mixed_precision != "fp16"  # the fp16 loss scaler skips non-finite steps
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

    @staticmethod
    def _logits(critic: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                twice_differentiable: bool) -> torch.Tensor:
        """`critic(images)`, with the math attention kernel when a penalty will differentiate the result twice."""
        if not twice_differentiable:
            return critic(images)
        with sdpa_kernel(SDPBackend.MATH):
            return critic(images)

    def _sync_context(self, models: Sequence[torch.nn.Module], sync: bool):
        if sync:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for model in models:
            stack.enter_context(self.accelerator.no_sync(model))
        return stack

    def _clip(self, model: torch.nn.Module, optimizer) -> torch.Tensor:
        self.accelerator.unscale_gradients(optimizer=optimizer)  # fp16: only this optimiser's gradients
        # max_grad_norm 0: no clipping, but the norm is still measured (logged and checked for NaN/inf)
        return torch.nn.utils.clip_grad_norm_(model.parameters(), self.recipe.max_grad_norm or math.inf)

    def discriminator_iteration(self, real: torch.Tensor, step: int, update: bool, penalize: bool = True) -> None:
        """One loader iteration: D loss on a real batch and a fresh fake batch, backward; `update` steps Adam.

        `penalize=False` leaves the gradient penalties out (lazy regularisation, `recipe.gp_interval`); when they are
        in, they are weighted by the interval so that their average strength is the recipe's.
        """
        recipe = self.recipe
        critic = self._critic(self.discriminator)
        wgan_penalty = penalize and bool(self.gp_weight)
        r1 = penalize and recipe.r1_gamma > 0
        r2 = penalize and recipe.r2_gamma > 0
        # The penalties differentiate the critic twice, which only the math attention kernel supports; with gradient
        # checkpointing the whole iteration must use it, since backward recomputes the blocks.
        if (wgan_penalty or r1 or r2) and self.gradient_checkpointing:
            attention = sdpa_kernel([SDPBackend.MATH])
        else:
            attention = contextlib.nullcontext()
        with self._sync_context([self.discriminator], sync=update), attention:
            with torch.no_grad():
                fake = self.plain_generator(self._latents(real.shape[0]), noise_generator=self.noise_rng).images
            fake = fake.float()
            real = real.detach().requires_grad_(r1)
            fake = fake.requires_grad_(r2)
            real_logits = self._logits(critic, real, twice_differentiable=r1)
            fake_logits = self._logits(critic, fake, twice_differentiable=r2)
            loss = discriminator_loss(real_logits, fake_logits, recipe.loss)
            if wgan_penalty:
                kept = max(1, real.shape[0] // recipe.gp_batch_shrink)  # the first `kept` real/fake pairs
                penalty = gradient_penalty(critic, real[:kept].detach(), fake[:kept].detach(), phi=recipe.phi,
                                           generator=self.noise_rng)
                loss = loss + self.gp_weight * recipe.gp_interval * penalty
                self.sums["loss/gradient_penalty"] += penalty.detach()
                self.counts["gp_iterations"] += 1
            for applies, gamma, logits, images, name in ((r1, recipe.r1_gamma, real_logits, real, "r1"),
                                                         (r2, recipe.r2_gamma, fake_logits, fake, "r2")):
                if applies:
                    penalty = input_gradient_penalty(logits, images)
                    loss = loss + gamma / 2 * recipe.gp_interval * penalty
                    self.sums[f"loss/{name}_penalty"] += penalty.detach()
                    self.counts[f"{name}_iterations"] += 1
            self.accelerator.backward(loss / recipe.gradient_accumulation_steps)
        self.monitor.observe("discriminator", "loss", loss, step)
        self.sums["loss/discriminator"] += loss.detach()
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
        recipe = self.recipe
        leak = self.official_d_grad_leak
        discriminator = self.discriminator if leak else self.plain_discriminator
        frozen = [] if leak else [p for p in self.plain_discriminator.parameters() if p.requires_grad]
        for parameter in frozen:
            parameter.requires_grad_(False)
        critic = self._critic(discriminator)
        total = torch.zeros((), device=self.device)
        try:
            for micro in range(recipe.gen_gradient_accumulation_steps):
                last = micro == recipe.gen_gradient_accumulation_steps - 1
                models = [self.generator] + ([self.discriminator] if leak else [])
                with self._sync_context(models, sync=last):
                    fake = self.generator(self._latents(self.g_batch), noise_generator=self.noise_rng).images
                    loss = generator_loss(critic(fake.float()), recipe.loss)
                    self.accelerator.backward(loss / recipe.gen_gradient_accumulation_steps)
                total += loss.detach() / recipe.gen_gradient_accumulation_steps
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
        recipe = self.recipe
        beta = ema_beta(cur_nimg, recipe.train_batch_size, recipe.ema_kimg, recipe.ema_warmup, recipe.ema_decay)
        self.ema.update(self.generator, beta)
        return beta

    def pop_means(self) -> dict[str, float]:
        """Means since the last call, averaged over processes (one host synchronisation). A quantity that was not
        computed in the interval (the penalty between lazy `gp_interval` updates) is left out, not logged as 0."""
        means = torch.stack([total / max(self.counts[self.LOGGED[name]], 1) for name, total in self.sums.items()])
        values = self.accelerator.reduce(means, reduction="mean").tolist()
        computed = {name for name in self.sums if self.counts[self.LOGGED[name]]}  # same counts on every process
        for total in self.sums.values():
            total.zero_()
        self.counts = dict.fromkeys(self.counts, 0)
        return {name: value for name, value in zip(self.sums, values) if name in computed}


def build_models(generator_config: TransGANGeneratorConfig, discriminator_config: TransGANDiscriminatorConfig,
                 device: torch.device, *, seed: int, loss: str, gradient_checkpointing: bool = False,
                 compile: bool = False) -> tuple[TransGANGenerator, TransGANDiscriminator, ExponentialMovingAverage]:
    """Fresh networks (the same on every process: seeded) and the EMA copy of the generator on `device`. `compile`
    leaves the discriminator alone when `loss` has a gradient penalty, whose double backward compiled graphs lack."""
    set_seed(seed)
    generator = TransGANGenerator(generator_config)
    discriminator = TransGANDiscriminator(discriminator_config)
    if gradient_checkpointing:
        for model in (generator, discriminator):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    ema = ExponentialMovingAverage(generator)
    ema.model.to(device)
    if compile:  # in place: parameter names, `save_pretrained` and the EMA copy are unaffected
        generator.compile()
        if not uses_gradient_penalty(loss):
            discriminator.compile()
    return generator, discriminator, ema


def adam_settings(recipe: TrainingRecipe) -> dict[str, Any]:
    """The recipe's Adam hyperparameters; `recipe.fused_adam` (official presets) updates all tensors in one kernel."""
    return dict(lr=recipe.learning_rate, betas=(recipe.adam_beta1, recipe.adam_beta2), eps=recipe.adam_epsilon,
                fused=recipe.fused_adam)


def build_optimizers(generator: torch.nn.Module, discriminator: torch.nn.Module,
                     recipe: TrainingRecipe) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for each network, with `adam_settings(recipe)`."""
    adam = adam_settings(recipe)
    return torch.optim.Adam(generator.parameters(), **adam), torch.optim.Adam(discriminator.parameters(), **adam)


def apply_adam_settings(optimizers: Iterable[torch.optim.Optimizer], recipe: TrainingRecipe) -> None:
    """Set `adam_settings(recipe)` again after a resume: loading an optimiser's state brings back the hyperparameters
    it was saved with, and a resumed segment follows its own flags (say, a lower `--learning_rate` to finish)."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group.update(adam_settings(recipe))
