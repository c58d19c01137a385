"""TransGAN generator and discriminator (Jiang, Chang & Wang, NeurIPS 2021) as `transformers` models.

Read top to bottom: token-level helpers (norms, activations, windows, noise), the layers (MLP, attentions, the
transformer block), the parts of the generator (upsampling, stages) and of the discriminator (scales), then the models.
Feature maps are token sequences `(batch, height * width, channels)` in row-major order, as in the official code, so
official checkpoints map onto these modules one to one (`transgan_hf.convert_official`). The attention kernels live in
`attention.py`; a model runs the one its `config._attn_implementation` names.

This file imports only `torch`, `safetensors` and `transformers` (plus its sibling configuration and attention files)
so that it can be copied next to a Hub checkpoint as remote code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .attention import ATTENTION_FUNCTIONS, attention_function
from .configuration_transgan import TransGANDiscriminatorConfig, TransGANGeneratorConfig
from .model_loading import CheckedLoadingMixin

TransGANConfig = TransGANGeneratorConfig | TransGANDiscriminatorConfig


# ---------------------------------------------------------------------------------------------------------------------
# Token-level helpers
# ---------------------------------------------------------------------------------------------------------------------


class PixelNorm(nn.Module):
    """Normalise every token to unit RMS over channels (`pn`; no parameters, epsilon 1e-8 as in the official code)."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states * torch.rsqrt(hidden_states.pow(2).mean(dim=-1, keepdim=True) + self.eps)


class TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the channels of a `(batch, tokens, channels)` sequence (`bn`)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden_states.transpose(1, 2)).transpose(1, 2)


class TokenInstanceNorm(nn.InstanceNorm1d):
    """InstanceNorm1d (per sample and channel, over tokens) of a `(batch, tokens, channels)` sequence (`in`)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden_states.transpose(1, 2)).transpose(1, 2)


def build_norm(norm_type: str, dim: int, eps: float) -> nn.Module:
    if norm_type == "ln":
        return nn.LayerNorm(dim, eps=eps)
    if norm_type == "pn":
        return PixelNorm()
    if norm_type == "bn":
        return TokenBatchNorm(dim)
    if norm_type == "in":
        return TokenInstanceNorm(dim)
    return nn.Identity()


def build_activation(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "leakyrelu":
        return nn.LeakyReLU(0.2)
    if name == "relu":
        return nn.ReLU()
    return nn.SiLU()


def window_partition(hidden_states: torch.Tensor, grid_size: int, window_size: int) -> torch.Tensor:
    """`(B, G*G, C)` row-major grid -> `(B * (G/w)^2, w*w, C)` non-overlapping windows, in the official order."""
    batch, _, channels = hidden_states.shape
    n = grid_size // window_size
    windows = hidden_states.view(batch, n, window_size, n, window_size, channels).transpose(2, 3)
    return windows.reshape(batch * n * n, window_size * window_size, channels)


def window_reverse(windows: torch.Tensor, grid_size: int, window_size: int) -> torch.Tensor:
    """Inverse of `window_partition`."""
    n = grid_size // window_size
    channels = windows.shape[-1]
    grid = windows.view(-1, n, n, window_size, window_size, channels).transpose(2, 3)
    return grid.reshape(-1, grid_size * grid_size, channels)


def tokens_to_map(hidden_states: torch.Tensor, grid_size: int) -> torch.Tensor:
    """`(B, G*G, C)` -> `(B, C, G, G)`."""
    return hidden_states.transpose(1, 2).unflatten(2, (grid_size, grid_size))


def map_to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """`(B, C, H, W)` -> `(B, H*W, C)`."""
    return feature_map.flatten(2).transpose(1, 2)


def relative_position_index(window_size: int) -> torch.Tensor:
    """Swin index `(dy + W - 1) * (2W - 1) + (dx + W - 1)` of every query/key pair of a `W x W` window (row-major)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")).flatten(1)
    delta = coords[:, :, None] - coords[:, None, :] + (window_size - 1)
    return delta[0] * (2 * window_size - 1) + delta[1]


