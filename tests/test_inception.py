"""The FID Inception network: layout of the published weights file, loading rules, TF-compatible resize.

The real weights (pt_inception-2015-12-05-6726825d.pth) cannot be used here, so the network is checked against the
file's published key names and shapes (the module tree of pytorch-fid's `fid_inception_v3`: torchvision's
Inception3 without the auxiliary head, 1008 classes, FID variants of the A/C/E blocks), and loads a file of random
tensors with exactly those keys.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transgan_hf.metrics import (
    INCEPTION_WEIGHTS_ENV,
    INCEPTION_WEIGHTS_FILENAME,
    INCEPTION_WEIGHTS_URL,
    FIDInceptionV3,
    InceptionWeightsNotFoundError,
    load_fid_inception,
    resolve_inception_weights,
    tf1_bilinear_resize,
)

# (conv name, out channels, in channels, kernel h, kernel w) of every convolution in the weights file.
STEM = [
    ("Conv2d_1a_3x3", 32, 3, 3, 3),
    ("Conv2d_2a_3x3", 32, 32, 3, 3),
    ("Conv2d_2b_3x3", 64, 32, 3, 3),
    ("Conv2d_3b_1x1", 80, 64, 1, 1),
    ("Conv2d_4a_3x3", 192, 80, 3, 3),
]


def block_a(name, cin, pool):
    return [(f"{name}.branch1x1", 64, cin, 1, 1), (f"{name}.branch5x5_1", 48, cin, 1, 1),
            (f"{name}.branch5x5_2", 64, 48, 5, 5), (f"{name}.branch3x3dbl_1", 64, cin, 1, 1),
            (f"{name}.branch3x3dbl_2", 96, 64, 3, 3), (f"{name}.branch3x3dbl_3", 96, 96, 3, 3),
            (f"{name}.branch_pool", pool, cin, 1, 1)]


def block_b(name, cin):
    return [(f"{name}.branch3x3", 384, cin, 3, 3), (f"{name}.branch3x3dbl_1", 64, cin, 1, 1),
            (f"{name}.branch3x3dbl_2", 96, 64, 3, 3), (f"{name}.branch3x3dbl_3", 96, 96, 3, 3)]


def block_c(name, c7):
    return [(f"{name}.branch1x1", 192, 768, 1, 1), (f"{name}.branch7x7_1", c7, 768, 1, 1),
            (f"{name}.branch7x7_2", c7, c7, 1, 7), (f"{name}.branch7x7_3", 192, c7, 7, 1),
            (f"{name}.branch7x7dbl_1", c7, 768, 1, 1), (f"{name}.branch7x7dbl_2", c7, c7, 7, 1),
            (f"{name}.branch7x7dbl_3", c7, c7, 1, 7), (f"{name}.branch7x7dbl_4", c7, c7, 7, 1),
            (f"{name}.branch7x7dbl_5", 192, c7, 1, 7), (f"{name}.branch_pool", 192, 768, 1, 1)]


def block_d(name):
    return [(f"{name}.branch3x3_1", 192, 768, 1, 1), (f"{name}.branch3x3_2", 320, 192, 3, 3),
            (f"{name}.branch7x7x3_1", 192, 768, 1, 1), (f"{name}.branch7x7x3_2", 192, 192, 1, 7),
            (f"{name}.branch7x7x3_3", 192, 192, 7, 1), (f"{name}.branch7x7x3_4", 192, 192, 3, 3)]


def block_e(name, cin):
    return [(f"{name}.branch1x1", 320, cin, 1, 1), (f"{name}.branch3x3_1", 384, cin, 1, 1),
            (f"{name}.branch3x3_2a", 384, 384, 1, 3), (f"{name}.branch3x3_2b", 384, 384, 3, 1),
            (f"{name}.branch3x3dbl_1", 448, cin, 1, 1), (f"{name}.branch3x3dbl_2", 384, 448, 3, 3),
            (f"{name}.branch3x3dbl_3a", 384, 384, 1, 3), (f"{name}.branch3x3dbl_3b", 384, 384, 3, 1),
            (f"{name}.branch_pool", 192, cin, 1, 1)]


CONVOLUTIONS = (
    STEM
    + block_a("Mixed_5b", 192, 32) + block_a("Mixed_5c", 256, 64) + block_a("Mixed_5d", 288, 64)
    + block_b("Mixed_6a", 288)
    + block_c("Mixed_6b", 128) + block_c("Mixed_6c", 160) + block_c("Mixed_6d", 160) + block_c("Mixed_6e", 192)
    + block_d("Mixed_7a")
    + block_e("Mixed_7b", 1280) + block_e("Mixed_7c", 2048)
)


def published_weight_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of pt_inception-2015-12-05-6726825d.pth (BatchNorm counters excluded: old files lack them)."""
    shapes = {}
    for name, out_channels, in_channels, kernel_h, kernel_w in CONVOLUTIONS:
        shapes[f"{name}.conv.weight"] = (out_channels, in_channels, kernel_h, kernel_w)
        for parameter in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{parameter}"] = (out_channels,)
    shapes["fc.weight"] = (1008, 2048)
    shapes["fc.bias"] = (1008,)
    return shapes


