"""Differentiable augmentation of every discriminator input (DiffAugment, as configured by the TransGAN recipes).

The policies and their parameters follow ../shared/spec/transgan_official.md §3: `translation` uses ratio 0.2 and
`cutout` / `erase_ratio` / `stl_erase_ratio` fire with probability 0.3 per batch, unlike the original DiffAugment.
`hue` and `filter` are the StyleGAN2-ADA colour rotation and image-space filter bank (fixed probabilities, no
adaptive controller). Written from those descriptions; no code was taken from the official implementations.

Everything runs on the images' device and draws from an optional `torch.Generator` living there: no NumPy, no Python
`random`, no `.item()`. Per-batch decisions ("cutout with probability 0.3") are drawn as device tensors and applied by
masking, so an augmentation never makes the host wait for the accelerator. All operations are differentiable with
respect to the images (including the double backward needed by the gradient penalty).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

AUGMENT_POLICIES: tuple[str, ...] = (
    "color", "translation", "cutout", "erase_ratio", "stl_erase_ratio", "hue", "filter"
)

TRANSLATION_RATIO = 0.2
CUTOUT_RATIO = 0.5
ERASE_PROBABILITY = 0.3  # per batch, shared by cutout, erase_ratio and stl_erase_ratio
HUE_PROBABILITY = 0.5  # per sample
FILTER_BAND_PROBABILITY = 0.25  # per sample and band
FILTER_EXPECTED_POWER = (10 / 13, 1 / 13, 1 / 13, 1 / 13)  # share of natural-image power per band, low to high

# Low-pass decomposition filter of the orthonormal `sym2` wavelet (identical to Daubechies' db2, N = 2):
# h = ((1 + √3), (3 + √3), (3 - √3), (1 - √3)) / (4√2), I. Daubechies, "Ten Lectures on Wavelets", SIAM 1992,
# Table 6.1. StyleGAN2-ADA (Karras et al., NeurIPS 2020, appendix B) builds its filter bank from this wavelet.
SYM2_LOWPASS = (0.4829629131445341, 0.8365163037378079, 0.2241438680420134, -0.1294095225512604)


# ---------------------------------------------------------------------------------------------------------------------
# Policy parsing
# ---------------------------------------------------------------------------------------------------------------------


def parse_policy(policy: str | Sequence[str] | None) -> tuple[str, ...]:
    """`"translation,cutout,color"` (or a sequence of names) -> `("translation", "cutout", "color")`.

    `None`, `""` and `"none"` mean no augmentation. Order is kept (it is the order of application); unknown names
    raise a `ValueError` listing the valid ones.
    """
    if policy is None:
        return ()
    names = policy.split(",") if isinstance(policy, str) else list(policy)
    names = [name.strip().lower() for name in names if name.strip()]
    if names == ["none"]:
        return ()
    unknown = [name for name in names if name not in AUGMENT_POLICIES]
    if unknown:
        valid = ", ".join(AUGMENT_POLICIES)
        raise ValueError(
            f"Unknown DiffAugment policy {', '.join(map(repr, unknown))}; use a comma-separated list of: {valid} "
            "(or 'none')."
        )
    return tuple(names)


PASSES_WITHOUT_AUGMENTATION = 50
"""Passes of the critic over its training images past which a run without DiffAugment is warned: the critic of the
`tiny` recipe, trained on MNIST-5k without it, diverged after about 75 (training/README.md, the demo model)."""


def overfitting_warning(policy: str | None, images_seen: int, num_images: int) -> str | None:
    """The warning for a run whose critic sees its `num_images` training images more than
    `PASSES_WITHOUT_AUGMENTATION` times (`images_seen` in all) with no augmentation, else `None`. A critic memorises
    a small dataset and its gradients stop guiding the generator (Karras et al. 2020; Zhao et al. 2020)."""
    passes = images_seen / max(num_images, 1)
    if parse_policy(policy) or passes <= PASSES_WITHOUT_AUGMENTATION:
        return None
    return (f"The critic will see each of the {num_images} training images about {passes:.0f} times without "
            "DiffAugment; critics overfit small datasets and then diverge (the tiny recipe did after ~75 passes "
            "over MNIST-5k). For a run this long add --diffaug_policy translation, from the start or when resuming "
            "from a checkpoint.")


# ---------------------------------------------------------------------------------------------------------------------
# Random draws on the device
# ---------------------------------------------------------------------------------------------------------------------


def _check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    if generator is None:
        return
    gen_device = generator.device
    same = gen_device.type == device.type and (gen_device.index or 0) == (device.index or 0)
    if not same:
        raise ValueError(
            f"The augmentation generator lives on {gen_device} but the images are on {device}; create it with "
            f"torch.Generator(device=images.device)."
        )


def _uniform(shape: tuple[int, ...], low: float, high: float, generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device) * (high - low) + low


def _coin(shape: tuple[int, ...], probability: float, generator, device) -> torch.Tensor:
    """Boolean tensor, True with `probability` (drawn on the device, never read back)."""
    return torch.rand(shape, generator=generator, device=device) < probability


# ---------------------------------------------------------------------------------------------------------------------
# Augmentations. Each takes (images, generator) and returns images of the same shape and dtype.
# ---------------------------------------------------------------------------------------------------------------------


def augment_color(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per sample: brightness + U(-0.5, 0.5); saturation x U(0, 2) around the channel mean of each pixel; contrast
    x U(0.5, 1.5) around the image mean."""
    batch, device, dtype = images.shape[0], images.device, images.dtype
    brightness = _uniform((batch, 1, 1, 1), -0.5, 0.5, generator, device).to(dtype)
    saturation = _uniform((batch, 1, 1, 1), 0.0, 2.0, generator, device).to(dtype)
    contrast = _uniform((batch, 1, 1, 1), 0.5, 1.5, generator, device).to(dtype)
    images = images + brightness
    pixel_mean = images.mean(dim=1, keepdim=True)
    images = (images - pixel_mean) * saturation + pixel_mean
    image_mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - image_mean) * contrast + image_mean