@dataclass(frozen=True)
class BatchNoiseRows:
    """Rows `rows` of the token noise that `generator` draws for a whole batch of `batch_size` samples.

    Lets a seeded batch run in several forward passes (the pipeline splits batches that do not fit in memory): every
    pass starts from the same generator state, draws each noise tensor for the whole batch, as one pass would, and
    keeps its own rows, so the images do not depend on how the batch was split.
    """

    generator: torch.Generator
    batch_size: int
    rows: slice

    def draw(self, batch_size: int, num_tokens: int) -> torch.Tensor:
        """This pass's rows of a `(self.batch_size, num_tokens, 1)` standard-normal draw."""
        if len(range(self.batch_size)[self.rows]) != batch_size:
            raise ValueError(f"Got noise for rows {self.rows} of {self.batch_size} for a batch of {batch_size}.")
        noise = torch.randn((self.batch_size, num_tokens, 1), generator=self.generator, device=self.generator.device)
        return noise[self.rows]


NoiseGenerator = torch.Generator | list[torch.Generator] | BatchNoiseRows | None


def draw_token_noise(
    batch_size: int, num_tokens: int, generator: NoiseGenerator, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """One standard-normal value per token, `(batch, tokens, 1)`.

    With a list of generators, sample i is drawn from `generator[i]` alone, so an image does not depend on the other
    images of its batch. With `BatchNoiseRows`, the rows of the whole batch's draw.
    """
    if hasattr(generator, "draw"):  # BatchNoiseRows, by attribute: remote-code copies of it are other class objects
        return generator.draw(batch_size, num_tokens).to(device=device, dtype=dtype)
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for a batch of {batch_size}; pass one per sample.")
        draws = [torch.randn((1, num_tokens, 1), generator=g, device=g.device) for g in generator]
        return torch.cat(draws).to(device=device, dtype=dtype)
    if generator is not None:
        noise = torch.randn((batch_size, num_tokens, 1), generator=generator, device=generator.device)
        return noise.to(device=device, dtype=dtype)
    return torch.randn((batch_size, num_tokens, 1), device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------------------


class TransGANMLP(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, hidden_act: str) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = build_activation(hidden_act)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class TransGANSelfAttention(nn.Module):
    """Multi-head self-attention with the learned relative-position bias as an additive mask, and optional per-token
    noise added to the input (learned strength, zero-initialised), run by the kernel of `config._attn_implementation`.

    `bias_window` is the side of the square window the bias table covers (the attention window, or the whole grid
    for global attention); 0 disables the bias. The table's index is a non-persistent buffer, as in Swin: never stored
    in checkpoints, recomputed by `_init_weights` when a model is loaded.
    """

    def __init__(self, config: TransGANConfig, dim: int, bias_window: int) -> None:
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.bias_window = bias_window
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        if bias_window:
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * bias_window - 1) ** 2, self.num_heads))
            self.register_buffer("relative_position_index", relative_position_index(bias_window), persistent=False)
        self.noise_strength = nn.Parameter(torch.zeros(())) if config.noise_injection else None

    def relative_position_bias(self) -> torch.Tensor:
        """`(1, heads, W*W, W*W)` additive attention bias, contiguous (one head's map after the other)."""
        index = self.relative_position_index
        # index_select along the offsets of the (heads, offsets) view rather than `table[index]`: its backward
        # (index_add_) is faster on a CPU than advanced indexing's accumulating index_put_, and deterministic; the
        # result needs no permute, so the kernels get a contiguous mask.
        bias = self.relative_position_bias_table.t().index_select(1, index.view(-1))
        return bias.view(1, self.num_heads, index.shape[0], index.shape[1])

    def forward(self, hidden_states: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if self.noise_strength is not None and noise is not None:
            hidden_states = hidden_states + noise * self.noise_strength
        batch, tokens, channels = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, tokens, 3, self.num_heads, channels // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias = None
        if self.bias_window:
            bias = self.relative_position_bias().to(query.dtype)
            if bias.shape[-1] != tokens:
                raise ValueError(
                    f"The relative-position bias covers {bias.shape[-1]} tokens but the sequence has {tokens}."
                )
        attended = attention_function(self.config._attn_implementation)(query, key, value, bias)
        return self.proj(attended.transpose(1, 2).reshape(batch, tokens, channels))


class TransGANLatentCrossAttention(nn.Module):
    """Cross-attention from image tokens to latent tokens ("self-modulation" of the official CelebA-HQ generator):
    queries from the (un-normalised) tokens, keys and values from the latent tokens, no biases except `proj`.

    `noise_strength` mirrors a parameter that the official model registers but never reads; it is kept frozen and
    unused so that parameter counts and checkpoints match.
    """

    def __init__(self, config: TransGANGeneratorConfig, dim: int, latent_token_dim: int) -> None:
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(latent_token_dim, dim, bias=False)
        self.v = nn.Linear(latent_token_dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.noise_strength = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, hidden_states: torch.Tensor, latent_tokens: torch.Tensor) -> torch.Tensor:
        batch, tokens, channels = hidden_states.shape
        head_dim = channels // self.num_heads
        query = self.q(hidden_states).view(batch, tokens, self.num_heads, head_dim).transpose(1, 2)
        key = self.k(latent_tokens).view(batch, -1, self.num_heads, head_dim).transpose(1, 2)
        value = self.v(latent_tokens).view(batch, -1, self.num_heads, head_dim).transpose(1, 2)
        attended = attention_function(self.config._attn_implementation)(query, key, value)
        return self.proj(attended.transpose(1, 2).reshape(batch, tokens, channels))


class TransGANBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block on a `grid_size x grid_size` token grid.

    Self-attention is global (`window_size=0`) or runs in non-overlapping windows; norms, noise and the MLP act per
    token, so they run on the un-partitioned sequence. An optional latent cross-attention comes first. With
    `residual_gain != 1` (discriminator without norm) skip and branches are scaled, as in the official `DisBlock`.
    """

    def __init__(
        self,
        config: TransGANConfig,
        dim: int,
        grid_size: int,
        window_size: int = 0,
        use_relative_position_bias: bool = True,
        latent_token_dim: int | None = None,
        residual_gain: float = 1.0,
    ) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.window_size = window_size if window_size and window_size != grid_size else 0
        self.residual_gain = residual_gain
        self.noise_injection = config.noise_injection
        if latent_token_dim is not None:
            self.cross_attention = TransGANLatentCrossAttention(config, dim, latent_token_dim)
        else:
            self.cross_attention = None
        self.norm1 = build_norm(config.norm_type, dim, config.layer_norm_eps)
        bias_window = (window_size or grid_size) if use_relative_position_bias else 0
        self.attention = TransGANSelfAttention(config, dim, bias_window)
        self.norm2 = build_norm(config.norm_type, dim, config.layer_norm_eps)
        self.mlp = TransGANMLP(dim, config.mlp_ratio, config.hidden_act)

    def forward(
        self,
        hidden_states: torch.Tensor,
        noise: torch.Tensor | None = None,
        latent_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.cross_attention is not None:
            hidden_states = hidden_states + self.cross_attention(hidden_states, latent_tokens)
        normed = self.norm1(hidden_states)
        if self.window_size:
            normed = window_partition(normed, self.grid_size, self.window_size)
            if noise is not None:
                noise = window_partition(noise, self.grid_size, self.window_size)
            attended = window_reverse(self.attention(normed, noise), self.grid_size, self.window_size)
        else:
            attended = self.attention(normed, noise)
        gain = self.residual_gain
        if gain == 1.0:
            hidden_states = hidden_states + attended
            return hidden_states + self.mlp(self.norm2(hidden_states))
        hidden_states = (hidden_states + attended) * gain
        return (hidden_states + self.mlp(self.norm2(hidden_states))) * gain


def run_blocks(
    blocks: Iterable[TransGANBlock],
    hidden_states: torch.Tensor,
    noise_generator: NoiseGenerator,
    latent_tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """`blocks` in turn, each with fresh per-token noise when the model injects noise. The noise is drawn here, outside
    the blocks, so that gradient checkpointing recomputes a block with the noise its forward saw."""
    for block in blocks:
        noise = None
        if block.noise_injection:
            batch, tokens = hidden_states.shape[:2]
            noise = draw_token_noise(batch, tokens, noise_generator, hidden_states.device, hidden_states.dtype)
        hidden_states = block(hidden_states, noise, latent_tokens)
    return hidden_states


# ---------------------------------------------------------------------------------------------------------------------
# Generator and discriminator parts
# ---------------------------------------------------------------------------------------------------------------------


class TransGANUpsample(nn.Module):
    """Stage transition on tokens: `pixel_shuffle` (C/4, x2), `bicubic` (x2), or `updown_pixel_shuffle`."""

    def __init__(self, kind: str, grid_size: int) -> None:
        super().__init__()
        self.kind = kind
        self.grid_size = grid_size

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        feature_map = tokens_to_map(hidden_states, self.grid_size)
        if self.kind == "bicubic":
            feature_map = F.interpolate(feature_map, scale_factor=2, mode="bicubic", align_corners=False)
        else:
            if self.kind == "updown_pixel_shuffle":
                feature_map = F.interpolate(feature_map, scale_factor=4, mode="bicubic", align_corners=False)
                feature_map = F.avg_pool2d(feature_map, 4)
            feature_map = F.pixel_shuffle(feature_map, 2)
        return map_to_tokens(feature_map)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, grid_size={self.grid_size}"


class TransGANGeneratorStage(nn.Module):
    """One resolution of the generator: upsampling from the previous stage (none for the first), position embedding,
    `depths[index]` blocks."""

    def __init__(self, config: TransGANGeneratorConfig, index: int) -> None:
        super().__init__()
        dim = config.stage_dims[index]
        grid = config.stage_grid_sizes[index]
        self.upsample = TransGANUpsample(config.upsample_types[index - 1], grid // 2) if index > 0 else None
        self.position_embedding = nn.Parameter(torch.zeros(1, grid * grid, dim))
        latent_token_dim = config.hidden_size if config.latent_cross_attention else None
        self.blocks = nn.ModuleList(
            TransGANBlock(
                config,
                dim,
                grid,
                window_size=config.window_sizes[index],
                use_relative_position_bias=config.use_relative_position_bias,
                latent_token_dim=latent_token_dim,
            )
            for _ in range(config.depths[index])
        )

    def forward(
        self, hidden_states: torch.Tensor, noise_generator: NoiseGenerator, latent_tokens: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.upsample is not None:
            hidden_states = self.upsample(hidden_states)
        hidden_states = hidden_states + self.position_embedding
        return run_blocks(self.blocks, hidden_states, noise_generator, latent_tokens)


class TransGANDiscriminatorScale(nn.Module):
    """Scale `index` of the discriminator: a patch embedding of the image, concatenated channel-wise with the 2x
    average-pooled tokens of the previous scale, position embedding, then `depths[index]` (windowed) and
    `global_depths[index]` global blocks."""

    def __init__(self, config: TransGANDiscriminatorConfig, index: int) -> None:
        super().__init__()
        dim = config.scale_dims[index]
        grid = config.scale_grid_sizes[index]
        self.grid_size = grid
        if index == 0 and config.overlapping_first_patch:
            p = config.patch_size
            self.patch_embedding = nn.Conv2d(config.in_channels, config.patch_embed_dims[0], 2 * p, p, padding=p // 2)
        else:
            patch = config.patch_size * 2**index
            self.patch_embedding = nn.Conv2d(config.in_channels, config.patch_embed_dims[index], patch, patch)
        with_cls = config.cls_token_position == "input"
        self.position_embedding = nn.Parameter(torch.zeros(1, grid * grid + int(with_cls), dim))
        gain = math.sqrt(0.5) if config.norm_type == "none" else 1.0
        windows = [config.window_sizes[index]] * config.depths[index] + [0] * config.global_depths[index]
        self.blocks = nn.ModuleList(
            TransGANBlock(config, dim, grid, w, config.use_relative_position_bias, residual_gain=gain) for w in windows
        )

    def forward(
        self,
        pixel_values: torch.Tensor,
        previous_tokens: torch.Tensor | None,
        noise_generator: NoiseGenerator,
        cls_token: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`previous_tokens`: the output of the previous scale (None for the first); `cls_token`: prepended to the
        input (`cls_token_position="input"`)."""
        hidden_states = map_to_tokens(self.patch_embedding(pixel_values))
        if previous_tokens is not None:  # the previous scale's grid is twice as wide
            pooled = F.avg_pool2d(tokens_to_map(previous_tokens, 2 * self.grid_size), 2)
            hidden_states = torch.cat([map_to_tokens(pooled), hidden_states], dim=-1)
        if cls_token is not None:
            hidden_states = torch.cat([cls_token.expand(hidden_states.shape[0], -1, -1), hidden_states], dim=1)
        hidden_states = hidden_states + self.position_embedding
        return run_blocks(self.blocks, hidden_states, noise_generator)


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class TransGANGeneratorOutput(ModelOutput):
    """Output of [`TransGANGenerator`].

    Args:
        images: `(batch, channels, height, width)` raw generator output, nominally in [-1, 1] (no tanh, no clamp).
    """

    images: torch.FloatTensor | None = None


@dataclass
class TransGANDiscriminatorOutput(ModelOutput):
    """Output of [`TransGANDiscriminator`].

    Args:
        logits: `(batch, 1)` unbounded critic scores.
    """

    logits: torch.FloatTensor | None = None


class TransGANPreTrainedModel(CheckedLoadingMixin, PreTrainedModel):
    """Weight initialisation of the official code, plus the `transformers` plumbing shared by G and D."""

    supports_gradient_checkpointing = True
    official_linear_init = "trunc_normal"
    _no_split_modules = ["TransGANBlock"]
    input_modalities = ("image",)
    default_attn_implementation: str
    """The entry of `ATTENTION_FUNCTIONS` that the model runs unless `attn_implementation` names another."""

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        return True  # every attention reads `config._attn_implementation`; transformers would search the source

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        """The entry of `ATTENTION_FUNCTIONS` to run: the one asked for, else this model's `default_attn_implementation`
        (also for `"eager"`, which `transformers` used to set on these models while they ran their defaults)."""
        if requested_attention in (None, "eager"):
            return self.default_attn_implementation
        if requested_attention not in ATTENTION_FUNCTIONS:
            choices = ", ".join(map(repr, ATTENTION_FUNCTIONS))
            raise ValueError(f"`attn_implementation`={requested_attention!r} is not supported by "
                             f"{type(self).__name__}; valid choices are {choices}.")
        return requested_attention

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Conv2d):
            # Official `weights_init(xavier_uniform)` hits every Conv2d weight; the bias keeps PyTorch's default.
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                init.uniform_(module.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        elif isinstance(module, nn.Linear):
            if self.official_linear_init == "trunc_normal":
                init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    init.zeros_(module.bias)
            else:  # PyTorch's default nn.Linear initialisation
                init.kaiming_uniform_(module.weight, a=math.sqrt(5))
                if module.bias is not None:
                    bound = 1 / math.sqrt(module.in_features)
                    init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
            if module.weight is not None:
                init.ones_(module.weight)
                init.zeros_(module.bias)
            if getattr(module, "running_mean", None) is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, TransGANSelfAttention):
            if module.bias_window:
                init.trunc_normal_(module.relative_position_bias_table, std=std)
                # `from_pretrained` builds the model on the meta device and leaves non-persistent buffers empty
                init.copy_(module.relative_position_index, relative_position_index(module.bias_window))
            if module.noise_strength is not None:
                init.zeros_(module.noise_strength)
        elif isinstance(module, TransGANLatentCrossAttention):
            init.zeros_(module.noise_strength)
        elif isinstance(module, TransGANGeneratorStage):
            init.trunc_normal_(module.position_embedding, std=std)
        elif isinstance(module, TransGANDiscriminatorScale):
            init.trunc_normal_(module.position_embedding, std=std)
        elif isinstance(module, TransGANGenerator) and module.latent_position_embedding is not None:
            init.zeros_(module.latent_position_embedding)  # the official `embed_pos` is never re-initialised
        elif isinstance(module, TransGANDiscriminator):
            init.trunc_normal_(module.cls_token, std=std)


