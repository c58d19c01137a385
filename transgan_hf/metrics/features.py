"""Feature networks for FID/KID/IS: a small common interface, a registry, and image quantisation.

Every feature network takes **uint8** images (B, 3, H, W) and returns a `FeatureOutput` (features for FID/KID,
logits for IS). Quantising to uint8 first is part of the evaluation protocol (spec §4.4: FID is reported on
uint8-quantised samples, as if the images had been saved as PNG), so all networks share `images_to_uint8`.

Networks are chosen by name (`inception`, `digits`, or anything added with `register_feature_extractor`) or by an
import path `"package.module:factory"`; a factory is called as `factory(weights_path=...)`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class FeatureOutput:
    features: torch.Tensor
    """(B, D) feature vectors for the Fréchet distance and KID."""
    logits: torch.Tensor | None = None
    """(B, K) class logits for the Inception Score / classifier confidence (None if the network has no classifier)."""


class FeatureExtractor(nn.Module):
    """Base class of feature networks: `forward(uint8 images (B, 3, H, W)) -> FeatureOutput`.

    Subclasses set `name` (recorded with statistics, so that statistics of different networks are never compared),
    `protocol` (one line describing what the numbers mean) and `metric_names` (how FID/KID/IS are called when
    computed with this network: the digit network reports `fdd_mnist`, never `fid`).
    """

    name: str = "custom"
    protocol: str = "custom feature network"
    metric_names: dict[str, str] = {"fid": "fid", "kid": "kid", "is": "is"}


def images_to_uint8(images) -> torch.Tensor:
    """Quantise images to uint8 (B, 3, H, W) the way a PNG writer would.

    Accepts: float tensors/arrays in [0, 1] (pipeline `output_type="pt"`/`"np"`; values are clamped, then
    `round(x * 255)`), uint8 tensors/arrays, channels-first (B, C, H, W) or channels-last (B, H, W, C), single images,
    lists of PIL images. One-channel images are repeated to RGB.
    """
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("No images given.")
        if hasattr(images[0], "convert"):  # PIL images
            images = np.stack([np.asarray(image.convert("RGB")) for image in images])
        else:
            images = torch.stack([torch.as_tensor(image if isinstance(image, torch.Tensor) else np.asarray(image))
                                  for image in images])
    tensor = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images.detach()
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4:
        raise ValueError(f"Images must be (B, C, H, W) or (B, H, W, C); got shape {tuple(tensor.shape)}.")
    if tensor.shape[1] not in (1, 3) and tensor.shape[-1] in (1, 3):
        tensor = tensor.permute(0, 3, 1, 2)
    if tensor.shape[1] not in (1, 3):
        raise ValueError(f"Images must have 1 or 3 channels; got shape {tuple(tensor.shape)}.")
    if tensor.dtype == torch.uint8:
        quantised = tensor
    elif tensor.is_floating_point():
        quantised = (tensor.float().clamp(0, 1) * 255).round().to(torch.uint8)
    else:
        raise ValueError(f"Images must be float in [0, 1] or uint8, got dtype {tensor.dtype}.")
    if quantised.shape[1] == 1:
        quantised = quantised.expand(-1, 3, -1, -1)
    return quantised.contiguous()


FeatureExtractorFactory = Callable[..., FeatureExtractor]
_REGISTRY: dict[str, FeatureExtractorFactory] = {}


def register_feature_extractor(name: str, factory: FeatureExtractorFactory) -> None:
    """Make `factory(weights_path=None) -> FeatureExtractor` available as `--feature_extractor NAME`."""
    _REGISTRY[name] = factory


def available_feature_extractors() -> list[str]:
    _register_builtin()
    return sorted(_REGISTRY)


def _register_builtin() -> None:
    if "inception" not in _REGISTRY:
        from .inception import FIDInceptionFeatureExtractor

        _REGISTRY["inception"] = FIDInceptionFeatureExtractor.from_weights
    if "digits" not in _REGISTRY:
        from .digits import DigitFeatureExtractor

        _REGISTRY["digits"] = DigitFeatureExtractor.from_weights


def build_feature_extractor(
    spec: str | FeatureExtractor, weights_path: str | None = None, device: torch.device | str | None = None
) -> FeatureExtractor:
    """A ready (eval mode, no grad, on `device`) feature network from a name, `module:factory`, or an instance."""
    if isinstance(spec, FeatureExtractor):
        extractor = spec
    elif isinstance(spec, str):
        _register_builtin()
        if spec in _REGISTRY:
            factory = _REGISTRY[spec]
        elif ":" in spec:
            module_name, _, attribute = spec.partition(":")
            try:
                factory = getattr(importlib.import_module(module_name), attribute)
            except (ImportError, AttributeError) as error:
                raise ValueError(f"Cannot import the feature network factory {spec!r}: {error}") from None
        else:
            raise ValueError(
                f"Unknown feature network {spec!r}; use one of {sorted(_REGISTRY)} or 'package.module:factory'."
            )
        extractor = factory(weights_path=weights_path)
        if not isinstance(extractor, FeatureExtractor):
            raise ValueError(f"The factory of {spec!r} returned {type(extractor).__name__}, not a FeatureExtractor.")
    else:
        raise ValueError(f"feature_extractor must be a name or a FeatureExtractor, got {type(spec).__name__}.")
    extractor.requires_grad_(False)
    extractor.eval()
    if device is not None:
        extractor.to(device)
    return extractor
