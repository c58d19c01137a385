"""Projection: the latent vectors whose images reproduce given images (the idea of StyleGAN2-ADA's `projector.py`,
for TransGAN's generator, which has no mapping network: the latent optimised is the generator's input `z`).

`TransGANPipeline.project` calls `project_images`. The method, chosen by measurement on the bundled demo model
(`benchmarks/projection_quality.py`; figures in `benchmarks/results/2026-11-29_projection_demo.md`):

- **Objective**: mean squared pixel error at three scales (the full image and its 2x and 4x average-pooled copies),
  so that the coarse shape weighs as much as the detail. Where a target pixel is pure black or white, the generator's
  raw output only has to reach it, since images are clipped to [-1, 1] when shown (little change on the demo model;
  a generator whose raw output overshoots far could otherwise never match). Nothing is downloaded (no perceptual
  network), so it works offline for any pipeline. Measured and left out: the discriminator's hidden features as a
  further term (real digits were read as the same digit no more often, and it needs a discriminator and its pass at
  every step).
- **Latent prior**: the latents stay on the sphere of radius `sqrt(latent_dim)`, where nearly all the standard
  normal latents the generator was trained on lie (renormalised after every step). Off that sphere the optimisation
  finds images the generator never learnt to make; a soft penalty on the norm helped less.
- **Starts**: a pool of `POOL_SIZE` random latents drawn once for all images; each image starts from the
  `num_starts` pool samples nearest to it (by the same objective), which start far closer than random latents. After
  `SELECT_AT` of the steps only each image's best start goes on, so the extra starts cost little.
- **Schedule**: Adam with a learning rate ramped up over the first `RAMP_UP` of the steps and down along a cosine
  over the last `RAMP_DOWN`, as StyleGAN's projector. StyleGAN's latent exploration noise made the short schedules
  used here worse and is left out.
- **Noise injection** is held fixed, not optimised: every image and start gets the per-token noise that
  `torch.Generator().manual_seed(noise_seed)` draws for one image, so that the returned latents reproduce the
  reconstructions through the ordinary sampling call,
  `pipe(latents=latents, generator=[torch.Generator().manual_seed(noise_seed) for _ in latents])`.
  (Optimised noise maps would fit more detail, but a latent alone would then no longer give the image back.)

Package-only (it reads images with `transgan_hf.data`): the pipeline imports it by name when `project` is called.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils import BaseOutput
from PIL import Image

from .data import decode_image, preprocess_image
from .sampling import eval_mode, samples_per_pass

if TYPE_CHECKING:
    from .pipeline_transgan import TransGANPipeline

POOL_SIZE = 1024
"""Random latents drawn once per call; each image starts from the ones nearest to it."""
SCALES = 3
"""Pixel error at the full size and after 2x and 4x average pooling."""
LEARNING_RATE = 0.1
RAMP_UP = 0.05
RAMP_DOWN = 0.25
SELECT_AT = 0.3
"""Share of the steps after which only each image's best start goes on."""
MAX_ROWS_PER_PASS = 64
"""Starts optimised in one forward/backward pass: larger passes are slower per start on a CPU and hold more memory."""


@dataclass
class TransGANProjectionOutput(BaseOutput):
    """Output of [`TransGANPipeline.project`].

    Args:
        images: the reconstructions, as `output_type` asks (PIL images, `(B, H, W, C)` array or `(B, C, H, W)` tensor,
            in [0, 1]).
        latents: `(B, latent_dim)` float32 latents that reproduce them (CPU).
        distances: `(B,)` the final objective of each image (multi-scale mean squared error in [-1, 1] units).
        trajectory: with `record_every`, `(frames, B, latent_dim)` latents of the kept start of each image at steps
            0, `record_every`, 2 * `record_every`, ... and after the last step; else None.
    """

    images: list[Image.Image] | np.ndarray | torch.Tensor
    latents: torch.Tensor
    distances: torch.Tensor
    trajectory: torch.Tensor | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Target images
# ---------------------------------------------------------------------------------------------------------------------


