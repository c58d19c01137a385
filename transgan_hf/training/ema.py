"""Exponential moving average of the generator, kept on the device (../shared/spec/transgan_official.md §2.3).

The official loop keeps the average as a host-side list and copies every parameter to the CPU after each generator
step; here the average is a frozen copy of the model on the same device, blended with one fused
`torch._foreach_lerp_` call, so an update costs a few kernel launches and no host synchronisation.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def ema_beta(
    cur_nimg: int,
    batch_size: int,
    ema_kimg: float | None,
    ema_warmup: float = 0.0,
    ema_decay: float | None = None,
) -> float:
    """Blend factor β of one EMA update (`ema ← β·ema + (1 − β)·model`), the official formula.

    A fixed `ema_decay` wins. Otherwise the half-life is `ema_kimg` thousand images, shortened to
    `cur_nimg · ema_warmup` early in training when `ema_warmup` is non-zero (so β = 0 at the start: the average begins
    as a copy of the model), and β = 0.5 ** (batch_size / half-life). Officially `cur_nimg` counts discriminator images
    and `batch_size` is the global discriminator batch of one loader iteration, although the update runs once per
    generator step; callers reproduce that by passing the same quantities.
    """
    if ema_decay is not None:
        if not 0.0 <= ema_decay < 1.0:  # 1 would keep the initial weights forever
            raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}.")
        return float(ema_decay)
    if ema_kimg is None:
        raise ValueError("Give either ema_kimg (half-life in thousands of images) or a fixed ema_decay.")
    if not (0 <= ema_kimg < math.inf and 0 <= ema_warmup < math.inf):  # also refuses NaN
        raise ValueError(f"ema_kimg and ema_warmup must be finite and non-negative, got {ema_kimg} and {ema_warmup}.")
    ema_nimg = ema_kimg * 1000
    if ema_warmup:
        ema_nimg = min(ema_nimg, cur_nimg * ema_warmup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside distributed wrappers (DDP, DataParallel, Accelerate's: `.module`) and `torch.compile`
    (`._orig_mod`), in any nesting."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


class ExponentialMovingAverage:
    """A frozen, eval-mode copy of a model whose parameters track the model's by exponential moving average.

    Persistent buffers are copied, not averaged. The copy lives on the model's device (it follows the model there on
    the first update if the model was moved after this object was created). Use `self.model` for sampling and
    `self.model.save_pretrained(...)` to export.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = copy.deepcopy(unwrap_model(model)).eval().requires_grad_(False)
        self._param_names = [name for name, _ in self.model.named_parameters()]
        # Non-persistent buffers (the attention's relative-position index) are constants the copy already holds.
        persistent = set(self.model.state_dict())
        self._buffer_names = [name for name, _ in self.model.named_buffers() if name in persistent]

    def _matching(self, source: dict[str, torch.Tensor], names: list[str], kind: str) -> list[torch.Tensor]:
        missing = [name for name in names if name not in source]
        if missing or len(source) != len(names):
            raise ValueError(
                f"The model's {kind} do not match the EMA copy's (missing: {missing[:5]}); create the "
                "ExponentialMovingAverage from the same architecture."
            )
        return [source[name] for name in names]

    @torch.no_grad()
    def update(self, model: nn.Module, beta: float) -> None:
        """`ema ← β·ema + (1 − β)·model` for every parameter (one fused lerp); persistent buffers are copied."""
        model = unwrap_model(model)
        model_params = self._matching(dict(model.named_parameters()), self._param_names, "parameters")
        ema_params = list(self.model.parameters())
        if model_params and ema_params[0].device != model_params[0].device:
            self.model.to(model_params[0].device)
            ema_params = list(self.model.parameters())
        if model_params:
            torch._foreach_lerp_(ema_params, model_params, 1.0 - beta)
        if self._buffer_names:
            wanted = set(self._buffer_names)
            model_buffers = self._matching({name: buffer for name, buffer in model.named_buffers() if name in wanted},
                                           self._buffer_names, "buffers")
            ema_buffers = dict(self.model.named_buffers())
            torch._foreach_copy_([ema_buffers[name] for name in self._buffer_names], model_buffers)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged model's state dict."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
