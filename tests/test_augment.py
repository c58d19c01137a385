"""DiffAugment: per-policy statistics, exactness of the geometric ops, differentiability, seeding."""

from __future__ import annotations

import math
import time

import pytest
import torch

from transgan_hf.training.augment import (
    AUGMENT_POLICIES,
    FILTER_EXPECTED_POWER,
    SYM2_LOWPASS,
    DiffAugment,
    _check_generator,
    augment_color,
    augment_cutout,
    augment_erase_ratio,
    augment_filter,
    augment_hue,
    augment_stl_erase_ratio,
    augment_translation,
    build_filter_bank,
    diff_augment,
    filter_images,
    overfitting_warning,
    parse_policy,
    rotate_hue,
    translate,
    translation_shift,
)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def binomial_bounds(trials: int, probability: float, sigmas: float = 4.0) -> tuple[float, float]:
    mean, std = trials * probability, math.sqrt(trials * probability * (1 - probability))
    return mean - sigmas * std, mean + sigmas * std


# --- policy parsing ---------------------------------------------------------------------------------------------------


def test_parse_policy():
    assert parse_policy("translation,cutout,color") == ("translation", "cutout", "color")
    assert parse_policy(" filter , hue ") == ("filter", "hue")
    assert parse_policy(["color", "translation"]) == ("color", "translation")
    assert parse_policy(None) == parse_policy("") == parse_policy("none") == ()
    expected = {"color", "translation", "cutout", "erase_ratio", "stl_erase_ratio", "hue", "filter"}
    assert set(AUGMENT_POLICIES) == expected


def test_unknown_policy_lists_valid_names():
    with pytest.raises(ValueError, match="'rotate'.*translation.*stl_erase_ratio"):
        parse_policy("translation,rotate")
    with pytest.raises(ValueError, match="'none'"):
        diff_augment(torch.zeros(1, 3, 8, 8), "none,color")


def test_empty_policy_is_identity_and_bad_shape_is_rejected():
    images = torch.randn(2, 3, 8, 8)
    assert diff_augment(images, None) is images
    with pytest.raises(ValueError, match="batch, channels, height, width"):
        diff_augment(images[0], "color")


def test_generator_on_another_device_is_rejected():
    with pytest.raises(ValueError, match="torch.Generator\\(device=images.device\\)"):
        _check_generator(torch.Generator(), torch.device("cuda", 0))


# --- translation ------------------------------------------------------------------------------------------------------


