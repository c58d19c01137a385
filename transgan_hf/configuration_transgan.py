"""Configurations of the TransGAN generator and discriminator.

Every architectural switch of the official TransGAN v2 code (VITA-Group/TransGAN, `models_search/`) is a field
here, so the four official generator/discriminator pairs are just presets (`from_preset`). A configuration is checked
completely when it is made, before any module is built: unknown fields, values of the wrong type or out of their
bounds (`field_types`, `field_ranges`, `field_choices`), invalid combinations (`validate_architecture`) and sizes
beyond the limits below fail with a `ValueError` that names the field and the fix. A saved `config.json` must list
every architecture field (a missing one would silently become a default); loading a bad one fails with an `OSError`
that names the file.

Size limits (generous: the official models are far below them; they stop a typo from allocating until the process
dies): `MAX_PARAMETERS` in all; per field `MAX_WIDTH` (widths, latent size, channels, heads, latent tokens),
`MAX_IMAGE_SIZE`, `MAX_BLOCKS` per stage, `MAX_STAGES`, `MAX_MLP_RATIO`, and `MAX_ATTENTION_TOKENS` attended at once.

This file imports only `transformers` (and the standard library) so that it can be copied next to a Hub checkpoint as
remote code.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
import os
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

MAX_PARAMETERS = 10**10
"""Parameters of one network (40 GB in float32; the largest official network has 2.1e8)."""
MAX_WIDTH = 2**16
MAX_IMAGE_SIZE = 2**14
MAX_BLOCKS = 1024
MAX_STAGES = 16
MAX_MLP_RATIO = 64.0
MAX_ATTENTION_TOKENS = 2**16
"""Tokens of one attention window (or of a whole grid under global attention): a 256 x 256 grid."""

GENERIC_CONFIG_KEYS = frozenset(PretrainedConfig().to_dict()) | {
    "auto_map", "torch_dtype", "num_labels", "name_or_path", "attn_implementation", "experts_implementation",
}
"""Keys of `transformers.PretrainedConfig` itself that a configuration accepts besides its own fields (what
`save_pretrained` writes: `transformers_version`, `architectures`, `model_type`, `dtype`, ...; keys starting with
`_` are metadata and accepted too)."""

_TYPE_NAMES = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string",
               list[int]: "a list of integers", list[str]: "a list of strings"}


def _is_of_type(value: Any, kind: Any) -> bool:
    if kind is bool or kind is str:
        return isinstance(value, kind)
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    item = kind.__args__[0]  # list[int] or list[str]
    return isinstance(value, (list, tuple)) and all(_is_of_type(v, item) for v in value)


def _checked_value(name: str, value: Any, kind: Any) -> Any:
    """`value` of field `name` converted to `kind` (list fields become lists), or a `ValueError` naming both."""
    if not _is_of_type(value, kind):
        raise ValueError(f"`{name}` must be {_TYPE_NAMES[kind]}, got {value!r} ({type(value).__name__}).")
    if kind in (int, float):
        return kind(value)
    if kind == list[int]:
        return [int(v) for v in value]
    return list(value) if kind == list[str] else value


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}`={value!r} is not supported; valid choices are {', '.join(map(repr, choices))}.")


def _check_length(name: str, values: list, expected: int, reason: str) -> None:
    if len(values) != expected:
        raise ValueError(f"`{name}` has {len(values)} entries but needs {expected} ({reason}); got {values!r}.")


def _check_range(name: str, values: int | float | list, low: int | float, high: int | float) -> None:
    for value in values if isinstance(values, list) else [values]:
        if not low <= value <= high:
            what = " entries" if isinstance(values, list) else ""
            raise ValueError(f"`{name}`{what} must be in [{low}, {high}], got {values!r}.")


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


def _check_attention_tokens(tokens: int, where: str) -> None:
    if tokens > MAX_ATTENTION_TOKENS:
        raise ValueError(
            f"{where} attends over {tokens} tokens at once, more than the limit {MAX_ATTENTION_TOKENS} (a 256x256 "
            "grid); use attention windows there (`window_sizes`) or a smaller `image_size`."
        )


def _block_parameters(config: PretrainedConfig, dim: int, bias_window: int, latent_token_dim: int = 0) -> int:
    """Parameters of one `TransGANBlock` of `config` (a noise strength counted whether used or not)."""
    hidden = int(dim * config.mlp_ratio)
    count = 4 * dim * dim + dim + 2 * dim * hidden + hidden + dim + 1  # attention, MLP, noise strength
    count += 4 * dim if config.norm_type in ("ln", "bn") else 0
    count += (2 * bias_window - 1) ** 2 * config.num_attention_heads if bias_window else 0
    if latent_token_dim:
        count += 2 * dim * dim + 2 * latent_token_dim * dim + dim + 1
    return count


def _check_parameter_count(config: PretrainedConfig, fields: str) -> None:
    count = config.estimated_num_parameters
    if count > MAX_PARAMETERS:
        raise ValueError(
            f"This {type(config).__name__} describes about {count:.2e} parameters, more than the limit "
            f"{MAX_PARAMETERS:.0e} ({4 * MAX_PARAMETERS / 1e9:.0f} GB in float32); lower {fields}."
        )


class _TransGANConfigMixin:
    """Field checking, strict loading and presets shared by both configurations."""

    field_types: dict[str, Any] = {}
    """Every architecture field and its type; a saved configuration lists them all."""
    field_ranges: dict[str, tuple[float, float]] = {}
    """Bounds of numeric fields (of every entry of a list field), checked in this order."""
    field_choices: dict[str, tuple[str, ...]] = {}
    """Valid values of string fields (of every entry of a list field), checked after the bounds."""
    _presets: dict[str, dict[str, Any]] = {}

    def _set_fields(self, arguments: dict[str, Any], extra: dict[str, Any]) -> None:
        """Set the fields from `__init__`'s arguments after checking their types and bounds; refuse unknown
        keywords."""
        unknown = [key for key in extra if key not in GENERIC_CONFIG_KEYS and not key.startswith("_")]
        if unknown:
            hints = [f"{key!r} (did you mean {match[0]!r}?)" if (match := difflib.get_close_matches(
                key, self.field_types, n=1)) else repr(key) for key in unknown]
            raise ValueError(
                f"{type(self).__name__} has no field {', '.join(hints)}; its fields are {', '.join(self.field_types)}."
            )
        for name, kind in self.field_types.items():
            setattr(self, name, _checked_value(name, arguments[name], kind))
        for name, (low, high) in self.field_ranges.items():
            _check_range(name, getattr(self, name), low, high)
        for name, choices in self.field_choices.items():
            value = getattr(self, name)
            for entry in value if isinstance(value, list) else [value]:
                _check_choice(name, entry, choices)

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

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        """`PretrainedConfig.from_dict` for a saved configuration: every architecture field must be present (a missing
        one would silently take its default), and fields given as keyword arguments are checked like the others."""
        if not isinstance(config_dict, dict):
            raise ValueError(f"A {cls.__name__} must be a JSON object (dict), got {type(config_dict).__name__}.")
        model_type = config_dict.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(f"`model_type` is {model_type!r}, not {cls.model_type!r}: this is not a {cls.__name__}.")
        missing = [name for name in cls.field_types if name not in config_dict]
        if missing:
            raise ValueError(
                f"The field(s) {', '.join(map(repr, missing))} are missing; a saved {cls.__name__} lists every "
                "architecture field, so add them."
            )
        overrides = {key: kwargs.pop(key) for key in list(kwargs) if key in cls.field_types}
        return super().from_dict({**config_dict, **overrides}, **kwargs)

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike):
        """The configuration saved in `json_file`, checked like `from_dict`; `OSError` naming the file otherwise."""
        return cls.from_dict(cls._dict_from_json_file(json_file))

    @classmethod
    def _dict_from_json_file(cls, json_file: str | os.PathLike) -> dict[str, Any]:
        """Read and check a `config.json` (the file reader behind `from_pretrained` and `from_json_file`), so that
        every error names the file."""
        try:
            config_dict = super()._dict_from_json_file(json_file)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise OSError(f"{os.fspath(json_file)!r} is not valid JSON ({error}); save the model again.") from None
        try:
            cls.from_dict(config_dict)
        except ValueError as error:
            raise OSError(
                f"{os.fspath(json_file)!r} is not a valid {cls.__name__}: {error} Fix the file, or save the model "
                "again with save_pretrained."
            ) from None
        return config_dict


class TransGANGeneratorConfig(_TransGANConfigMixin, PretrainedConfig):
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
    field_types = {
        "latent_dim": int, "bottom_width": int, "image_size": int, "hidden_size": int, "depths": list[int],
        "upsample_types": list[str], "window_sizes": list[int], "use_relative_position_bias": bool,
        "noise_injection": bool, "latent_cross_attention": bool, "num_latent_tokens": int, "latent_norm": bool,
        "norm_type": str, "hidden_act": str, "mlp_ratio": float, "num_attention_heads": int, "out_channels": int,
        "layer_norm_eps": float, "initializer_range": float,
    }
    field_ranges = {
        **dict.fromkeys(("latent_dim", "hidden_size", "num_attention_heads", "out_channels", "num_latent_tokens"),
                        (1, MAX_WIDTH)),
        "bottom_width": (1, MAX_IMAGE_SIZE), "image_size": (1, MAX_IMAGE_SIZE), "mlp_ratio": (1e-3, MAX_MLP_RATIO),
        "layer_norm_eps": (0, 1), "initializer_range": (0, 1e3), "depths": (0, MAX_BLOCKS),
    }
    field_choices = {"norm_type": NORM_TYPES, "hidden_act": ACTIVATIONS, "upsample_types": UPSAMPLE_TYPES}

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
        self._set_fields(locals(), kwargs)
        super().__init__(**kwargs)
        self.validate_architecture()

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

    @property
    def estimated_num_parameters(self) -> int:
        """Parameters of the generator, computed from the fields (bounded by `MAX_PARAMETERS`)."""
        first = self.bottom_width**2 * self.hidden_size
        count = (self.latent_dim + 1) * first + (self.stage_dims[-1] + 1) * self.out_channels
        latent_token_dim = self.hidden_size if self.latent_cross_attention else 0
        if latent_token_dim:
            count += (self.latent_dim + 2) * self.num_latent_tokens * self.hidden_size
        for dim, grid, window, depth in zip(self.stage_dims, self.stage_grid_sizes, self.window_sizes, self.depths):
            bias_window = (window or grid) if self.use_relative_position_bias else 0
            count += grid * grid * dim + depth * _block_parameters(self, dim, bias_window, latent_token_dim)
        return count

    def validate_architecture(self) -> None:
        """Checks that span several fields (each field's own bounds are checked when it is set)."""
        if not 1 <= len(self.depths) <= MAX_STAGES:
            raise ValueError(f"`depths` needs 1 to {MAX_STAGES} stages, got {len(self.depths)}.")
        num_stages = len(self.depths)
        _check_length("upsample_types", self.upsample_types, num_stages - 1, "one per transition between stages")
        _check_length("window_sizes", self.window_sizes, num_stages, "one per stage")
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
        stages = zip(self.stage_dims, self.stage_grid_sizes, self.window_sizes, self.depths)
        for i, (dim, grid, window, depth) in enumerate(stages):
            where = f"generator stage {i}"
            _check_heads("hidden_size", dim, self.num_attention_heads, where)
            _check_window("window_sizes", window, grid, where)
            if depth:
                _check_attention_tokens((window or grid) ** 2, where)
        _check_parameter_count(self, "`hidden_size`, `depths`, `latent_dim`, `num_latent_tokens` or `mlp_ratio`")


class TransGANDiscriminatorConfig(_TransGANConfigMixin, PretrainedConfig):
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
    field_types = {
        "image_size": int, "in_channels": int, "patch_size": int, "patch_embed_dims": list[int], "hidden_size": int,
        "depths": list[int], "window_sizes": list[int], "global_depths": list[int], "overlapping_first_patch": bool,
        "cls_token_position": str, "use_relative_position_bias": bool, "noise_injection": bool, "norm_type": str,
        "hidden_act": str, "mlp_ratio": float, "num_attention_heads": int, "layer_norm_eps": float,
        "initializer_range": float,
    }
    field_ranges = {
        **dict.fromkeys(("in_channels", "hidden_size", "num_attention_heads"), (1, MAX_WIDTH)),
        "image_size": (1, MAX_IMAGE_SIZE), "mlp_ratio": (1e-3, MAX_MLP_RATIO), "layer_norm_eps": (0, 1),
        "initializer_range": (0, 1e3), "patch_embed_dims": (1, MAX_WIDTH), "depths": (0, MAX_BLOCKS),
        "global_depths": (0, MAX_BLOCKS),
    }
    field_choices = {"norm_type": NORM_TYPES, "hidden_act": ACTIVATIONS, "cls_token_position": CLS_TOKEN_POSITIONS}

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
        self._set_fields(locals(), kwargs)
        super().__init__(**kwargs)
        self.validate_architecture()

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

    @property
    def estimated_num_parameters(self) -> int:
        """Parameters of the discriminator, computed from the fields (bounded by `MAX_PARAMETERS`)."""
        with_cls = self.cls_token_position == "input"
        count = 2 * self.hidden_size + 1 + (2 * self.hidden_size if self.norm_type in ("ln", "bn") else 0)
        if not with_cls:  # cls token, head, final norm; the last block
            count += _block_parameters(self, self.hidden_size, 0)
        for k, (dim, grid, window) in enumerate(zip(self.scale_dims, self.scale_grid_sizes, self.window_sizes)):
            kernel = 2 * self.patch_size if k == 0 and self.overlapping_first_patch else self.patch_size * 2**k
            count += (self.in_channels * kernel * kernel + 1) * self.patch_embed_dims[k]
            count += (grid * grid + int(with_cls)) * dim
            windowed, full = ((window or grid), grid) if self.use_relative_position_bias else (0, 0)
            count += self.depths[k] * _block_parameters(self, dim, windowed)
            count += self.global_depths[k] * _block_parameters(self, dim, full)
        return count

    def validate_architecture(self) -> None:
        """Checks that span several fields (each field's own bounds are checked when it is set)."""
        _check_range("patch_size", self.patch_size, 1, self.image_size)
        num_scales = len(self.patch_embed_dims)
        if not 1 <= num_scales <= MAX_STAGES:
            raise ValueError(f"`patch_embed_dims` needs 1 to {MAX_STAGES} scales, got {self.patch_embed_dims}.")
        _check_length("depths", self.depths, num_scales, "one per scale of `patch_embed_dims`")
        _check_length("window_sizes", self.window_sizes, num_scales, "one per scale of `patch_embed_dims`")
        _check_length("global_depths", self.global_depths, num_scales, "one per scale of `patch_embed_dims`")
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
        with_cls = int(self.cls_token_position == "input")
        scales = zip(self.scale_dims, self.scale_grid_sizes, self.window_sizes, self.depths, self.global_depths)
        for k, (dim, grid, window, depth, global_depth) in enumerate(scales):
            where = f"discriminator scale {k}"
            _check_heads("patch_embed_dims", dim, self.num_attention_heads, where)
            _check_window("window_sizes", window, grid, where)
            if depth:
                _check_attention_tokens((window or grid) ** 2 + with_cls, where)
            if global_depth or k == num_scales - 1:  # global blocks; the last block attends the last grid
                _check_attention_tokens(grid * grid + 1, where)
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
        _check_parameter_count(self, "`patch_embed_dims`/`hidden_size`, `depths`, `global_depths` or `mlp_ratio`")


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
    # CPU demo (MNIST digits in minutes; the search is in training/README.md): global attention at 8x8, 8x8 windows at
    # 16x16 and one block of 4x4 windows at 32x32 after pixel shuffles (global attention over 1,024 tokens would
    # dominate CPU time; without the 32x32 block strokes are grainy); MLP ratio 2 (the 8x8 MLPs were half the time).
    "tiny": dict(latent_dim=64, bottom_width=8, image_size=32, hidden_size=128, depths=[2, 2, 1],
                 upsample_types=["pixel_shuffle", "pixel_shuffle"], window_sizes=[0, 8, 4], mlp_ratio=2.0,
                 num_attention_heads=2, use_relative_position_bias=False, norm_type="ln"),
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
                 mlp_ratio=2.0, norm_type="ln"),
}