def random_weights(with_counters: bool = False) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    state_dict = {}
    for key, shape in published_weight_shapes().items():
        if key.endswith("running_var"):
            state_dict[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            state_dict[key] = torch.randn(shape, generator=generator) / fan_in**0.5
        if with_counters and key.endswith("bn.running_var"):
            state_dict[key.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
    return state_dict


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / INCEPTION_WEIGHTS_FILENAME
    torch.save(random_weights(), path)
    return path


def test_network_matches_the_published_weights_layout():
    model_shapes = {k: tuple(v.shape) for k, v in FIDInceptionV3().state_dict().items()
                    if not k.endswith("num_batches_tracked")}
    assert len(CONVOLUTIONS) == 94
    assert model_shapes == published_weight_shapes()
    # torchvision's inception_v3 without aux head has 23,834,568 parameters for 1000 classes; 1008 adds 8 * 2049.
    assert sum(p.numel() for p in FIDInceptionV3().parameters()) == 23_834_568 + 8 * 2049


@pytest.mark.parametrize("with_counters", [False, True])
def test_loads_a_weights_file_with_exactly_the_published_keys(tmp_path, with_counters, caplog):
    path = tmp_path / "weights.pth"
    state_dict = random_weights(with_counters)
    torch.save(state_dict, path)
    with caplog.at_level(logging.WARNING):
        model = load_fid_inception(path)
    assert "checksum" in caplog.text  # random tensors are not the published file
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    torch.testing.assert_close(model.fc.weight, state_dict["fc.weight"])
    key = "Mixed_7c.branch_pool.bn.running_var"
    torch.testing.assert_close(model.Mixed_7c.branch_pool.bn.running_var, state_dict[key])


def test_rejects_files_with_other_keys(tmp_path):
    state_dict = random_weights()
    del state_dict["Mixed_6e.branch7x7dbl_5.conv.weight"]
    state_dict["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    path = tmp_path / "torchvision_like.pth"
    torch.save(state_dict, path)
    with pytest.raises(ValueError, match="1 missing keys.*1 unexpected"):
        load_fid_inception(path)


def test_forward_returns_pool_features_and_unbiased_logits(weights_file):
    model = load_fid_inception(weights_file)
    images = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    with torch.no_grad():
        features, logits = model(images)
        single, _ = model(images[:1])
    assert features.shape == (2, 2048) and logits.shape == (2, 1008)
    assert torch.isfinite(features).all() and (features >= 0).all()  # average of ReLU outputs
    torch.testing.assert_close(logits, features @ model.fc.weight.T)  # IS uses the logits without the bias
    torch.testing.assert_close(single, features[:1], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        model(images.float())


def test_missing_weights_give_one_message_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(InceptionWeightsNotFoundError) as error:
        resolve_inception_weights()
    message = str(error.value)
    for part in (INCEPTION_WEIGHTS_FILENAME, INCEPTION_WEIGHTS_URL, "--inception_weights", INCEPTION_WEIGHTS_ENV,
                 str(tmp_path / "torch" / "hub" / "checkpoints")):
        assert part in message
    assert isinstance(error.value, OSError)
    with pytest.raises(InceptionWeightsNotFoundError, match="--inception_weights points to"):
        resolve_inception_weights(tmp_path / "nope.pth")
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(InceptionWeightsNotFoundError, match=f"\\${INCEPTION_WEIGHTS_ENV} points to"):
        resolve_inception_weights()


def test_weights_are_found_by_argument_environment_and_hub_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILENAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert resolve_inception_weights() == cached
    explicit = tmp_path / "elsewhere.pth"
    explicit.write_bytes(b"x")
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(explicit))
    assert resolve_inception_weights() == explicit
    assert resolve_inception_weights(cached) == cached


def naive_tf1_resize(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TensorFlow 1.x resize_bilinear (align_corners=False), one pixel at a time."""
    in_h, in_w = image.shape
    out = np.zeros((out_h, out_w), dtype=np.float64)
    scale_y, scale_x = np.float32(in_h / out_h), np.float32(in_w / out_w)
    for y in range(out_h):
        source_y = float(np.float32(y) * scale_y)
        y0 = int(np.floor(source_y))
        y1, dy = min(y0 + 1, in_h - 1), source_y - y0
        for x in range(out_w):
            source_x = float(np.float32(x) * scale_x)
            x0 = int(np.floor(source_x))
            x1, dx = min(x0 + 1, in_w - 1), source_x - x0
            top = image[y0, x0] + (image[y0, x1] - image[y0, x0]) * dx
            bottom = image[y1, x0] + (image[y1, x1] - image[y1, x0]) * dx
            out[y, x] = top + (bottom - top) * dy
    return out


@pytest.mark.parametrize("in_size,out_size", [((5, 7), (11, 13)), ((32, 32), (299, 299)), ((9, 9), (4, 6))])
def test_tf1_bilinear_resize_matches_tensorflow_semantics(in_size, out_size):
    image = np.random.default_rng(2).uniform(0, 255, in_size)
    resized = tf1_bilinear_resize(torch.from_numpy(image).view(1, 1, *in_size), out_size)
    np.testing.assert_allclose(resized[0, 0].numpy(), naive_tf1_resize(image, *out_size), rtol=0, atol=1e-9)


def test_tf1_bilinear_resize_differs_from_half_pixel_interpolation():
    image = torch.arange(4.0).view(1, 1, 2, 2)
    resized = tf1_bilinear_resize(image, (4, 4))
    # TF 1.x: output pixel i reads input i / 2; the last row/column repeats the edge.
    assert resized[0, 0, 0].tolist() == [0.0, 0.5, 1.0, 1.0]
    assert not torch.allclose(resized, F.interpolate(image, size=(4, 4), mode="bilinear", align_corners=False))
    assert tf1_bilinear_resize(image, (2, 2)) is image