def translation_shift(size: int) -> int:
    """Largest translation (pixels) for an image side of `size`: `int(0.2 * size + 0.5)`."""
    return int(size * TRANSLATION_RATIO + 0.5)


def translate(images: torch.Tensor, shift_y: torch.Tensor, shift_x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Move sample i down by `shift_y[i]` and right by `shift_x[i]` whole pixels (|shift| <= max_shift), zero fill.

    Zero padding by `max_shift` followed by one gather per axis: exact integer shifts, no index meshgrid.
    """
    batch, channels, height, width = images.shape
    padded = F.pad(images, (max_shift, max_shift, max_shift, max_shift))
    rows = torch.arange(height, device=images.device) + max_shift - shift_y[:, None]  # (B, H) into the padded rows
    cols = torch.arange(width, device=images.device) + max_shift - shift_x[:, None]  # (B, W) into the padded columns
    rows = rows[:, None, :, None].expand(batch, channels, height, width + 2 * max_shift)
    moved = padded.gather(2, rows)
    cols = cols[:, None, None, :].expand(batch, channels, height, width)
    return moved.gather(3, cols)


def augment_translation(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per sample, independent integer shifts in x and y, uniform in [-s, s] with s = int(0.2 * side + 0.5)."""
    batch, _, height, width = images.shape
    max_y, max_x = translation_shift(height), translation_shift(width)
    shift_y = torch.randint(-max_y, max_y + 1, (batch,), generator=generator, device=images.device)
    shift_x = torch.randint(-max_x, max_x + 1, (batch,), generator=generator, device=images.device)
    return translate(images, shift_y, shift_x, max(max_y, max_x))


def rectangle_mask(
    batch: int,
    height: int,
    width: int,
    rect_height: int | torch.Tensor,
    rect_width: int | torch.Tensor,
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """`(B, H, W)` boolean mask, False inside one `rect_height x rect_width` rectangle per sample.

    The centre is uniform over the image, per sample; the rectangle spans `[centre - side // 2, ... + side)` and is
    clipped at the borders. For an even side the centre may also sit on the far edge, so that clipping is symmetric
    (at both extremes exactly half the rectangle remains visible).
    """

    def inside(size: int, side: int | torch.Tensor) -> torch.Tensor:
        positions = size + 1 - side % 2  # works for a Python int and for a device tensor alike
        centre = (torch.rand((batch,), generator=generator, device=device) * positions).floor().long()
        start = (centre.clamp(max=positions - 1) - side // 2)[:, None]
        coords = torch.arange(size, device=device)
        return (coords >= start) & (coords < start + side)

    rows = inside(height, rect_height)
    cols = inside(width, rect_width)
    return ~(rows[:, :, None] & cols[:, None, :])


def _erase_with_probability(
    images: torch.Tensor, rect_height, rect_width, generator: torch.Generator | None
) -> torch.Tensor:
    """Zero one rectangle per sample, for the whole batch with probability `ERASE_PROBABILITY`, else no change."""
    batch, _, height, width = images.shape
    apply = _coin((), ERASE_PROBABILITY, generator, images.device)
    keep = rectangle_mask(batch, height, width, rect_height, rect_width, generator, images.device) | ~apply
    return images * keep[:, None].to(images.dtype)


def augment_cutout(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability 0.3 per batch: zero a square of side int(0.5 * side + 0.5) at a per-sample random centre."""
    height, width = images.shape[2:]
    return _erase_with_probability(
        images, int(height * CUTOUT_RATIO + 0.5), int(width * CUTOUT_RATIO + 0.5), generator
    )


def _random_sides(low: int, high: int, generator, device) -> torch.Tensor:
    """Rectangle (height, width) drawn once per batch, each uniform in [low, high)."""
    return torch.randint(low, max(high, low + 1), (2,), generator=generator, device=device)


def augment_erase_ratio(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability 0.3 per batch: zero a rectangle with sides in [int(0.2 H), int(0.7 H)) (drawn once per
    batch), at a per-sample random centre."""
    height = images.shape[2]
    sides = _random_sides(int(0.2 * height), int(0.7 * height), generator, images.device)
    return _erase_with_probability(images, sides[0], sides[1], generator)


def augment_stl_erase_ratio(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability 0.3 per batch: zero a rectangle with sides in [20, H / 2 + 20) (drawn once per batch), at a
    per-sample random centre (the official STL-10 recipe)."""
    height = images.shape[2]
    sides = _random_sides(20, int(height / 2 + 20), generator, images.device)
    return _erase_with_probability(images, sides[0], sides[1], generator)


def rotate_hue(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate the RGB vector of every pixel of sample i by `angles[i]` around the luma axis u = (1, 1, 1) / √3.

    Rodrigues' formula R x = cos θ x + sin θ (u × x) + (1 - cos θ) (u · x) u, written element-wise: (u · x) u is the
    channel mean m, and u × x = (b - g, r - b, g - r) / √3, a difference of two channel rolls.
    """
    cos = angles.cos().to(images.dtype)[:, None, None, None]
    sin = angles.sin().to(images.dtype)[:, None, None, None]
    grey = images.mean(dim=1, keepdim=True)
    cross = (images.roll(1, dims=1) - images.roll(-1, dims=1)) / math.sqrt(3)
    return cos * (images - grey) + sin * cross + grey


def augment_hue(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability 0.5 per sample: rotate the colours by θ ~ U(-π, π) around the luma axis (grey = 0)."""
    batch, channels = images.shape[:2]
    if channels != 3:
        raise ValueError(
            f"The 'hue' augmentation needs RGB images, got {channels} channels; remove 'hue' from the policy."
        )
    angles = _uniform((batch,), -math.pi, math.pi, generator, images.device)
    angles = torch.where(_coin((batch,), HUE_PROBABILITY, generator, images.device), angles, 0.0)
    return rotate_hue(images, angles)


def _dilate(taps: torch.Tensor, factor: int) -> torch.Tensor:
    """Insert `factor - 1` zeros between filter taps (the filter at `factor` times lower frequency)."""
    dilated = taps.new_zeros((taps.numel() - 1) * factor + 1)
    dilated[::factor] = taps
    return dilated


def _convolve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Full 1-D convolution of two filters."""
    return F.conv1d(a.view(1, 1, -1), b.flip(0).view(1, 1, -1), padding=b.numel() - 1).view(-1)


def build_filter_bank(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """`(4, 43)` zero-phase filters splitting the spectrum into [0, π/8], [π/8, π/4], [π/4, π/2], [π/2, π].

    Derivation: with the orthonormal low-pass h (sym2) and its mirror g[n] = (-1)^n h[n], the autocorrelations
    L = (h ⋆ h) / 2 and H = (g ⋆ g) / 2 are zero-phase with L(ω) + H(ω) = 1 (power complementarity). Splitting the
    low band again at half and quarter the frequency (the same filters dilated by 2 and 4, "à trous") gives
    H, L·H₂, L·L₂·H₄ and L·L₂·L₄, which sum to the identity: unit gains leave an image unchanged.
    """
    lowpass = torch.tensor(SYM2_LOWPASS, dtype=torch.float64)
    highpass = lowpass * (-1.0) ** torch.arange(lowpass.numel())
    low = _convolve(lowpass, lowpass.flip(0)) / 2
    high = _convolve(highpass, highpass.flip(0)) / 2
    bands = [high]
    low_so_far = low
    for factor in (2, 4):
        bands.append(_convolve(low_so_far, _dilate(high, factor)))
        low_so_far = _convolve(low_so_far, _dilate(low, factor))
    bands.append(low_so_far)
    length = low_so_far.numel()
    bank = torch.zeros(4, length, dtype=torch.float64)
    for index, band in enumerate(reversed(bands)):  # row 0 = lowest band
        offset = (length - band.numel()) // 2
        bank[index, offset : offset + band.numel()] = band
    return bank.to(dtype=dtype, device=device)


@functools.cache
def _filter_constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Filter bank and expected band power on `device`, built once (no host-to-device copy on the hot path)."""
    return build_filter_bank(device=device), torch.tensor(FILTER_EXPECTED_POWER, device=device)


def _reflect_pad(images: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """Reflect padding along `dim` (2 or 3) by `pad`, repeated when `pad` exceeds the side (tiny images)."""
    while pad > 0:
        step = min(pad, images.shape[dim] - 1)
        if step < 1:
            raise ValueError(f"Cannot filter images of side {images.shape[dim]}; the 'filter' policy needs sides >= 2.")
        images = F.pad(images, (step, step, 0, 0) if dim == 3 else (0, 0, step, step), mode="reflect")
        pad -= step
    return images


def filter_images(images: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Filter sample i separably (rows, then columns) with the 1-D zero-phase filter `filters[i]`, reflect-padded."""
    batch, channels, height, width = images.shape
    taps = filters.shape[1]
    weight = filters.to(images.dtype).repeat_interleave(channels, dim=0)[:, None, None, :]  # (B*C, 1, 1, taps)
    flat = images.reshape(1, batch * channels, height, width)
    flat = F.conv2d(_reflect_pad(flat, taps // 2, dim=3), weight, groups=batch * channels)
    flat = F.conv2d(_reflect_pad(flat, taps // 2, dim=2), weight.transpose(2, 3), groups=batch * channels)
    return flat.view(batch, channels, height, width)


def augment_filter(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    filter_bank: torch.Tensor | None = None,
    band_power: torch.Tensor | None = None,
) -> torch.Tensor:
    """StyleGAN2-ADA image-space filtering: per sample and band, with probability 0.25, gain 2^N(0, 1); the gains are
    then rescaled so that the expected power, bands weighted `FILTER_EXPECTED_POWER` (10:1:1:1), is unchanged.

    `filter_bank` / `band_power` default to cached copies of `build_filter_bank()` / `FILTER_EXPECTED_POWER`.
    """
    if filter_bank is None or band_power is None:
        filter_bank, band_power = _filter_constants(images.device)
    batch, num_bands, device = images.shape[0], filter_bank.shape[0], images.device
    gains = torch.exp2(torch.randn((batch, num_bands), generator=generator, device=device))
    gains = torch.where(_coin((batch, num_bands), FILTER_BAND_PROBABILITY, generator, device), gains, 1.0)
    gains = gains * torch.rsqrt((gains.square() * band_power).sum(dim=1, keepdim=True))
    return filter_images(images, gains @ filter_bank.to(gains.dtype))


_AUGMENTATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "color": augment_color,
    "translation": augment_translation,
    "cutout": augment_cutout,
    "erase_ratio": augment_erase_ratio,
    "stl_erase_ratio": augment_stl_erase_ratio,
    "hue": augment_hue,
    "filter": augment_filter,
}


# ---------------------------------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------------------------------


def _apply(
    images: torch.Tensor,
    policy: tuple[str, ...],
    generator: torch.Generator | None,
    filter_constants: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    if images.ndim != 4:
        raise ValueError(
            f"DiffAugment expects (batch, channels, height, width) images, got shape {tuple(images.shape)}."
        )
    if not policy:
        return images
    _check_generator(generator, images.device)
    for name in policy:
        if name == "filter" and filter_constants is not None:
            images = augment_filter(images, generator, *filter_constants)
        else:
            images = _AUGMENTATIONS[name](images, generator)
    return images


def diff_augment(
    images: torch.Tensor, policy: str | Sequence[str] | None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Augment a `(B, C, H, W)` batch in [-1, 1] with the comma-separated `policy`, in the order listed.

    `generator` must live on the images' device; `None` uses the device's default generator.
    """
    return _apply(images, parse_policy(policy), generator)


class DiffAugment(nn.Module):
    """`diff_augment` with the policy parsed once, as a module (so it follows `.to(device)`).

    Example: `augment = DiffAugment("translation,cutout,color"); logits = discriminator(augment(images, generator))`.
    """

    def __init__(self, policy: str | Sequence[str] | None) -> None:
        super().__init__()
        self.policy = parse_policy(policy)
        if "filter" in self.policy:  # constants follow `.to(device)`; not saved in checkpoints
            self.register_buffer("filter_bank", build_filter_bank(), persistent=False)
            self.register_buffer("filter_band_power", torch.tensor(FILTER_EXPECTED_POWER), persistent=False)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        constants = (self.filter_bank, self.filter_band_power) if "filter" in self.policy else None
        return _apply(images, self.policy, generator, constants)

    def extra_repr(self) -> str:
        return f"policy={','.join(self.policy) or 'none'!r}"
