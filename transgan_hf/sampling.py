"""The building blocks of a `TransGANPipeline` call: latents (plain or truncated) and per-image generators, forward
passes that fit in the memory the device has left, candidate selection, spherical interpolation, eval mode.

Part of the pipeline's remote code (`transgan_hf.remote_code`), so it imports only torch, diffusers and sibling modules
that travel with it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from diffusers.utils.torch_utils import randn_tensor

from .configuration_transgan import TransGANDiscriminatorConfig, TransGANGeneratorConfig
from .cpu_memory import freed_heap_bytes
from .modeling_transgan import BatchNoiseRows, NoiseGenerator, TransGANDiscriminator, TransGANGenerator

TRUNCATION_BOUND = 2.0
"""Truncated latents are standard normal values restricted to [-2, 2], then multiplied by `truncation`."""

GeneratorArg = torch.Generator | list[torch.Generator] | None

# ---------------------------------------------------------------------------------------------------------------------
# Latents and generators
# ---------------------------------------------------------------------------------------------------------------------


def draw_latents(
    shape: tuple[int, int], generator: torch.Generator | None, truncation: float | None, device: torch.device
) -> torch.Tensor:
    """Standard normal latents, or truncated ones (|z| <= 2, times `truncation`) drawn by inverse-CDF sampling."""
    if truncation is None:
        return randn_tensor(shape, generator=generator, device=device)
    latents = torch.empty(shape, device=device)
    torch.nn.init.trunc_normal_(latents, a=-TRUNCATION_BOUND, b=TRUNCATION_BOUND, generator=generator)
    return latents * truncation


def per_image_generators(generator: GeneratorArg, batch_size: int) -> list[torch.Generator] | None:
    """The list of per-image generators, or None when one generator (or the global RNG) serves the whole batch."""
    if generator is None:
        return None
    if isinstance(generator, torch.Generator):
        return [generator] if batch_size == 1 else None
    if not isinstance(generator, (list, tuple)) or not all(isinstance(g, torch.Generator) for g in generator):
        raise ValueError(f"`generator` must be a torch.Generator or a list of them, got {type(generator).__name__}.")
    if len(generator) != batch_size:
        raise ValueError(
            f"Got a list of {len(generator)} generators for a batch of {batch_size} images; pass one generator per "
            "image, or a single torch.Generator for the whole batch."
        )
    return list(generator)


# ---------------------------------------------------------------------------------------------------------------------
# Forward passes that fit
# ---------------------------------------------------------------------------------------------------------------------


def samples_per_pass(
    generator: TransGANGenerator,
    discriminator: TransGANDiscriminator | None,
    device: torch.device,
    num_samples: int,
    unit: int = 1,
) -> int:
    """How many samples (a multiple of `unit`) one forward pass of `generator` (and of `discriminator`, when it ranks
    them) can take in the memory `device` has left (all of them when that is unknown); `ValueError` when not even the
    results and one unit fit (rough activation estimate)."""
    available = available_memory_bytes(device)
    if available is None:
        return num_samples
    config = generator.config
    # The raw images of every sample and the float32 copies of post-processing.
    result_bytes = num_samples * config.out_channels * config.image_size**2 * (generator.dtype.itemsize + 12)
    discriminator_config = discriminator.config if discriminator is not None else None
    sample_bytes = estimate_sample_bytes(config, discriminator_config, generator.dtype)
    fitting = (available - result_bytes) // (sample_bytes * unit) * unit
    if fitting >= 1:
        return min(num_samples, fitting)
    free = f"only {format_bytes(available)} are free"
    if result_bytes >= available:
        raise ValueError(
            f"The {num_samples} images of this call alone need about {format_bytes(result_bytes)} on {device}, "
            f"but {free}; ask for fewer images per call (lower `batch_size` or `num_candidates`; `transgan "
            "generate --batch_size` splits the work for you)."
        )
    what = "One sample needs" if unit == 1 else f"The {unit} candidates of one image need"
    raise ValueError(
        f"{what} about {format_bytes(unit * sample_bytes)} on {device}, but {free} besides the results; free "
        f"memory, load the pipeline with dtype=torch.bfloat16{', lower `num_candidates`' if unit > 1 else ''}, "
        "or use a device with more memory."
    )


def forward_passes(
    noise_generator: NoiseGenerator, num_samples: int, pass_size: int
) -> Iterator[tuple[slice, NoiseGenerator]]:
    """The rows of each forward pass and the noise source for them, for a call split into passes of `pass_size`.

    A single `torch.Generator` is served through `BatchNoiseRows` (every pass starts from its state and keeps its
    rows of the whole batch's noise); afterwards it is left where one pass would have left it. Per-sample generators
    are sliced; the global RNG (`None`) just draws on.
    """
    if pass_size >= num_samples:
        yield slice(0, num_samples), noise_generator
        return
    state = noise_generator.get_state() if isinstance(noise_generator, torch.Generator) else None
    for start in range(0, num_samples, pass_size):
        rows = slice(start, min(start + pass_size, num_samples))
        if state is not None:
            pass_generator = torch.Generator(device=noise_generator.device).set_state(state)
            yield rows, BatchNoiseRows(pass_generator, num_samples, rows)
        else:
            yield rows, noise_generator[rows] if isinstance(noise_generator, list) else None
    if state is not None:
        noise_generator.set_state(pass_generator.get_state())


def estimate_sample_bytes(
    generator_config: TransGANGeneratorConfig,
    discriminator_config: TransGANDiscriminatorConfig | None,
    dtype: torch.dtype,
) -> int:
    """Rough peak activation memory of one sample: the largest transformer block's tokens, MLP and attention scores."""

    def block_elements(tokens: int, width: int, window: int, mlp_ratio: float, heads: int) -> float:
        attended = window * window if window else tokens
        return tokens * width * (6 + mlp_ratio) + heads * tokens * attended

    g = generator_config
    peak = max(block_elements(grid * grid, dim, window, g.mlp_ratio, g.num_attention_heads)
               for dim, grid, window in zip(g.stage_dims, g.stage_grid_sizes, g.window_sizes))
    if discriminator_config is not None:
        d = discriminator_config
        peak = max(peak, max(block_elements(grid * grid, dim, 0, d.mlp_ratio, d.num_attention_heads)  # as global
                             for dim, grid in zip(d.scale_dims, d.scale_grid_sizes)))
    return int(peak * torch.finfo(dtype).bits // 8)


def format_bytes(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def available_memory_bytes(device: torch.device) -> int | None:
    """Memory that a forward pass on `device` can still get, or None when unknown.

    Memory this process holds but has freed counts as available, since its next allocations reuse it: on CUDA,
    free device memory plus what PyTorch's caching allocator keeps unused; on a CPU, the system's MemAvailable (free
    pages plus caches the kernel can drop) plus the freed memory glibc's heap keeps (all of it once
    `transgan_hf.cpu_memory.reuse_freed_cpu_memory` is on, as in training and `transgan generate`).
    """
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable:"))
        return kib * 1024 + freed_heap_bytes()
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    try:  # other Unix systems: free pages only (what the system would give back quickly is unknown there)
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


# ---------------------------------------------------------------------------------------------------------------------
# Candidates, interpolation, eval mode
# ---------------------------------------------------------------------------------------------------------------------


def select_best(scores: torch.Tensor, batch_size: int, num_candidates: int, per_image: bool) -> torch.Tensor:
    """Indices of the kept candidates: the best of each consecutive group of `num_candidates` (`per_image`), or the
    `batch_size` best overall, best first."""
    if per_image:
        best_in_group = scores.view(batch_size, num_candidates).argmax(dim=1)
        return torch.arange(batch_size, device=scores.device) * num_candidates + best_in_group
    return scores.topk(batch_size).indices


def slerp(start: torch.Tensor, end: torch.Tensor, weight: float) -> torch.Tensor:
    """Spherical interpolation between two latent vectors (linear when they are almost parallel)."""
    cos_angle = torch.dot(start / start.norm(), end / end.norm()).clamp(-1, 1)
    angle = torch.arccos(cos_angle)
    if angle.abs() < 1e-4:
        return torch.lerp(start, end, weight)
    return (torch.sin((1 - weight) * angle) * start + torch.sin(weight * angle) * end) / torch.sin(angle)


@contextlib.contextmanager
def eval_mode(*modules: torch.nn.Module | None) -> Iterator[None]:
    """Run the networks in eval mode (running BatchNorm statistics), then restore each one's mode."""
    modules = [m for m in modules if m is not None]
    was_training = [m.training for m in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, training in zip(modules, was_training):
            module.train(training)

