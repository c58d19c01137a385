"""The FID Inception network (TensorFlow Inception 2015-12-05, "pool_3" variant), without torchvision.

This is the network TTUR's FID (and so the TransGAN paper) uses, in the PyTorch layout of pytorch-fid's weights file
`pt_inception-2015-12-05-6726825d.pth` (torch-fidelity ships the same weights, with the same SHA-256 prefix, as
`weights-inception-2015-12-05-6726825d.pth`; both names are looked for). It differs from torchvision's InceptionV3
in three places, all reproducing the TensorFlow graph: average pools inside the Inception blocks ignore the zero
padding, the last block's pool branch is a max pool, and the classifier has 1008 classes.

Input processing, as in the TensorFlow graph: uint8 images -> float -> bilinear resize to 299x299 with
TensorFlow 1.x semantics (`tf1_bilinear_resize`: no half-pixel offset, unlike `F.interpolate`, so results match
TTUR) -> `(x - 128) / 128`. Outputs: the 2048-d average-pool features (FID/KID) and the 1008 logits **without** the
classifier bias (the improved-GAN Inception Score code multiplies pool_3 by the softmax weights only).

Weights are never downloaded: `resolve_inception_weights` looks at an explicit path, `$TRANSGAN_INCEPTION_WEIGHTS`,
then the torch hub cache, and otherwise fails with one message that says where to get the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .features import FeatureExtractor, FeatureOutput

logger = logging.getLogger(__name__)

INCEPTION_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_ALTERNATIVE_FILENAME = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's copy
INCEPTION_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
INCEPTION_WEIGHTS_ENV = "TRANSGAN_INCEPTION_WEIGHTS"
# torch hub file names end in the first hex digits of the file's SHA-256.
INCEPTION_WEIGHTS_SHA256_PREFIX = "6726825d"
INCEPTION_INPUT_SIZE = 299
INCEPTION_NUM_CLASSES = 1008
UNVERIFIED_INCEPTION_PROTOCOL = (
    "UNVERIFIED Inception weights (the file's SHA-256 is not the published FID network's), not comparable with "
    "published FID/KID/IS: 2048-d pool_3 features of uint8 images, TF1 bilinear resize to 299, float64 statistics"
)
"""The protocol of a feature network whose weights file is not the published one: it never carries the published
protocol's name, so that neither a JSON report nor a model card presents its numbers as TTUR FIDs."""


class InceptionWeightsNotFoundError(FileNotFoundError):
    """The FID Inception weights file is not available locally."""


