"""Configurations of the TransGAN generator and discriminator.

Every architectural switch of the official TransGAN v2 code (VITA-Group/TransGAN, `models_search/`) is a field
here, so the four official generator/discriminator pairs are just presets (`from_preset`). Invalid combinations
fail at construction with a `ValueError` that names the field and the valid choices.

This file imports only `transformers` so that it can be copied next to a Hub checkpoint as remote code.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

NORM_TYPES = ("ln", "pn", "bn", "in", "none")
"""`ln` LayerNorm, `pn` PixelNorm (RMS norm without gain), `bn` BatchNorm1d, `in` InstanceNorm1d, `none`."""

ACTIVATIONS = ("gelu", "leakyrelu", "gelu_tanh", "relu", "silu")
"""`gelu` is the exact erf form; `leakyrelu` has slope 0.2, as in the official code."""

UPSAMPLE_TYPES = ("pixel_shuffle", "bicubic", "updown_pixel_shuffle")
"""Generator stage transitions: pixel-shuffle (channels / 4, resolution x 2), bicubic x 2 (channels kept), and the
CelebA-HQ `updown` smoothing (bicubic x 4, average-pool 4) followed by a pixel-shuffle."""

CLS_TOKEN_POSITIONS = ("last_block", "input")
"""Where the discriminator's cls token enters: before one final global block (multi-scale v2 discriminators) or
at the input, ViT style (the legacy single-scale discriminator)."""


def _as_int_list(name: str, value: Any) -> list[int]:
    if isinstance(value, int):
        value = [value]
    try:
        values = [int(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a list of integers, got {value!r}.") from None
    if any(v != orig for v, orig in zip(values, value)):
        raise ValueError(f"`{name}` must be a list of integers, got {value!r}.")
    return values


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}`={value!r} is not supported; valid choices are {', '.join(map(repr, choices))}.")


def _check_length(name: str, values: list, expected: int, reason: str) -> None:
    if len(values) != expected:
        raise ValueError(f"`{name}` has {len(values)} entries but needs {expected} ({reason}); got {values!r}.")


def _check_heads(name: str, dim: int, num_heads: int, where: str) -> None:
    if dim % num_heads != 0:
        raise ValueError(
            f"{where} has width {dim}, which `num_attention_heads`={num_heads} does not divide; "
            f"change `{name}` or `num_attention_heads`."
        )


def _check_window(name: str, window: int, grid: int, where: str) -> None:
    if window < 0:
        raise ValueError(f"`{name}` entries must be >= 0 (0 = global attention); {where} has {window}.")
    if window and grid % window != 0:
        raise ValueError(
            f"`{name}`: window {window} does not divide the {grid}x{grid} token grid of {where}; "
            f"use 0 (global attention) or a divisor of {grid}."
        )


class _PresetMixin:
    _presets: dict[str, dict[str, Any]] = {}

    @classmethod
    def available_presets(cls) -> list[str]:
        return sorted(cls._presets)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any):
        """The official configuration `name` (`cifar10`, `stl10`, `celeba_hq_256`, `church_256`) or `tiny`."""
        if name not in cls._presets:
            choices = ", ".join(map(repr, cls.available_presets()))
            raise ValueError(f"Unknown preset {name!r}; valid choices are {choices}.")
        return cls(**{**cls._presets[name], **overrides})


class TransGANGeneratorConfig(_PresetMixin, PretrainedConfig):
    r"""Configuration of [`TransGANGenerator`].

    The generator maps a latent vector to a `bottom_width x bottom_width` token grid of width `hidden_size`, then runs
    one transformer stage per resolution; between stages the grid is upsampled by 2 (`upsample_types`).

    Args:
        latent_dim: size of the latent vector z.
        bottom_width: side of the first token grid (8 for CIFAR-10 and 256 px, 12 for STL-10).
        image_size: side of the output image; must equal `bottom_width * 2 ** (len(depths) - 1)`.
        hidden_size: width of the first stage (`gf_dim`); pixel-shuffle transitions divide it by 4.
        depths: transformer blocks per stage. 0 disables a stage's blocks (the official CelebA-HQ model skips 8x8).
        upsample_types: one entry per stage transition, from `UPSAMPLE_TYPES`.
        window_sizes: per stage, 0 for global attention or the side of the non-overlapping attention windows
            ("grid self-attention").
        use_relative_position_bias: Swin-style learned bias over the attended window (or whole grid when global).
        noise_injection: add learned-strength per-token Gaussian noise before every self-attention (active at
            inference too, so pass a seeded `torch.Generator` for reproducible samples).
        latent_cross_attention: every block first cross-attends to `num_latent_tokens` tokens made from z
            ("self-modulation" of the official CelebA-HQ generator).
        num_latent_tokens: number of latent tokens for the cross-attention (their width is `hidden_size`).
        latent_norm: rescale z to norm `sqrt(latent_dim)` before use.
        norm_type: one of `NORM_TYPES`.
        hidden_act: one of `ACTIVATIONS`.
        mlp_ratio: MLP hidden width / block width.
        num_attention_heads: heads of every attention (4 in all official models).
        out_channels: image channels.
        layer_norm_eps: epsilon of LayerNorm.
        initializer_range: std of the truncated-normal initialisation of position embeddings and bias tables.
    """

    model_type = "transgan_generator"

    def __init__(
        self,
        latent_dim: int = 256,
        bottom_width: int = 8,
        image_size: int = 32,
        hidden_size: int = 1024,
        depths: list[int] = (5, 4, 2),
        upsample_types: list[str] = ("pixel_shuffle", "pixel_shuffle"),
        window_sizes: list[int] = (0, 0, 0),
        use_relative_position_bias: bool = True,
        noise_injection: bool = False,
        latent_cross_attention: bool = False,
        num_latent_tokens: int = 64,
        latent_norm: bool = False,
        norm_type: str = "ln",
        hidden_act: str = "gelu",
        mlp_ratio: float = 4.0,
        num_attention_heads: int = 4,
        out_channels: int = 3,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        **kwargs: Any,
    ) -> None:
        self.latent_dim = int(latent_dim)
        self.bottom_width = int(bottom_width)
        self.image_size = int(image_size)
        self.hidden_size = int(hidden_size)
        self.depths = _as_int_list("depths", depths)
        self.upsample_types = list(upsample_types)
        self.window_sizes = _as_int_list("window_sizes", window_sizes)
        self.use_relative_position_bias = bool(use_relative_position_bias)
        self.noise_injection = bool(noise_injection)
        self.latent_cross_attention = bool(latent_cross_attention)
        self.num_latent_tokens = int(num_latent_tokens)
        self.latent_norm = bool(latent_norm)
        self.norm_type = norm_type
        self.hidden_act = hidden_act
        self.mlp_ratio = float(mlp_ratio)
        self.num_attention_heads = int(num_attention_heads)
        self.out_channels = int(out_channels)
        self.layer_norm_eps = float(layer_norm_eps)
        self.initializer_range = float(initializer_range)
        super().__init__(**kwargs)
        self._validate()

    @property
    def stage_dims(self) -> list[int]:
        """Token width of every stage."""
        dims = [self.hidden_size]
        for kind in self.upsample_types:
            dims.append(dims[-1] // 4 if kind.endswith("pixel_shuffle") else dims[-1])
        return dims

    @property
    def stage_grid_sizes(self) -> list[int]:
        """Side of the token grid of every stage."""
        return [self.bottom_width * 2**i for i in range(len(self.depths))]

    def _validate(self) -> None:
        for name in ("latent_dim", "bottom_width", "hidden_size", "num_attention_heads", "out_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        _check_choice("norm_type", self.norm_type, NORM_TYPES)
        _check_choice("hidden_act", self.hidden_act, ACTIVATIONS)
        if not self.depths:
            raise ValueError("`depths` needs at least one stage.")
        if any(d < 0 for d in self.depths):
            raise ValueError(f"`depths` entries must be >= 0, got {self.depths}.")
        num_stages = len(self.depths)
        _check_length("upsample_types", self.upsample_types, num_stages - 1, "one per transition between stages")
        _check_length("window_sizes", self.window_sizes, num_stages, "one per stage")
        for kind in self.upsample_types:
            _check_choice("upsample_types", kind, UPSAMPLE_TYPES)
        producible = self.bottom_width * 2 ** (num_stages - 1)
        if self.image_size != producible:
            raise ValueError(
                f"`image_size`={self.image_size} cannot be produced: `bottom_width`={self.bottom_width} doubled at "
                f"each of the {num_stages - 1} stage transitions gives {producible}. Set `image_size`={producible}, "
                "or change `bottom_width` or the number of stages (`depths`, `upsample_types`, `window_sizes`)."
            )
        dim = self.hidden_size
        for i, kind in enumerate(self.upsample_types):
            if kind.endswith("pixel_shuffle"):
                if dim % 4 != 0:
                    raise ValueError(
                        f"Stage {i} has width {dim}, which a pixel-shuffle (`upsample_types[{i}]`={kind!r}) cannot "
                        "divide by 4; change `hidden_size` or use 'bicubic'."
                    )
                dim //= 4
        for i, (dim, grid, window) in enumerate(zip(self.stage_dims, self.stage_grid_sizes, self.window_sizes)):
            where = f"generator stage {i}"
            _check_heads("hidden_size", dim, self.num_attention_heads, where)
            _check_window("window_sizes", window, grid, where)
        if self.mlp_ratio <= 0:
            raise ValueError(f"`mlp_ratio` must be > 0, got {self.mlp_ratio}.")
        if self.latent_cross_attention and self.num_latent_tokens < 1:
            raise ValueError("`num_latent_tokens` must be >= 1 when `latent_cross_attention` is on.")


class TransGANDiscriminatorConfig(_PresetMixin, PretrainedConfig):
    r"""Configuration of [`TransGANDiscriminator`].

    The v2 discriminator is multi-scale: scale k embeds the image with a `patch_size * 2**k` patch convolution of
    `patch_embed_dims[k]` channels, concatenated with the average-pooled tokens of scale k-1; each scale runs
    `depths[k]` blocks (windowed when `window_sizes[k] > 0`) followed by `global_depths[k]` global-attention blocks.
    A cls token is prepended before one last global block, whose normalised output feeds a linear critic head.

    Args:
        image_size: side of the input image.
        in_channels: image channels.
        patch_size: patch of the first scale.
        patch_embed_dims: channels contributed by each scale's patch embedding; their sum is `hidden_size`.
        hidden_size: width of the last scale and of the cls token (`df_dim`).
        depths: blocks per scale (windowed if the scale's window size is > 0, global otherwise).
        window_sizes: per scale, 0 for global attention or the side of the attention windows.
        global_depths: per scale, global-attention blocks that follow the `depths` blocks.
        overlapping_first_patch: first patch convolution with kernel `2 * patch_size`, stride `patch_size`
            and padding `patch_size // 2` (official CelebA-HQ discriminator).
        cls_token_position: one of `CLS_TOKEN_POSITIONS`.
        use_relative_position_bias, noise_injection, norm_type, hidden_act, mlp_ratio, num_attention_heads,
        layer_norm_eps, initializer_range: as for the generator. With `norm_type="none"` every residual branch and
        skip are scaled by sqrt(1/2), as in the official `DisBlock`.
    """

    model_type = "transgan_discriminator"

    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 3,
        patch_size: int = 2,
        patch_embed_dims: list[int] = (288, 96),
        hidden_size: int = 384,
        depths: list[int] = (3, 3),
        window_sizes: list[int] = (0, 0),
        global_depths: list[int] = (0, 0),
        overlapping_first_patch: bool = False,
        cls_token_position: str = "last_block",
        use_relative_position_bias: bool = True,
        noise_injection: bool = True,
        norm_type: str = "ln",
        hidden_act: str = "gelu",
        mlp_ratio: float = 4.0,
        num_attention_heads: int = 4,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        **kwargs: Any,
    ) -> None:
        self.image_size = int(image_size)
        self.in_channels = int(in_channels)
        self.patch_size = int(patch_size)
        self.patch_embed_dims = _as_int_list("patch_embed_dims", patch_embed_dims)
        self.hidden_size = int(hidden_size)
        self.depths = _as_int_list("depths", depths)
        self.window_sizes = _as_int_list("window_sizes", window_sizes)
        self.global_depths = _as_int_list("global_depths", global_depths)
        self.overlapping_first_patch = bool(overlapping_first_patch)
        self.cls_token_position = cls_token_position
        self.use_relative_position_bias = bool(use_relative_position_bias)
        self.noise_injection = bool(noise_injection)
        self.norm_type = norm_type
        self.hidden_act = hidden_act
        self.mlp_ratio = float(mlp_ratio)
        self.num_attention_heads = int(num_attention_heads)
        self.layer_norm_eps = float(layer_norm_eps)
        self.initializer_range = float(initializer_range)
        super().__init__(**kwargs)
        self._validate()

    @property
    def scale_dims(self) -> list[int]:
        """Token width of every scale (running sum of `patch_embed_dims`)."""
        dims, total = [], 0
        for d in self.patch_embed_dims:
            total += d
            dims.append(total)
        return dims

    @property
    def scale_grid_sizes(self) -> list[int]:
        """Side of the token grid of every scale."""
        first = self.image_size // self.patch_size
        return [first // 2**k for k in range(len(self.patch_embed_dims))]

    def _validate(self) -> None:
        for name in ("image_size", "in_channels", "patch_size", "hidden_size", "num_attention_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        _check_choice("norm_type", self.norm_type, NORM_TYPES)
        _check_choice("hidden_act", self.hidden_act, ACTIVATIONS)
        _check_choice("cls_token_position", self.cls_token_position, CLS_TOKEN_POSITIONS)
        num_scales = len(self.patch_embed_dims)
        if num_scales == 0 or any(d < 1 for d in self.patch_embed_dims):
            raise ValueError(f"`patch_embed_dims` needs at least one positive entry, got {self.patch_embed_dims}.")
        _check_length("depths", self.depths, num_scales, "one per scale of `patch_embed_dims`")
        _check_length("window_sizes", self.window_sizes, num_scales, "one per scale of `patch_embed_dims`")
        _check_length("global_depths", self.global_depths, num_scales, "one per scale of `patch_embed_dims`")
        if any(d < 0 for d in self.depths + self.global_depths):
            raise ValueError("`depths` and `global_depths` entries must be >= 0.")
        if sum(self.patch_embed_dims) != self.hidden_size:
            raise ValueError(
                f"`hidden_size`={self.hidden_size} must equal the sum of `patch_embed_dims` {self.patch_embed_dims} "
                f"(= {sum(self.patch_embed_dims)}): the scales' tokens are concatenated channel-wise."
            )
        coarsest = self.patch_size * 2 ** (num_scales - 1)
        if self.image_size % coarsest != 0:
            raise ValueError(
                f"`image_size`={self.image_size} is not divisible by the coarsest patch `patch_size * 2**(scales-1)` "
                f"= {coarsest}; use an image size that is a multiple of {coarsest}, or change `patch_size`."
            )
        if self.overlapping_first_patch and self.patch_size % 2 != 0:
            raise ValueError("`overlapping_first_patch` needs an even `patch_size` (padding is `patch_size // 2`).")
        for k, (dim, grid, window) in enumerate(zip(self.scale_dims, self.scale_grid_sizes, self.window_sizes)):
            where = f"discriminator scale {k}"
            _check_heads("patch_embed_dims", dim, self.num_attention_heads, where)
            _check_window("window_sizes", window, grid, where)
        if self.cls_token_position == "input":
            if num_scales != 1:
                raise ValueError("`cls_token_position`='input' supports a single scale (one `patch_embed_dims` entry).")
            if self.use_relative_position_bias:
                raise ValueError(
                    "`cls_token_position`='input' cannot use `use_relative_position_bias`: the cls token has no grid "
                    "position. Set `use_relative_position_bias=False` or `cls_token_position`='last_block'."
                )
            if self.window_sizes[0] or self.global_depths[0]:
                raise ValueError(
                    "`cls_token_position`='input' needs global attention: set `window_sizes`=[0], `global_depths`=[0]."
                )
        if self.mlp_ratio <= 0:
            raise ValueError(f"`mlp_ratio` must be > 0, got {self.mlp_ratio}.")


# Official configurations (../shared/spec/transgan_official.md §1-2), plus a CPU-sized `tiny`.
TransGANGeneratorConfig._presets = {
    "cifar10": dict(latent_dim=256, bottom_width=8, image_size=32, hidden_size=1024, depths=[5, 4, 2],
                    upsample_types=["pixel_shuffle"] * 2, window_sizes=[0, 0, 0], norm_type="ln"),
    "stl10": dict(latent_dim=512, bottom_width=12, image_size=48, hidden_size=1024, depths=[7, 5, 3],
                  upsample_types=["pixel_shuffle"] * 2, window_sizes=[0, 0, 0], norm_type="pn"),
    "church_256": dict(latent_dim=512, bottom_width=8, image_size=256, hidden_size=1024, depths=[5, 4, 4, 4, 4, 4],
                       upsample_types=["bicubic", "bicubic", "pixel_shuffle", "pixel_shuffle", "pixel_shuffle"],
                       window_sizes=[0, 0, 0, 16, 16, 16], noise_injection=True, norm_type="pn"),
    "celeba_hq_256": dict(latent_dim=512, bottom_width=8, image_size=256, hidden_size=1024, depths=[0, 4, 4, 4, 4, 4],
                          upsample_types=["bicubic", "bicubic", "pixel_shuffle", "updown_pixel_shuffle",
                                          "updown_pixel_shuffle"],
                          window_sizes=[0, 0, 0, 16, 16, 16], noise_injection=True, latent_cross_attention=True,
                          num_latent_tokens=64, norm_type="pn"),
    # CPU demo (MNIST digits in minutes, training/README.md): attention at 8x8 and 16x16 only; the 32x32 stage is a
    # bicubic upsampling without blocks (attention over 1,024 tokens dominates CPU time and gave speckled images).
    "tiny": dict(latent_dim=64, bottom_width=8, image_size=32, hidden_size=128, depths=[2, 2, 0],
                 upsample_types=["pixel_shuffle", "bicubic"], window_sizes=[0, 0, 0],
                 use_relative_position_bias=False, norm_type="ln"),
}

TransGANDiscriminatorConfig._presets = {
    "cifar10": dict(image_size=32, patch_size=2, patch_embed_dims=[288, 96], hidden_size=384, depths=[3, 3],
                    window_sizes=[0, 0], global_depths=[0, 0], noise_injection=True, norm_type="ln"),
    "stl10": dict(image_size=48, patch_size=2, patch_embed_dims=[288, 96], hidden_size=384, depths=[3, 3],
                  window_sizes=[0, 0], global_depths=[0, 0], noise_injection=True, norm_type="pn"),
    "church_256": dict(image_size=256, patch_size=4, patch_embed_dims=[288, 48, 48], hidden_size=384,
                       depths=[2, 3, 4], window_sizes=[16, 0, 0], global_depths=[1, 0, 0], noise_injection=False,
                       norm_type="ln"),
    "celeba_hq_256": dict(image_size=256, patch_size=2, patch_embed_dims=[96, 96, 192], hidden_size=384,
                          depths=[3, 2, 4], window_sizes=[4, 4, 0], global_depths=[0, 1, 0],
                          overlapping_first_patch=True, use_relative_position_bias=False, noise_injection=False,
                          norm_type="ln"),
    # CPU demo: 4x4 patches (8x8 tokens), no relative-position bias (a bias that needs gradients keeps attention
    # on PyTorch's slow path).
    "tiny": dict(image_size=32, patch_size=4, patch_embed_dims=[96, 32], hidden_size=128, depths=[1, 1],
                 window_sizes=[0, 0], global_depths=[0, 0], use_relative_position_bias=False, noise_injection=False,
                 norm_type="ln"),
}