def target_pixels(images: Any, image_size: int, channels: int) -> torch.Tensor:
    """`(B, channels, image_size, image_size)` float32 targets in [-1, 1] from what `project` accepts: a PIL image, an
    image file path, a NumPy array (`(H, W[, C])` one image, `(B, H, W, C)` a batch; uint8, or floats in [0, 1]), a
    tensor in [0, 1] (`(C, H, W)` one image, `(B, C, H, W)` a batch, as the pipeline's `"pt"` output), or a list of
    these.

    Every image is read as training reads its images (`transgan_hf.data`): converted to RGB (greyscale, palette,
    transparency over white, 16-bit, ...), its shorter side resized to `image_size`, centre-cropped; 8-bit, like a
    file. Models with one output channel get the ITU-R 601 luma of it.
    """
    items = split_batch(images)
    if not items:
        raise ValueError("`images` is empty; pass at least one image.")
    pixels = []
    for index, item in enumerate(items):
        where = f"images[{index}]" if len(items) > 1 or isinstance(images, (list, tuple)) else "the image"
        try:
            pixels.append(preprocess_image(decode_image(as_decodable(item)), image_size, center_crop=True))
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(f"Cannot read {where}: {str(error).rstrip('.')}.") from None
    targets = torch.stack(pixels)
    if channels == 1:
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (targets * luma).sum(dim=1, keepdim=True)
    if channels != 3:
        raise ValueError(f"Projection reads RGB or greyscale images; this generator makes {channels}-channel ones.")
    return targets


def split_batch(images: Any) -> list[Any]:
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return list(images)
    return [images]


def as_decodable(item: Any) -> Any:
    """What `transgan_hf.data.decode_image` reads: PIL images, `{"path"}` dicts and `(H, W[, C])` arrays."""
    if isinstance(item, (str, Path)):
        return {"path": str(item), "bytes": None}
    if isinstance(item, torch.Tensor):
        if item.dim() != 3 or item.shape[0] not in (1, 3, 4):
            raise ValueError(f"a tensor image must have shape (C, H, W) with 1, 3 or 4 channels, got "
                             f"{tuple(item.shape)}")
        if not item.is_floating_point():
            raise ValueError(f"a tensor image must hold floats in [0, 1], got {item.dtype}")
        return item.detach().float().cpu().permute(1, 2, 0).numpy()
    if isinstance(item, (Image.Image, np.ndarray)):
        return item
    raise TypeError(f"expected a PIL image, a file path, a NumPy array or a torch tensor, got {type(item).__name__}")


# ---------------------------------------------------------------------------------------------------------------------
# Objective, prior and noise
# ---------------------------------------------------------------------------------------------------------------------