def hub_checkpoint_dir() -> Path:
    """`$TORCH_HOME/hub/checkpoints` (default `~/.cache/torch/hub/checkpoints`), where torch hub caches weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_inception_weights(path: str | os.PathLike | None = None, flag: str = "--inception_weights") -> Path:
    """Locate the weights file: `path`, else `$TRANSGAN_INCEPTION_WEIGHTS`, else the torch hub cache. `flag` is the
    command-line flag that gives `path` in the command being run, which the error names."""
    if path is None:
        path = os.environ.get(INCEPTION_WEIGHTS_ENV) or None
        source = f"${INCEPTION_WEIGHTS_ENV}"
    else:
        source = flag
    if path is not None:
        if Path(path).is_file():
            return Path(path)
        problem = f"{source} points to {str(path)!r}, which does not exist."
    else:
        for name in (INCEPTION_WEIGHTS_FILENAME, INCEPTION_WEIGHTS_ALTERNATIVE_FILENAME):
            candidate = hub_checkpoint_dir() / name
            if candidate.is_file():
                return candidate
        problem = f"The FID Inception weights {INCEPTION_WEIGHTS_FILENAME} were not found."
    raise InceptionWeightsNotFoundError(
        f"{problem} Download {INCEPTION_WEIGHTS_URL} (pytorch-fid release; nothing is downloaded automatically) and "
        f"pass {flag} PATH, set {INCEPTION_WEIGHTS_ENV}=PATH, or place it in {hub_checkpoint_dir()}/."
    )


def tf1_bilinear_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of float images (B, C, H, W) with TensorFlow 1.x `resize_bilinear` semantics.

    TF 1.x (align_corners=False) maps output pixel i to input coordinate `i * in/out` (computed in float32), reads
    the pixels `floor` and `min(floor + 1, in - 1)`, and interpolates `a + (b - a) * t`. PyTorch's `F.interpolate`
    uses half-pixel centres instead, which changes FID noticeably at 32x32 -> 299x299.
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError("tf1_bilinear_resize expects float images of shape (B, C, H, W).")

    def source_positions(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scale = torch.tensor(in_size / out_size, dtype=torch.float32)
        position = torch.arange(out_size, dtype=torch.float32) * scale
        low = position.floor().long()
        high = (low + 1).clamp(max=in_size - 1)
        weight = (position - low.float()).to(images.dtype).to(images.device)
        return low.to(images.device), high.to(images.device), weight

    out_h, out_w = size
    if (images.shape[2], images.shape[3]) == (out_h, out_w):
        return images
    low_y, high_y, weight_y = source_positions(images.shape[2], out_h)
    low_x, high_x, weight_x = source_positions(images.shape[3], out_w)
    top, bottom = images.index_select(2, low_y), images.index_select(2, high_y)
    top_left, top_right = top.index_select(3, low_x), top.index_select(3, high_x)
    bottom_left, bottom_right = bottom.index_select(3, low_x), bottom.index_select(3, high_x)
    top = top_left + (top_right - top_left) * weight_x
    bottom = bottom_left + (bottom_right - bottom_left) * weight_x
    return top + (bottom - top) * weight_y.view(-1, 1)


# ---------------------------------------------------------------------------------------------------------------------
# Network. Attribute names are those of the weights file; the layer shapes follow the TensorFlow graph.
# ---------------------------------------------------------------------------------------------------------------------


class ConvBNReLU(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3, as TensorFlow) and ReLU: every layer of the network."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride: int = 1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(hidden_states)))


def _tf_average_pool(hidden_states: torch.Tensor) -> torch.Tensor:
    """3x3/1 average pool that, like TensorFlow's, does not count the zero padding."""
    return F.avg_pool2d(hidden_states, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _run(hidden_states: torch.Tensor, *layers: nn.Module) -> torch.Tensor:
    for layer in layers:
        hidden_states = layer(hidden_states)
    return hidden_states


class InceptionBlock35(nn.Module):
    """35x35 block (Mixed_5b/5c/5d): 1x1, 5x5, double 3x3 and pool branches."""

    def __init__(self, in_channels: int, pool_channels: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBNReLU(in_channels, 64, 1)
        self.branch5x5_1 = ConvBNReLU(in_channels, 48, 1)
        self.branch5x5_2 = ConvBNReLU(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBNReLU(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBNReLU(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBNReLU(96, 96, 3, padding=1)
        self.branch_pool = ConvBNReLU(in_channels, pool_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                _run(x, self.branch5x5_1, self.branch5x5_2),
                _run(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
                self.branch_pool(_tf_average_pool(x)),
            ],
            dim=1,
        )


class InceptionReduction35(nn.Module):
    """35x35 -> 17x17 reduction (Mixed_6a)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBNReLU(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBNReLU(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBNReLU(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBNReLU(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                _run(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            dim=1,
        )


class InceptionBlock17(nn.Module):
    """17x17 block (Mixed_6b..6e) with factorised 7x7 convolutions (1x7 then 7x1) of `mid_channels` width."""

    def __init__(self, in_channels: int, mid_channels: int) -> None:
        super().__init__()
        c = mid_channels
        self.branch1x1 = ConvBNReLU(in_channels, 192, 1)
        self.branch7x7_1 = ConvBNReLU(in_channels, c, 1)
        self.branch7x7_2 = ConvBNReLU(c, c, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBNReLU(c, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBNReLU(in_channels, c, 1)
        self.branch7x7dbl_2 = ConvBNReLU(c, c, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBNReLU(c, c, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBNReLU(c, c, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBNReLU(c, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBNReLU(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                _run(x, self.branch7x7_1, self.branch7x7_2, self.branch7x7_3),
                _run(
                    x,
                    self.branch7x7dbl_1,
                    self.branch7x7dbl_2,
                    self.branch7x7dbl_3,
                    self.branch7x7dbl_4,
                    self.branch7x7dbl_5,
                ),
                self.branch_pool(_tf_average_pool(x)),
            ],
            dim=1,
        )


class InceptionReduction17(nn.Module):
    """17x17 -> 8x8 reduction (Mixed_7a)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBNReLU(in_channels, 192, 1)
        self.branch3x3_2 = ConvBNReLU(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBNReLU(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBNReLU(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBNReLU(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBNReLU(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                _run(x, self.branch3x3_1, self.branch3x3_2),
                _run(x, self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            dim=1,
        )


class InceptionBlock8(nn.Module):
    """8x8 block (Mixed_7b, Mixed_7c) with split 1x3 / 3x1 outputs; `max_pool_branch` for Mixed_7c (TF graph)."""

    def __init__(self, in_channels: int, max_pool_branch: bool) -> None:
        super().__init__()
        self.max_pool_branch = max_pool_branch
        self.branch1x1 = ConvBNReLU(in_channels, 320, 1)
        self.branch3x3_1 = ConvBNReLU(in_channels, 384, 1)
        self.branch3x3_2a = ConvBNReLU(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBNReLU(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBNReLU(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBNReLU(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBNReLU(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBNReLU(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBNReLU(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        if self.max_pool_branch:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _tf_average_pool(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(single),
                self.branch3x3_2b(single),
                self.branch3x3dbl_3a(double),
                self.branch3x3dbl_3b(double),
                self.branch_pool(pooled),
            ],
            dim=1,
        )


class FIDInceptionV3(nn.Module):
    """TF Inception 2015-12-05 up to pool_3 and the 1008-way classifier; input uint8 (B, 3, H, W), any H, W."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBNReLU(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBNReLU(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBNReLU(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBNReLU(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBNReLU(80, 192, 3)
        self.Mixed_5b = InceptionBlock35(192, pool_channels=32)
        self.Mixed_5c = InceptionBlock35(256, pool_channels=64)
        self.Mixed_5d = InceptionBlock35(288, pool_channels=64)
        self.Mixed_6a = InceptionReduction35(288)
        self.Mixed_6b = InceptionBlock17(768, mid_channels=128)
        self.Mixed_6c = InceptionBlock17(768, mid_channels=160)
        self.Mixed_6d = InceptionBlock17(768, mid_channels=160)
        self.Mixed_6e = InceptionBlock17(768, mid_channels=192)
        self.Mixed_7a = InceptionReduction17(768)
        self.Mixed_7b = InceptionBlock8(1280, max_pool_branch=False)
        self.Mixed_7c = InceptionBlock8(2048, max_pool_branch=True)
        self.fc = nn.Linear(2048, INCEPTION_NUM_CLASSES)
        self.published_weights = False  # `load_fid_inception` sets it when the file has the published checksum

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise ValueError("FIDInceptionV3 expects uint8 images; quantise with `images_to_uint8` first.")
        dtype = self.fc.weight.dtype
        pixels = tf1_bilinear_resize(images.to(dtype), (INCEPTION_INPUT_SIZE, INCEPTION_INPUT_SIZE))
        return (pixels - 128) / 128

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pool_3 features (B, 2048), logits without bias (B, 1008)), both float32."""
        x = self.preprocess(images)
        x = _run(x, self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = _run(x, self.Conv2d_3b_1x1, self.Conv2d_4a_3x3)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = _run(x, self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a)
        x = _run(x, self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e)
        x = _run(x, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)
        features = x.mean(dim=(2, 3))
        logits = features @ self.fc.weight.T
        return features.float(), logits.float()


def load_fid_inception(weights_path: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32):
    """The FID Inception network with its weights (located by `resolve_inception_weights`), in eval mode."""
    path = resolve_inception_weights(weights_path)
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a weights-only load refuses anything that is not plain tensors
        reason = "it holds objects a weights-only load refuses" if isinstance(error, pickle.UnpicklingError) else (
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no details'}")
        raise ValueError(f"{str(path)!r} is not a readable PyTorch weights file ({reason}); pass "
                         f"{INCEPTION_WEIGHTS_FILENAME} (from {INCEPTION_WEIGHTS_URL}).") from None
    if not isinstance(state_dict, dict):
        raise ValueError(f"{str(path)!r} does not hold a state dict.")
    model = FIDInceptionV3()
    missing, unexpected = _compare_keys(model, state_dict)
    if missing or unexpected:
        raise ValueError(
            f"{str(path)!r} is not the FID Inception weights file ({INCEPTION_WEIGHTS_FILENAME}): "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})."
        )
    model.load_state_dict(state_dict, strict=True)
    model.published_weights = _sha256(path).startswith(INCEPTION_WEIGHTS_SHA256_PREFIX)
    if not model.published_weights:
        logger.warning(
            "%s has the FID Inception layout but not the published file's checksum: FID values will not be "
            "comparable with published ones.", path
        )
    # channels_last: about 1.3x faster convolutions on CPU (same values up to float32 round-off)
    return model.to(dtype=dtype, memory_format=torch.channels_last).eval().requires_grad_(False)


def _compare_keys(model: nn.Module, state_dict: dict) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    # Old files have no BatchNorm `num_batches_tracked` counters; load_state_dict fills them in.
    optional = {key for key in expected if key.endswith("num_batches_tracked")}
    missing = sorted(expected - optional - set(state_dict))
    unexpected = sorted(set(state_dict) - expected)
    return missing, unexpected


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FIDInceptionFeatureExtractor(FeatureExtractor):
    """`FIDInceptionV3` as a `FeatureExtractor`: pool_3 features for FID/KID, unbiased logits for IS."""

    name = "inception"
    protocol = (
        "TTUR-compatible: TF Inception 2015-12-05 (pt_inception-2015-12-05-6726825d.pth), 2048-d pool_3 features "
        "of uint8 images, TF1 bilinear resize to 299, float64 statistics"
    )
    metric_names = {"fid": "fid", "kid": "kid", "is": "inception_score"}

    def __init__(self, network: FIDInceptionV3) -> None:
        super().__init__()
        self.network = network
        if not network.published_weights:
            self.protocol = UNVERIFIED_INCEPTION_PROTOCOL

    @classmethod
    def from_weights(cls, weights_path: str | None = None) -> FIDInceptionFeatureExtractor:
        return cls(load_fid_inception(weights_path))

    def forward(self, images: torch.Tensor) -> FeatureOutput:
        features, logits = self.network(images)
        return FeatureOutput(features=features, logits=logits)
