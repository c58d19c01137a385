"""transgan_hf.data: sources (mnist-5k, image folders, saved datasets), RGB conversion, preprocessing, deterministic
augmentation, and errors for unusable data."""

from __future__ import annotations

import io

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from transgan_hf.data import (
    INDEX_COLUMN,
    MNIST_5K,
    CorruptImageError,
    DatasetError,
    ImageTransform,
    collate_pixel_values,
    decode_image,
    find_image_column,
    load_image_dataset,
    prepare_training_dataset,
    preprocess_image,
    read_image,
)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    (folder / "a").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (12, 18, 3), dtype=np.uint8)).save(folder / "a" / f"{i}.png")
    return folder


# ---------------------------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK", "I;16", "1"])
def test_every_image_mode_becomes_rgb(mode):
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    image = rgb.convert("L").convert(mode) if mode in ("I;16", "1", "LA") else rgb.convert(mode)
    for stored in (image, {"bytes": png_bytes(image) if mode != "CMYK" else None, "path": None}):
        if mode == "CMYK" and isinstance(stored, dict):
            continue  # PNG cannot store CMYK
        decoded = decode_image(stored)
        assert decoded.mode == "RGB" and decoded.size == (8, 8)


def test_transparent_pixels_become_white_and_greyscale_is_replicated():
    rgba = Image.new("RGBA", (2, 1), (10, 20, 30, 255))
    rgba.putpixel((1, 0), (10, 20, 30, 0))
    assert np.asarray(decode_image(rgba)).tolist() == [[[10, 20, 30], [255, 255, 255]]]
    grey = np.asarray(decode_image(np.array([[0, 128]], dtype=np.uint8)))
    assert grey.tolist() == [[[0, 0, 0], [128, 128, 128]]]


def test_arrays_are_images_too():
    chw = np.zeros((3, 4, 5), dtype=np.uint8)
    assert decode_image(chw).size == (5, 4)
    assert np.asarray(decode_image(np.ones((4, 4), dtype=np.float32))).max() == 255  # [0, 1] floats are scaled
    with pytest.raises(ValueError, match="array"):
        decode_image(np.zeros((2, 2, 2, 2)))