class TransGANGenerator(TransGANPreTrainedModel):
    """TransGAN generator: latent `(B, latent_dim)` -> images `(B, out_channels, image_size, image_size)`.

    Example:
    ```python
    >>> import torch
    >>> from transgan_hf import TransGANGenerator, TransGANGeneratorConfig
    >>> g = TransGANGenerator(TransGANGeneratorConfig.from_preset("tiny"))
    >>> g(torch.randn(2, g.config.latent_dim)).images.shape
    torch.Size([2, 3, 32, 32])
    ```
    """

    config_class = TransGANGeneratorConfig
    config: TransGANGeneratorConfig
    base_model_prefix = "transgan_generator"
    main_input_name = "latents"
    # The official generators never apply their `_init_weights`: Linear layers keep PyTorch's default init.
    official_linear_init = "pytorch_default"
    # The generator is never differentiated twice, so a CPU training step may use the faster bias-gradient kernel.
    default_attn_implementation = "cpu_bias_gradient"

    def __init__(self, config: TransGANGeneratorConfig) -> None:
        super().__init__(config)
        first = config.bottom_width**2
        self.latent_proj = nn.Linear(config.latent_dim, first * config.hidden_size)
        if config.latent_cross_attention:
            self.latent_embedding = nn.Linear(config.latent_dim, config.num_latent_tokens * config.hidden_size)
            self.latent_position_embedding = nn.Parameter(torch.zeros(1, config.num_latent_tokens, config.hidden_size))
        else:
            self.latent_embedding = None
            self.latent_position_embedding = None
        self.stages = nn.ModuleList(TransGANGeneratorStage(config, i) for i in range(len(config.depths)))
        self.to_rgb = nn.Conv2d(config.stage_dims[-1], config.out_channels, kernel_size=1)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(
        self,
        latents: torch.Tensor,
        noise_generator: NoiseGenerator = None,
        return_dict: bool | None = None,
    ) -> TransGANGeneratorOutput | tuple[torch.Tensor]:
        r"""
        Args:
            latents: `(batch, latent_dim)` latent vectors, usually standard normal.
            noise_generator: `torch.Generator` (or one per sample) for the per-token noise injection, so that a seeded
                call is reproducible; `None` uses the global RNG. Ignored when `noise_injection` is off.
            return_dict: return a [`TransGANGeneratorOutput`] instead of a tuple.
        """
        config = self.config
        if latents.dim() != 2 or latents.shape[1] != config.latent_dim:
            raise ValueError(f"`latents` must have shape (batch, {config.latent_dim}), got {tuple(latents.shape)}.")
        return_dict = return_dict if return_dict is not None else config.return_dict
        latents = latents.to(self.latent_proj.weight.dtype)
        if config.latent_norm:
            latents = latents / latents.norm(dim=-1, keepdim=True) * math.sqrt(config.latent_dim)
        batch = latents.shape[0]
        hidden_states = self.latent_proj(latents).view(batch, config.bottom_width**2, config.hidden_size)
        latent_tokens = None
        if self.latent_embedding is not None:
            latent_tokens = self.latent_embedding(latents).view(batch, config.num_latent_tokens, config.hidden_size)
            latent_tokens = latent_tokens + self.latent_position_embedding
        for stage in self.stages:
            hidden_states = stage(hidden_states, noise_generator, latent_tokens)
        images = self.to_rgb(tokens_to_map(hidden_states, config.image_size))
        if not return_dict:
            return (images,)
        return TransGANGeneratorOutput(images=images)