def distance(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`(B,)` the objective: `multiscale_error` of the raw generator images clipped to the target where the target is
    pure black or white (-1 or 1), as they are clipped when shown."""
    shown = torch.where(targets >= 1, images.clamp(max=1), torch.where(targets <= -1, images.clamp(min=-1), images))
    return multiscale_error(shown, targets)


def multiscale_error(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`(B,)` mean squared error (pairs row by row), averaged over the full size and `SCALES - 1` halvings."""
    errors = []
    for scale in range(SCALES):
        if scale:
            images, targets = F.avg_pool2d(images, 2), F.avg_pool2d(targets, 2)
        errors.append((images - targets).square().flatten(1).mean(dim=1))
    return torch.stack(errors).mean(dim=0)


def multiscale_error_matrix(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`(len(targets), len(images))`: `multiscale_error` of every target against every image, by inner products
    (no `(targets x images x pixels)` tensor)."""
    errors = 0
    for scale in range(SCALES):
        if scale:
            images, targets = F.avg_pool2d(images, 2), F.avg_pool2d(targets, 2)
        a, b = targets.flatten(1), images.flatten(1)
        squared = a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2 * a @ b.T
        errors = errors + squared.clamp_min(0) / a.shape[1]
    return errors / SCALES


class FixedNoise:
    """The generator's per-token noise, the same in every forward pass: what `torch.Generator().manual_seed(seed)`
    draws for a single image, drawn once and repeated for every row.

    A noise source by the generator's `draw(batch_size, num_tokens)` protocol (that of
    `transgan_hf.modeling_transgan.BatchNoiseRows`); the blocks draw in a fixed order, so `restart()` before each
    forward pass gives every block its own noise again.
    """

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.draws: list[torch.Tensor] = []
        self.position = 0

    def restart(self) -> FixedNoise:
        self.position = 0
        return self

    def draw(self, batch_size: int, num_tokens: int) -> torch.Tensor:
        if self.position == len(self.draws):
            self.draws.append(torch.randn((1, num_tokens, 1), generator=self.generator))
        noise = self.draws[self.position]
        self.position += 1
        return noise.expand(batch_size, num_tokens, 1)


def onto_sphere(latents: torch.Tensor) -> torch.Tensor:
    """Each row scaled to norm `sqrt(latent_dim)` (the latent prior)."""
    return latents * math.sqrt(latents.shape[1]) / latents.norm(dim=1, keepdim=True)


def learning_rate(step: int, num_steps: int) -> float:
    """StyleGAN-projector schedule: linear ramp-up, constant, cosine ramp-down to 0 over the last `RAMP_DOWN`."""
    fraction = step / num_steps
    down = min(1.0, (1 - fraction) / RAMP_DOWN)
    up = min(1.0, (step + 1) / (RAMP_UP * num_steps + 1))
    return LEARNING_RATE * up * (0.5 - 0.5 * math.cos(down * math.pi))


# ---------------------------------------------------------------------------------------------------------------------
# The optimisation
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Projection:
    latents: torch.Tensor
    images: torch.Tensor
    distances: torch.Tensor
    trajectory: torch.Tensor | None


def project_images(
    pipeline: TransGANPipeline,
    images: Any,
    num_steps: int,
    num_starts: int,
    generator: torch.Generator | None,
    noise_seed: int,
    record_every: int | None,
) -> Projection:
    """Optimise `num_starts` latents per image for `num_steps` Adam steps (see the module docstring); returns the kept
    latents, their raw generator images `(B, C, H, W)`, the final distances and the recorded trajectory."""
    network = pipeline.generator
    config = network.config
    device = pipeline._execution_device
    targets = target_pixels(images, config.image_size, config.out_channels).to(device)
    num_images = len(targets)
    rows = num_images * num_starts
    noise = FixedNoise(noise_seed)
    pass_size = min(MAX_ROWS_PER_PASS, samples_per_pass(network, None, device, max(rows, POOL_SIZE)))

    def render(latents: torch.Tensor) -> torch.Tensor:
        return network(latents, noise_generator=noise.restart()).images.float()

    with eval_mode(network):
        with torch.no_grad():
            starts = nearest_starts(pipeline, render, targets, num_starts, generator, pass_size)
        latents = starts.reshape(rows, config.latent_dim).to(device=device, dtype=torch.float32).requires_grad_(True)
        row_targets = targets.repeat_interleave(num_starts, dim=0)
        optimizer = torch.optim.Adam([latents], lr=LEARNING_RATE)
        active = torch.arange(rows, device=device)
        frames = []
        for step in pipeline.progress_bar(range(num_steps)):
            if record_every is not None and step % record_every == 0:
                frames.append(latents.detach().clone())
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, num_steps)
            optimizer.zero_grad(set_to_none=False)
            distances = torch.full((rows,), math.inf, device=device)
            with torch.enable_grad():
                for start in range(0, len(active), pass_size):
                    chunk = active[start:start + pass_size]
                    error = distance(render(latents[chunk]), row_targets[chunk])
                    error.sum().backward(inputs=[latents])
                    distances[chunk] = error.detach()
            optimizer.step()
            with torch.no_grad():
                latents.copy_(onto_sphere(latents))
            if num_starts > 1 and step == int(SELECT_AT * num_steps):
                best = distances.view(num_images, num_starts).argmin(dim=1)
                active = torch.arange(num_images, device=device) * num_starts + best
        kept = latents.detach()[active]
        with torch.no_grad():
            outputs = torch.cat([render(kept[i:i + pass_size]) for i in range(0, num_images, pass_size)])
        distances = distance(outputs, targets)
    trajectory = None
    if record_every is not None:
        trajectory = torch.stack([frame[active] for frame in frames] + [kept]).float().cpu()
    return Projection(latents=kept.float().cpu(), images=outputs, distances=distances.cpu(), trajectory=trajectory)


def nearest_starts(
    pipeline: TransGANPipeline,
    render: Callable[[torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    num_starts: int,
    generator: torch.Generator | None,
    pass_size: int,
) -> torch.Tensor:
    """`(B, num_starts, latent_dim)`: for each target, the pool latents whose images (as shown) are nearest to it."""
    pool = onto_sphere(pipeline.sample_latents(max(POOL_SIZE, num_starts), generator).to(targets.device))
    errors = torch.cat([multiscale_error_matrix(render(pool[i:i + pass_size]).clamp(-1, 1), targets)
                        for i in range(0, len(pool), pass_size)], dim=1)
    return pool[errors.topk(num_starts, dim=1, largest=False).indices]


__all__ = ["TransGANProjectionOutput", "project_images", "target_pixels"]