def stored(image: Image.Image, fmt: str, name: str = "picture") -> dict:
    """An undecoded `datasets.Image` value: the image saved as `fmt`, with a file name for error messages."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return {"bytes": buffer.getvalue(), "path": f"{name}.{fmt.lower()}"}


GREY = np.array([[0, 64, 128, 200]], dtype=np.uint8)  # not up to 255: a rescale by the maximum would show
GREY_RGB = np.repeat(GREY[..., None], 3, axis=-1)


def lab_image() -> Image.Image:
    from PIL import ImageCms

    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    return ImageCms.applyTransform(Image.fromarray(GREY_RGB), to_lab)


@pytest.mark.parametrize(
    ("mode", "make", "fmt"),
    [
        ("F", lambda: Image.fromarray(GREY.astype(np.float32) / 255), "TIFF"),  # [0, 1] floats (was blank)
        ("F", lambda: Image.fromarray(GREY.astype(np.float32)), "TIFF"),  # [0, 255] floats
        ("I", lambda: Image.fromarray(GREY.astype(np.int32) * 257), "TIFF"),  # 16-bit range in a 32-bit image
        ("I", lambda: Image.fromarray(GREY.astype(np.uint16) * 257), "PPM"),  # a 16-bit PGM opens as "I"
        ("I;16", lambda: Image.fromarray(GREY.astype(np.uint16) * 257), "PNG"),
        ("I;16B", lambda: Image.fromarray((GREY.astype(np.uint16) * 257).astype(">u2")), "TIFF"),
        ("L", lambda: Image.fromarray(GREY), "PNG"),
        ("LA", lambda: Image.fromarray(GREY).convert("LA"), "PNG"),
        ("RGBA", lambda: Image.fromarray(GREY_RGB).convert("RGBA"), "PNG"),
        ("CMYK", lambda: Image.fromarray(GREY_RGB).convert("CMYK"), "TIFF"),
        ("YCbCr", lambda: Image.fromarray(GREY_RGB).convert("YCbCr"), None),
        ("HSV", lambda: Image.fromarray(GREY_RGB).convert("HSV"), None),
        ("LAB", lab_image, "TIFF"),  # CIELAB through a colour transform, not a reinterpretation of the bytes
    ],
)
def test_every_mode_decodes_to_the_picture_it_shows(mode, make, fmt):
    image = make()
    value = stored(image, fmt) if fmt else image
    assert (Image.open(io.BytesIO(value["bytes"])) if fmt else image).mode == mode
    decoded = np.asarray(decode_image(value), dtype=np.int16)
    assert decoded.shape == (1, 4, 3)
    assert np.abs(decoded - GREY_RGB).max() <= 1, decoded.tolist()


def test_bilevel_palette_and_transparency():
    bilevel = Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("1")
    assert np.asarray(decode_image(stored(bilevel, "PNG"))).tolist() == [[[0, 0, 0], [255, 255, 255]]]
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50])
    palette.putpixel((1, 0), 1)
    assert np.asarray(decode_image(stored(palette, "PNG"))).tolist() == [[[10, 20, 30], [200, 100, 50]]]
    palette.info["transparency"] = 0  # palette entry 0 is transparent: white, like other transparent pixels
    assert np.asarray(decode_image(stored(palette, "PNG"))).tolist() == [[[255, 255, 255], [200, 100, 50]]]


def test_exif_orientation_is_applied_as_datasets_does():
    array = np.zeros((2, 4, 3), dtype=np.uint8)
    array[:, 0] = 255  # white left column
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif)
    decoded = np.asarray(decode_image({"bytes": buffer.getvalue(), "path": None}))
    assert decoded.shape == (4, 2, 3)  # left column -> top row
    assert decoded[0].min() == 255 and decoded[1:].max() == 0


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (Image.fromarray(np.array([[-1.0, 1.0]], dtype=np.float32)), r"PIL mode 'F'\) has values from -1.0 to 1.0"),
        (Image.fromarray(np.array([[0.0, np.nan]], dtype=np.float32)), r"PIL mode 'F'\) contains NaN"),
        (Image.fromarray(np.array([[0, 70000]], dtype=np.int32)), r"PIL mode 'I'\) with values from 0 to 70000"),
    ],
)
def test_modes_without_a_defined_picture_are_refused_by_file_and_mode(image, match):
    with pytest.raises(CorruptImageError, match=r"'scan\.tiff' \(row 7\): .*" + match):
        read_image(stored(image, "TIFF", "scan"), 7)


def test_arrays_out_of_range_are_refused_not_clipped():
    assert np.asarray(decode_image(np.array([[0, 65535]], dtype=np.uint16)))[0, :, 0].tolist() == [0, 255]
    assert np.asarray(decode_image(np.array([[0, 200]], dtype=np.int64)))[0, :, 0].tolist() == [0, 200]
    with pytest.raises(ValueError, match="expected \\[0, 1\\] or \\[0, 255\\]"):
        decode_image(np.array([[-1.0, 1.0]]))  # [-1, 1] pixels: clipping would halve the picture
    with pytest.raises(ValueError, match="expected 0..255"):
        decode_image(np.array([[0, 1000]], dtype=np.int32))


def test_decoder_failures_of_any_type_name_the_file(monkeypatch):
    def broken_decoder(*args, **kwargs):
        raise IndexError("tile out of range")  # PIL plugins fail on damaged files with many exception types

    monkeypatch.setattr(Image, "open", broken_decoder)
    with pytest.raises(CorruptImageError, match=r"'scan\.png' \(row 2\): the file is damaged \(IndexError: tile"):
        read_image({"bytes": b"...", "path": "scan.png"}, 2)


@pytest.mark.parametrize("side", [12, 20])  # 144 pixels: PIL warns; 400 > 2 x limit: PIL raises
def test_decompression_bombs_are_refused_with_the_file_named(side, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(CorruptImageError, match=r"'bomb\.png' \(row 3\): Image size .* decompression bomb"):
        read_image(stored(Image.new("L", (side, side)), "PNG", "bomb"), 3)
    transform = ImageTransform("image", 8)
    with pytest.raises(CorruptImageError, match=r"bomb\.png.*--skip_corrupt_images"):
        transform({"image": [stored(Image.new("L", (side, side)), "PNG", "bomb")], INDEX_COLUMN: [0]})


# ---------------------------------------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------------------------------------


def test_preprocess_resizes_crops_and_normalises():
    image = Image.fromarray(np.full((20, 40, 3), 255, dtype=np.uint8))
    pixels = preprocess_image(image, 16, center_crop=True)
    assert pixels.shape == (3, 16, 16) and pixels.dtype == torch.float32
    assert torch.allclose(pixels, torch.ones_like(pixels))
    black = preprocess_image(Image.new("RGB", (16, 16)), 16)
    assert torch.equal(black, -torch.ones(3, 16, 16))


def test_center_crop_takes_the_middle():
    array = np.zeros((4, 12, 3), dtype=np.uint8)
    array[:, 4:8] = 255  # a white vertical band in the middle third
    pixels = preprocess_image(Image.fromarray(array), 4, center_crop=True)
    assert torch.equal(pixels, torch.ones(3, 4, 4))


def test_random_crop_and_flip_depend_only_on_seed_epoch_and_row():
    array = np.arange(8 * 24 * 3, dtype=np.uint8).reshape(8, 24, 3)
    stored = {"bytes": png_bytes(Image.fromarray(array)), "path": None}
    transform = ImageTransform("image", 8, center_crop=False, random_flip=True, seed=3)

    def crops(epoch: int) -> list[torch.Tensor]:
        transform.set_epoch(epoch)
        batch = transform({"image": [stored] * 8, INDEX_COLUMN: list(range(8))})
        return batch["pixel_values"]

    first = crops(0)
    assert all(torch.equal(a, b) for a, b in zip(first, crops(0)))  # repeatable
    assert len({tuple(p.flatten().tolist()) for p in first}) > 1  # rows differ
    assert any(not torch.equal(a, b) for a, b in zip(first, crops(1)))  # epochs differ
    single = transform({"image": [stored], INDEX_COLUMN: [5]})["pixel_values"][0]
    transform.set_epoch(0)
    assert torch.equal(transform({"image": [stored], INDEX_COLUMN: [5]})["pixel_values"][0], first[5])
    assert single.shape == (3, 8, 8)


def test_random_flip_flips_about_half_the_rows():
    array = np.zeros((4, 4, 3), dtype=np.uint8)
    array[:, :2] = 255
    stored = {"bytes": png_bytes(Image.fromarray(array)), "path": None}
    transform = ImageTransform("image", 4, center_crop=True, random_flip=True, seed=0)
    pixels = transform({"image": [stored] * 200, INDEX_COLUMN: list(range(200))})["pixel_values"]
    flipped = sum(bool(p[0, 0, 0] < 0) for p in pixels)
    assert 70 < flipped < 130


# ---------------------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------------------


def test_mnist_5k_is_the_embedded_default():
    dataset = load_image_dataset(MNIST_5K)
    assert len(dataset) == 5000
    assert np.bincount(dataset["label"]).tolist() == [500] * 10
    prepared, _, skipped = prepare_training_dataset(dataset, 32, center_crop=True)
    pixels = prepared[0]["pixel_values"]
    assert pixels.shape == (3, 32, 32) and skipped == 0
    assert pixels.min() == -1 and pixels.max() == 1
    assert torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[1], pixels[2])  # greyscale -> RGB


def test_image_folder_and_saved_dataset(image_folder, tmp_path):
    dataset = load_image_dataset(train_data_dir=image_folder, cache_dir=tmp_path / "cache")
    prepared, _, _ = prepare_training_dataset(dataset, 12, center_crop=True)
    batch = collate_pixel_values([prepared[i] for i in range(4)])
    assert batch.shape == (4, 3, 12, 12)

    saved = tmp_path / "saved"
    features = datasets.Features({"picture": datasets.Image(), "label": datasets.Value("int64")})
    images = [Image.new("L", (5, 5), color=i * 40) for i in range(3)]
    datasets.Dataset.from_dict({"picture": images, "label": [0, 1, 2]}, features=features).save_to_disk(saved)
    loaded = load_image_dataset(str(saved))
    assert find_image_column(loaded) == "picture"
    prepared, _, _ = prepare_training_dataset(loaded, 4)
    assert prepared[2]["pixel_values"].shape == (3, 4, 4)


def test_corrupt_images_are_named_or_skipped_and_counted(image_folder, tmp_path):
    (image_folder / "a" / "broken.png").write_bytes(b"this is not a png")
    dataset = load_image_dataset(train_data_dir=image_folder, cache_dir=tmp_path / "cache")
    prepared, _, _ = prepare_training_dataset(dataset, 8)
    with pytest.raises(CorruptImageError, match=r"broken\.png.*--skip_corrupt_images"):
        [prepared[i] for i in range(len(prepared))]
    prepared, _, skipped = prepare_training_dataset(dataset, 8, skip_corrupt_images=True)
    assert (skipped, len(prepared)) == (1, 6)
    assert all(prepared[i]["pixel_values"].shape == (3, 8, 8) for i in range(6))


def test_unusable_datasets_fail_clearly(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    (empty / ".hidden.png").write_bytes(png_bytes(Image.new("L", (2, 2))))  # datasets skips hidden files
    with pytest.raises(DatasetError, match=r"No images found in --train_data_dir '.*empty'.* \.jpeg .* \.png .*"):
        load_image_dataset(train_data_dir=empty, cache_dir=tmp_path / "cache")
    with pytest.raises(DatasetError, match="is not a folder"):
        load_image_dataset(train_data_dir=tmp_path / "missing")
    with pytest.raises(DatasetError, match="exactly one"):
        load_image_dataset()
    no_images = datasets.Dataset.from_dict({"text": ["a", "b"]})
    with pytest.raises(DatasetError, match="--image_column"):
        find_image_column(no_images)
    with pytest.raises(DatasetError, match="'photo' is not a column"):
        find_image_column(no_images, "photo")
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"image": [Image.new("RGB", (2, 2))]}).save_to_disk(saved)
    no_rows = datasets.Dataset.from_dict({"image": []}, features=datasets.Features({"image": datasets.Image()}))
    monkeypatch.setattr(datasets, "load_from_disk", lambda path: no_rows)  # (saving 0 rows crashes datasets 5.2)
    with pytest.raises(DatasetError, match="has no rows"):
        load_image_dataset(str(saved))
    all_broken = datasets.Dataset.from_dict({"image": [{"bytes": b"junk", "path": "x.png"}]},
                                            features=datasets.Features({"image": datasets.Image()}))
    with pytest.raises(CorruptImageError, match="x.png"):
        prepare_training_dataset(all_broken, 8)
    with pytest.raises(DatasetError, match="None of the 1 images"):
        prepare_training_dataset(all_broken, 8, skip_corrupt_images=True)