class TransGANDiscriminator(TransGANPreTrainedModel):
    """TransGAN multi-scale discriminator: images `(B, C, H, W)` in [-1, 1] -> critic logits `(B, 1)`.

    DiffAugment is not part of the network: the training loop applies it to every discriminator input.
    """

    config_class = TransGANDiscriminatorConfig
    config: TransGANDiscriminatorConfig
    base_model_prefix = "transgan_discriminator"
    main_input_name = "pixel_values"
    # The gradient penalty differentiates the discriminator twice, which only SDPA supports.
    default_attn_implementation = "sdpa"

    def __init__(self, config: TransGANDiscriminatorConfig) -> None:
        super().__init__(config)
        self.scales = nn.ModuleList(TransGANDiscriminatorScale(config, k) for k in range(len(config.patch_embed_dims)))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        if config.cls_token_position == "last_block":
            gain = math.sqrt(0.5) if config.norm_type == "none" else 1.0
            self.last_block = TransGANBlock(
                config, config.hidden_size, grid_size=0, use_relative_position_bias=False, residual_gain=gain
            )
        else:
            self.last_block = None
        self.norm = build_norm(config.norm_type, config.hidden_size, config.layer_norm_eps)
        self.head = nn.Linear(config.hidden_size, 1)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        noise_generator: NoiseGenerator = None,
        return_dict: bool | None = None,
    ) -> TransGANDiscriminatorOutput | tuple[torch.Tensor]:
        r"""
        Args:
            pixel_values: `(batch, in_channels, image_size, image_size)` images in [-1, 1].
            noise_generator: `torch.Generator` (or one per sample) for the per-token noise injection.
            return_dict: return a [`TransGANDiscriminatorOutput`] instead of a tuple.
        """
        config = self.config
        expected = (config.in_channels, config.image_size, config.image_size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(f"`pixel_values` must have shape (batch, {', '.join(map(str, expected))}), "
                             f"got {tuple(pixel_values.shape)}.")
        return_dict = return_dict if return_dict is not None else config.return_dict
        pixel_values = pixel_values.to(self.head.weight.dtype)
        input_cls_token = self.cls_token if self.last_block is None else None
        hidden_states = None
        for scale in self.scales:
            hidden_states = scale(pixel_values, hidden_states, noise_generator, input_cls_token)
        if self.last_block is not None:
            hidden_states = torch.cat([self.cls_token.expand(pixel_values.shape[0], -1, -1), hidden_states], dim=1)
            hidden_states = run_blocks([self.last_block], hidden_states, noise_generator)
        logits = self.head(self.norm(hidden_states)[:, 0])
        if not return_dict:
            return (logits,)
        return TransGANDiscriminatorOutput(logits=logits)


__all__ = [
    "BatchNoiseRows",
    "TransGANDiscriminator",
    "TransGANDiscriminatorOutput",
    "TransGANGenerator",
    "TransGANGeneratorOutput",
    "TransGANPreTrainedModel",
]