def shifted_with_zeros(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference: roll, then blank what wrapped around."""
    out = image.roll((dy, dx), dims=(-2, -1)).clone()
    if dy > 0:
        out[..., :dy, :] = 0
    elif dy < 0:
        out[..., dy:, :] = 0
    if dx > 0:
        out[..., :, :dx] = 0
    elif dx < 0:
        out[..., :, dx:] = 0
    return out


@pytest.mark.parametrize("size", [32, 48])
def test_translation_range_coverage_and_content(size):
    max_shift = translation_shift(size)
    assert max_shift == {32: 6, 48: 10}[size]  # int(0.2 * H + 0.5), ratio 0.2 as in the official code
    batch = 600
    # Pixel values encode their position (all positive, so zero fill is unambiguous).
    codes = torch.arange(1, size * size + 1, dtype=torch.float64).view(1, 1, size, size)
    images = codes.expand(batch, 2, size, size).contiguous()
    out = augment_translation(images, seeded(1))
    centre = out[:, 0, size // 2, size // 2].long() - 1  # the centre pixel is always inside after a shift <= H/2
    dy = size // 2 - centre // size
    dx = size // 2 - centre % size
    for shifts in (dy, dx):
        assert shifts.min() == -max_shift and shifts.max() == max_shift
        assert torch.unique(shifts).numel() == 2 * max_shift + 1  # every shift in [-s, s] occurs
    assert (dy != dx).any()  # independent per axis
    for i in range(0, batch, 37):
        torch.testing.assert_close(out[i], shifted_with_zeros(images[i], int(dy[i]), int(dx[i])), rtol=0, atol=0)


def test_translate_matches_reference_for_given_shifts():
    images = torch.randn(4, 3, 10, 12)
    shift_y, shift_x = torch.tensor([0, 3, -2, -3]), torch.tensor([1, -3, 0, 3])
    out = translate(images, shift_y, shift_x, max_shift=3)
    for i in range(4):
        torch.testing.assert_close(out[i], shifted_with_zeros(images[i], int(shift_y[i]), int(shift_x[i])))


# --- cutout / erase ---------------------------------------------------------------------------------------------------


def erased_boxes(out: torch.Tensor) -> torch.Tensor:
    """`(B, 4)` top, left, height, width of the zeroed region of each all-ones image (height 0: nothing erased),
    asserting that the region is one rectangle."""
    erased = out[:, 0] == 0
    rows, cols = erased.any(dim=2), erased.any(dim=1)
    heights, widths = rows.sum(dim=1), cols.sum(dim=1)
    assert torch.equal(erased.sum(dim=(1, 2)), heights * widths), "the erased region must be one rectangle"
    for lines in (rows, cols):  # one contiguous run of erased rows (columns): at most one False -> True step
        starts = lines[:, 0].int() + (lines[:, 1:] & ~lines[:, :-1]).sum(dim=1)
        assert (starts <= 1).all(), "the erased region must be one rectangle"
    tops, lefts = rows.int().argmax(dim=1), cols.int().argmax(dim=1)
    return torch.stack([tops, lefts, heights, widths], dim=1)


def run_batches(augment, size: int, num_batches: int, batch: int = 4, seed: int = 0) -> torch.Tensor:
    """`(num_batches, batch, 4)` erased boxes of `num_batches` seeded calls."""
    generator = seeded(seed)
    ones = torch.ones(batch, 1, size, size)  # one channel: small enough to stay single-threaded
    return torch.stack([erased_boxes(augment(ones, generator)) for _ in range(num_batches)])


def test_cutout_probability_per_batch_and_square_size():
    size, num_batches = 32, 400
    boxes = run_batches(augment_cutout, size, num_batches)
    hit = boxes[..., 2] > 0
    assert torch.equal(hit.all(dim=1), hit.any(dim=1))  # the whole batch is cut, or none of it
    low, high = binomial_bounds(num_batches, 0.3)
    assert low < int(hit[:, 0].sum()) < high
    side = int(0.5 * size + 0.5)
    heights, widths = boxes[hit][:, 2], boxes[hit][:, 3]
    assert heights.min() == side // 2 and heights.max() == side  # clipped at the border by at most half
    assert widths.min() == side // 2 and widths.max() == side
    assert ((heights == side) & (widths == side)).any()


@pytest.mark.parametrize(
    ("augment", "size", "low", "high"),
    [(augment_erase_ratio, 32, 6, 22), (augment_stl_erase_ratio, 48, 20, 44)],  # [int(.2H), int(.7H)), [20, H/2+20)
)
def test_erase_probability_and_sides(augment, size, low, high):
    num_batches = 300
    boxes = run_batches(augment, size, num_batches, batch=6, seed=3)
    hit = boxes[..., 2] > 0
    assert torch.equal(hit.all(dim=1), hit.any(dim=1))
    lower, upper = binomial_bounds(num_batches, 0.3)
    assert lower < int(hit[:, 0].sum()) < upper
    boxes = boxes[hit[:, 0]]  # (applied batches, batch, 4)
    top, left, height, width = boxes.unbind(dim=2)
    assert (height < high).all() and (width < high).all()
    inside = (top > 0) & (top + height < size) & (left > 0) & (left + width < size)  # not clipped: the drawn sides
    sides_seen = []
    for batch_boxes, batch_inside in zip(boxes, inside):
        unclipped = batch_boxes[batch_inside][:, 2:]
        if len(unclipped):
            assert (unclipped == unclipped[0]).all()  # one rectangle size per batch
            assert (unclipped >= low).all()
            sides_seen.extend(unclipped[0].tolist())
    assert min(sides_seen) <= low + 3 and max(sides_seen) >= high - 4  # the range is covered


# --- colour -----------------------------------------------------------------------------------------------------------


def test_color_factor_ranges():
    batch, size = 2000, 4
    spatial = torch.randn(size, size)
    spatial -= spatial.mean()  # zero image mean: brightness alone sets the output mean
    channel = torch.tensor([0.3, -0.1, -0.2])  # zero channel mean: only saturation and contrast scale it
    images = (spatial + channel[:, None, None]).expand(batch, 3, size, size).double()
    out = augment_color(images, seeded(2))
    brightness = out.mean(dim=(1, 2, 3))
    grey = out.mean(dim=1) - brightness[:, None, None]  # contrast * spatial
    contrast = (grey * spatial).sum(dim=(1, 2)) / spatial.square().sum()
    colour = out - out.mean(dim=1, keepdim=True)  # contrast * saturation * channel
    saturation = (colour[:, :, 0, 0] @ channel.double()) / channel.square().sum() / contrast
    for values, low, high in ((brightness, -0.5, 0.5), (saturation, 0.0, 2.0), (contrast, 0.5, 1.5)):
        assert values.min() >= low - 1e-9 and values.max() <= high + 1e-9
        assert values.min() < low + 0.01 and values.max() > high - 0.01  # uniform over the whole range
        assert abs(values.mean() - (low + high) / 2) < 0.05 * (high - low)


# --- hue --------------------------------------------------------------------------------------------------------------


def test_hue_is_a_luma_preserving_rotation():
    images = torch.rand(1000, 3, 2, 2, dtype=torch.float64) * 2 - 1
    out = augment_hue(images, seeded(4))
    torch.testing.assert_close(out.mean(dim=1), images.mean(dim=1))  # luma (channel mean) kept
    torch.testing.assert_close(out.norm(dim=1), images.norm(dim=1))  # lengths kept: a rotation
    unchanged = int(torch.isclose(out, images, atol=1e-12, rtol=0).flatten(1).all(dim=1).sum())
    low, high = binomial_bounds(1000, 0.5)
    assert low < unchanged < high


def test_hue_rotation_matrix_and_angle_range():
    basis = torch.eye(3, dtype=torch.float64).view(3, 3, 1, 1)  # red, green, blue images
    third_turn = rotate_hue(basis, torch.full((3,), 2 * math.pi / 3, dtype=torch.float64))
    torch.testing.assert_close(third_turn, basis.roll(1, dims=1))  # 120° about (1,1,1): red -> green -> blue
    angle = torch.tensor([0.7], dtype=torch.float64)
    matrix = rotate_hue(basis, angle.expand(3))[:, :, 0, 0].T  # column j = image of basis vector j
    torch.testing.assert_close(matrix @ matrix.T, torch.eye(3, dtype=torch.float64))
    assert torch.det(matrix).item() == pytest.approx(1.0)
    # Angles drawn by the augmentation span (-π, π): measure them on a pixel orthogonal to the luma axis.
    pixel = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64) / math.sqrt(2)
    out = augment_hue(pixel.view(1, 3, 1, 1).expand(4000, 3, 1, 1), seeded(5))[:, :, 0, 0]
    axis = torch.ones(3, dtype=torch.float64) / math.sqrt(3)
    angles = torch.atan2(torch.linalg.cross(pixel.expand_as(out), out) @ axis, out @ pixel)
    rotated = angles.abs() > 1e-9
    assert angles[rotated].min() < -3.0 and angles[rotated].max() > 3.0
    assert abs(angles[rotated].mean()) < 0.15


def test_hue_needs_rgb():
    with pytest.raises(ValueError, match="RGB"):
        augment_hue(torch.zeros(1, 1, 4, 4))


# --- filter -----------------------------------------------------------------------------------------------------------


def test_sym2_coefficients_are_the_published_ones():
    root3, norm = math.sqrt(3), 4 * math.sqrt(2)
    expected = ((1 + root3) / norm, (3 + root3) / norm, (3 - root3) / norm, (1 - root3) / norm)
    assert SYM2_LOWPASS == pytest.approx(expected, abs=1e-15)
    h = torch.tensor(SYM2_LOWPASS, dtype=torch.float64)
    assert h.sum().item() == pytest.approx(math.sqrt(2)) and h.square().sum().item() == pytest.approx(1.0)


def test_filter_bank_splits_the_spectrum_into_four_bands():
    bank = build_filter_bank(torch.float64)
    assert bank.shape == (4, 43)
    identity = torch.zeros(43, dtype=torch.float64)
    identity[21] = 1
    torch.testing.assert_close(bank.sum(dim=0), identity)  # unit gains change nothing
    torch.testing.assert_close(bank, bank.flip(1))  # zero phase
    taps = torch.arange(43, dtype=torch.float64) - 21

    def response(frequency: float) -> torch.Tensor:
        return (bank * torch.cos(frequency * taps)).sum(dim=1)

    torch.testing.assert_close(response(0.0), torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(response(math.pi), torch.tensor([0.0, 0, 0, 1], dtype=torch.float64))
    for band, crossover in enumerate((math.pi / 8, math.pi / 4, math.pi / 2)):  # neighbours meet at the band edges
        values = response(crossover)
        assert values[band].item() == pytest.approx(values[band + 1].item(), abs=1e-6) and values[band].item() > 0.45
    assert response(math.pi / 16).argmax() == 0 and response(3 * math.pi / 16).argmax() == 1
    assert response(3 * math.pi / 8).argmax() == 2 and response(3 * math.pi / 4).argmax() == 3


@pytest.mark.parametrize("size", [32, 16])  # 16 < 21 taps of padding: reflection is repeated
def test_filter_with_unit_gains_is_identity(size):
    images = torch.randn(3, 3, size, size, dtype=torch.float64)
    unit = build_filter_bank(torch.float64).sum(dim=0).expand(3, -1)
    torch.testing.assert_close(filter_images(images, unit), images)


def test_filter_augmentation_statistics():
    batch = 800
    images = torch.randn(batch, 1, 16, 16)
    out = augment_filter(images, seeded(6))
    assert out.shape == images.shape
    unchanged = int(torch.isclose(out, images, atol=1e-5).flatten(1).all(dim=1).sum())
    low, high = binomial_bounds(batch, 0.75**4)  # no band touched with probability (1 - 0.25)^4
    assert low < unchanged < high
    # Mean (DC) gain per sample is the squared low-band gain; it stays close to 1 on average.
    smooth = torch.full((batch, 1, 16, 16), 0.5)
    dc_gain = augment_filter(smooth, seeded(6)).mean(dim=(1, 2, 3)) / 0.5
    assert 0.8 < dc_gain.mean() < 1.2 and dc_gain.min() > 0
    assert FILTER_EXPECTED_POWER == pytest.approx((10 / 13, 1 / 13, 1 / 13, 1 / 13))


# --- whole pipeline ---------------------------------------------------------------------------------------------------

ALL = ",".join(AUGMENT_POLICIES)


def test_gradients_flow_and_double_backward():
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    out = diff_augment(images, "filter,translation,erase_ratio,color,hue,cutout", seeded(7))
    (grad,) = torch.autograd.grad(out.square().sum(), images, create_graph=True)
    assert grad.abs().sum() > 0
    grad.norm().backward()  # second order, as the gradient penalty needs
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_same_seed_same_output_different_seed_different():
    images = torch.randn(8, 3, 32, 32)
    first = diff_augment(images, ALL, seeded(11))
    torch.testing.assert_close(diff_augment(images, ALL, seeded(11)), first, rtol=0, atol=0)
    assert not torch.equal(diff_augment(images, ALL, seeded(12)), first)


def test_module_matches_function_and_keeps_dtype():
    module = DiffAugment(ALL)
    assert module.policy == AUGMENT_POLICIES and module.state_dict() == {}  # filter constants are not saved
    images = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(module(images, seeded(3)), diff_augment(images, ALL, seeded(3)))
    assert module(images.bfloat16(), seeded(3)).dtype == torch.bfloat16
    assert "translation" in repr(DiffAugment("translation"))


def test_augment_timing():
    """Times one CIFAR-sized batch (reported with -s; no assertion on time)."""
    images = torch.randn(64, 3, 32, 32)
    generator = seeded(0)
    for policy in ("translation,cutout,color", "filter,translation,erase_ratio,color,hue"):
        diff_augment(images, policy, generator)  # warm-up
        start = time.perf_counter()
        for _ in range(3):
            out = diff_augment(images, policy, generator)
        elapsed = (time.perf_counter() - start) / 3
        print(f"diff_augment {policy}: {elapsed * 1e3:.1f} ms per (64, 3, 32, 32) batch")
        assert out.shape == images.shape


def test_no_host_reads_runs_on_the_meta_device():
    """Meta tensors have no data: any `.item()`, `bool(tensor)` or `.tolist()` on the hot path would raise here."""
    images = torch.empty(4, 3, 32, 32, device="meta", requires_grad=True)
    out = DiffAugment(ALL).to("meta")(images)
    assert out.device.type == "meta" and out.shape == images.shape
    assert diff_augment(images, ALL).device.type == "meta"


def test_a_long_run_without_augmentation_is_warned_about_overfitting_and_the_default_run_is_not():
    from transgan_hf.training.args import parse_args, real_images_per_step

    def warning(*flags: str) -> str | None:
        args = parse_args(list(flags))
        seen = args.max_train_steps * real_images_per_step(args)
        return overfitting_warning(args.diffaug_policy, seen, num_images=5000)  # MNIST-5k, the tiny preset's data

    assert warning() is None  # the default main job: 4,000 steps, ~26 passes, no DiffAugment
    message = warning("--max_train_steps", "30000")
    assert message is not None and "192 times" in message and "--diffaug_policy translation" in message
    assert warning("--max_train_steps", "30000", "--diffaug_policy", "translation") is None
    assert overfitting_warning("none", images_seen=10**6, num_images=10**6) is None  # one pass over a large set
