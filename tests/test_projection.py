"""Projection (`TransGANPipeline.project`, `transgan_hf.projection`, `transgan project`): a generator's own image is
recovered far better than the start, the latents give the reconstructions back through the ordinary sampling call,
images of every kind are read as training reads them, outputs follow `output_type`, and bad inputs are refused in one
line. Quality on the demo model: benchmarks/projection_quality.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SUBPROCESS_ENV, seeds, tiny_pipeline
from PIL import Image

from transgan_hf import TransGANGenerator, TransGANGeneratorConfig, TransGANPipeline, projection
from transgan_hf.cli import main
from transgan_hf.data import preprocess_image
from transgan_hf.projection import (
    POOL_SIZE,
    distance,
    multiscale_error,
    multiscale_error_matrix,
    nearest_starts,
    onto_sphere,
    target_pixels,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def pipe() -> TransGANPipeline:
    pipeline = tiny_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def made(pipe) -> tuple[torch.Tensor, torch.Tensor]:
    """Three images the tiny generator made (latents of seed 5, the noise `noise_seed=0` holds) and their latents."""
    latents = torch.randn(3, 16, generator=torch.Generator().manual_seed(5))
    return pipe(latents=latents, generator=seeds(0, 0, 0), output_type="pt").images, latents


def psnr(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -10 * (images - targets).square().flatten(1).mean(1).log10()


def noise_of(seed: int, count: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for _ in range(count)]


# ---------------------------------------------------------------------------------------------------------------------
# The optimisation
# ---------------------------------------------------------------------------------------------------------------------


def test_a_generated_image_is_recovered_far_better_than_the_start(pipe, made):
    targets, _ = made
    out = pipe.project(targets, num_steps=40, generator=torch.Generator().manual_seed(0), output_type="pt",
                       record_every=40)
    start = pipe(latents=out.trajectory[0], generator=noise_of(0, 3), output_type="pt").images
    gain = psnr(out.images, targets) - psnr(start, targets)
    assert (gain > 5).all(), gain
    one_step = pipe.project(targets, num_steps=1, generator=torch.Generator().manual_seed(0))
    assert (out.distances < 0.5 * one_step.distances).all()


def test_the_latents_give_the_reconstructions_back_with_the_noise_seed(pipe, made):
    targets, _ = made
    out = pipe.project(targets[:2], num_steps=5, noise_seed=3, output_type="pt")
    again = pipe(latents=out.latents, generator=noise_of(3, 2), output_type="pt").images
    assert torch.equal(again, out.images)
    other_noise = pipe(latents=out.latents, generator=noise_of(0, 2), output_type="pt").images
    assert (other_noise - out.images).abs().max() > 0.05  # the tiny generator injects noise: the seed matters


def test_seeded_projections_repeat_and_the_seed_draws_the_starts(pipe, made):
    targets, _ = made
    first = pipe.project(targets[:1], num_steps=3, generator=torch.Generator().manual_seed(1), output_type="pt")
    again = pipe.project(targets[:1], num_steps=3, generator=torch.Generator().manual_seed(1), output_type="pt")
    other = pipe.project(targets[:1], num_steps=3, generator=torch.Generator().manual_seed(2), output_type="pt")
    assert torch.equal(first.latents, again.latents) and torch.equal(first.images, again.images)
    assert not torch.equal(first.latents, other.latents)


def test_each_image_starts_from_its_nearest_pool_samples(pipe, made):
    targets, _ = made
    targets = targets * 2 - 1
    network = pipe.generator.eval()

    def render(latents):
        return network(latents, noise_generator=noise_of(0, len(latents))).images.float()

    with torch.no_grad():
        starts = nearest_starts(pipe, render, targets, 3, torch.Generator().manual_seed(4), pass_size=100)
        pool = onto_sphere(pipe.sample_latents(POOL_SIZE, torch.Generator().manual_seed(4)))
        images = render(pool).clamp(-1, 1)  # the images as shown
    assert starts.shape == (3, 3, 16)
    for target, chosen in zip(targets, starts):
        errors = multiscale_error(images, target.expand_as(images))
        assert torch.equal(chosen, pool[errors.argsort()[:3]])


def test_pixels_beyond_a_pure_black_or_white_target_cost_nothing():
    targets = torch.tensor([-1.0, 1.0, 0.5, 1.0]).view(4, 1, 1, 1).expand(4, 1, 4, 4)
    images = torch.tensor([-1.5, 1.5, 1.5, 0.5]).view(4, 1, 1, 1).expand(4, 1, 4, 4)
    # clipped when shown: nothing to fix; a grey target still sees the raw overshoot; short of white costs
    assert torch.allclose(distance(images, targets), torch.tensor([0.0, 0.0, 1.0, 0.25]))
    assert torch.equal(multiscale_error(images, targets), torch.tensor([0.25, 0.25, 1.0, 0.25]))


def test_the_error_matrix_is_the_pairwise_multiscale_error():
    generator = torch.Generator().manual_seed(0)
    images, targets = torch.rand(5, 3, 16, 16, generator=generator), torch.rand(2, 3, 16, 16, generator=generator)
    matrix = multiscale_error_matrix(images, targets)
    pairwise = torch.stack([multiscale_error(images, target.expand_as(images)) for target in targets])
    assert matrix.shape == (2, 5) and torch.allclose(matrix, pairwise, atol=1e-5)
    coarse_only = images.clone()  # the same 4x4 averages: only the full and 2x scales see a difference
    coarse_only[:, :, ::2, ::2] += 0.1
    coarse_only[:, :, 1::2, 1::2] -= 0.1
    assert torch.allclose(multiscale_error(coarse_only, images), torch.full((5,), 0.01 * 0.5 / 3), atol=1e-6)


def test_each_image_is_projected_as_if_alone(pipe, made):
    """Images and their starts are rows of one batch, optimised independently: batching changes round-off only."""
    targets, _ = made
    together = pipe.project(targets, num_steps=8, generator=torch.Generator().manual_seed(0), output_type="pt")
    alone = pipe.project(targets[2:], num_steps=8, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert torch.allclose(together.latents[2:], alone.latents, atol=1e-4)


def test_the_best_start_goes_on_wherever_it_is_among_the_starts(pipe, made, monkeypatch):
    targets, latents = made
    exact = onto_sphere(latents[:1])
    target = pipe(latents=exact, generator=noise_of(0, 1), output_type="pt").images
    far = onto_sphere(torch.randn(3, 16, generator=torch.Generator().manual_seed(9)))
    monkeypatch.setattr(projection, "nearest_starts", lambda *args: far[None])
    without = pipe.project(target, num_steps=4, num_starts=3).distances[0]
    for position in (0, 2):
        starts = torch.cat([far[:position], exact, far[position:]])[None]
        monkeypatch.setattr(projection, "nearest_starts", lambda *args, starts=starts: starts)
        out = pipe.project(target, num_steps=4, num_starts=4, record_every=1)
        assert torch.equal(out.trajectory[0, 0], exact[0])  # the kept row is the exact start, found at step 1 of 4
        assert out.distances[0] < 0.1 * without


def test_latents_stay_on_the_sphere_of_the_prior(pipe, made):
    out = pipe.project(made[0], num_steps=6, generator=torch.Generator().manual_seed(0), record_every=2)
    norms = torch.cat([out.latents.norm(dim=1), out.trajectory.norm(dim=2).flatten()])
    assert torch.allclose(norms, torch.full_like(norms, 4.0))  # sqrt(latent_dim = 16)


def test_projection_leaves_the_networks_as_it_found_them(made):
    pipeline = tiny_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    pipeline.generator.train()
    before = {name: p.clone() for name, p in pipeline.generator.named_parameters()}
    with torch.no_grad():  # a caller's no_grad does not stop the optimisation
        out = pipeline.project(made[0][:1], num_steps=5, output_type="pt")
    assert out.distances.isfinite().all()
    assert pipeline.generator.training
    assert all(p.grad is None for p in pipeline.generator.parameters())  # no weight gradients computed
    assert all(torch.equal(before[name], p) for name, p in pipeline.generator.named_parameters())


# ---------------------------------------------------------------------------------------------------------------------
# Inputs and outputs
# ---------------------------------------------------------------------------------------------------------------------


def test_outputs_follow_output_type_and_return_dict(pipe, made):
    targets, _ = made
    pil = pipe.project(targets[:2], num_steps=2, generator=torch.Generator().manual_seed(0))
    assert [image.size for image in pil.images] == [(16, 16)] * 2 and pil.images[0].mode == "RGB"
    assert pil.latents.shape == (2, 16) and pil.latents.dtype == torch.float32 and pil.latents.device.type == "cpu"
    assert pil.distances.shape == (2,) and pil.trajectory is None
    array = pipe.project(targets[:2], num_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert array.shape == (2, 16, 16, 3) and array.min() >= 0 and array.max() <= 1
    assert np.array_equal((array * 255).round().astype(np.uint8), np.stack([np.asarray(im) for im in pil.images]))
    images, latents = pipe.project(targets[:2], num_steps=2, generator=torch.Generator().manual_seed(0),
                                   output_type="pt", return_dict=False)
    assert images.shape == (2, 3, 16, 16) and torch.equal(latents, pil.latents)
    recorded = pipe.project(targets[:1], num_steps=12, record_every=5)
    assert recorded.trajectory.shape == (4, 1, 16)  # steps 0, 5, 10 and the result
    assert torch.equal(recorded.trajectory[-1], recorded.latents)


def test_images_of_every_kind_are_read_as_training_reads_them(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    expected = preprocess_image(Image.fromarray(rgb), 16, center_crop=True)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    for kind in [Image.fromarray(rgb), str(tmp_path / "a.png"), tmp_path / "a.png", rgb, rgb[None],
                 torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, [rgb]]:
        assert torch.equal(target_pixels(kind, 16, 3), expected[None]), type(kind)
    grey = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    assert torch.equal(target_pixels(Image.fromarray(grey), 16, 3),
                       target_pixels(Image.fromarray(grey).convert("RGB"), 16, 3))
    transparent = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert torch.equal(target_pixels(transparent, 16, 3), torch.ones(1, 3, 16, 16))  # alpha over white
    batch = target_pixels(torch.rand(4, 3, 16, 16), 16, 3)
    assert batch.shape == (4, 3, 16, 16) and batch.min() >= -1 and batch.max() <= 1
    luma = target_pixels(Image.new("RGB", (16, 16), (255, 0, 0)), 16, 1)
    assert luma.shape == (1, 1, 16, 16) and torch.allclose(luma, torch.full_like(luma, 0.299 * 2 - 1))


def test_a_greyscale_generator_without_a_discriminator_projects():
    torch.manual_seed(0)
    generator = TransGANGenerator(TransGANGeneratorConfig(
        latent_dim=8, bottom_width=4, image_size=8, hidden_size=32, depths=[1, 1], upsample_types=["pixel_shuffle"],
        window_sizes=[0, 0], out_channels=1,
    ))
    pipeline = TransGANPipeline(generator=generator)
    pipeline.set_progress_bar_config(disable=True)
    out = pipeline.project(Image.new("L", (8, 8), 128), num_steps=3, output_type="pt")
    assert out.images.shape == (1, 1, 8, 8) and out.latents.shape == (1, 8)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (dict(images=[]), "`images` is empty"),
        (dict(images=3), r"Cannot read the image: expected a PIL image, a file path, a NumPy array or a torch tensor, "
                         r"got int\.$"),
        (dict(images=[np.zeros((4, 4, 3), np.uint8), "no/such.png"]), r"Cannot read images\[1\]: .*no/such\.png"),
        (dict(images=np.full((4, 4), np.nan)), "Cannot read the image: the array contains NaN"),
        (dict(images=np.full((4, 4), 300.0)), "values from 300.0 to 300.0; expected"),
        (dict(images=torch.zeros(2, 2)), r"shape \(C, H, W\) with 1, 3 or 4 channels, got \(2, 2\)"),
        (dict(images=torch.zeros(3, 4, 4, dtype=torch.uint8)), "floats in \\[0, 1\\], got torch.uint8"),
        (dict(num_steps=0), "`num_steps` must be an integer from 1 to 100000, got 0"),
        (dict(num_steps=2.5), "`num_steps` must be an integer"),
        (dict(num_starts=0), "`num_starts` must be an integer >= 1, got 0"),
        (dict(noise_seed=-1), r"`noise_seed` must be an integer in \[0, 2\*\*63\)"),
        (dict(record_every=0), "`record_every` must be an integer >= 1"),
        (dict(output_type="latent"), "`output_type`='latent' is not supported"),
        (dict(return_dict="yes"), "`return_dict` must be True or False"),
        (dict(generator=seeds(0, 1)), "`generator` must be one torch.Generator .* got list"),
    ],
)
def test_bad_inputs_are_refused_in_one_line(pipe, arguments, message):
    arguments = {"images": np.zeros((4, 4), np.uint8), "num_steps": 1, **arguments}
    with pytest.raises(ValueError, match=message) as refused:
        pipe.project(**arguments)
    assert "\n" not in str(refused.value)


# ---------------------------------------------------------------------------------------------------------------------
# `transgan project`
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_files(tmp_path_factory, made):
    """A generated image (PNG) and a greyscale JPEG of another size."""
    folder = tmp_path_factory.mktemp("images")
    targets, _ = made
    pixels = (targets[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(folder / "made.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 20), dtype=np.uint8)).save(folder / "grey.jpg")
    return [folder / "made.png", folder / "grey.jpg"]


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_the_command_writes_reconstructions_latents_and_videos(pipeline_folder, image_files, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["project", "--model", str(pipeline_folder), "--images", *map(str, image_files), "--output_dir",
                 str(out), "--num_steps", "6", "--video", "--device", "cpu"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{name}{suffix}" for name in ("made", "grey")
        for suffix in ("_projected.png", "_latent.npy", "_projection.gif"))
    captured = capsys.readouterr()
    assert "Projected 2 images" in captured.out and "project: 100%" in captured.err
    pipeline = TransGANPipeline.from_pretrained(pipeline_folder)
    for name in ("made", "grey"):
        latent = np.load(out / f"{name}_latent.npy")
        assert latent.shape == (1, 16) and latent.dtype == np.float32
        again = pipeline(latents=torch.from_numpy(latent), generator=torch.Generator().manual_seed(0)).images[0]
        with Image.open(out / f"{name}_projected.png") as written:
            assert written.size == (16, 16)
            assert np.abs(np.asarray(written, np.int16) - np.asarray(again, np.int16)).max() <= 1
        with Image.open(out / f"{name}_projection.gif") as video:
            assert video.n_frames == 7 and video.size == (512, 256)  # steps 0-5 and the result; 16 px enlarged 16x
            video.seek(6)
            assert video.info["duration"] > 1000  # the result is held


def test_the_command_without_video_and_progress(pipeline_folder, image_files, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["project", "--model", str(pipeline_folder), "--images", str(image_files[0]), "--output_dir",
                 str(out), "--num_steps", "2", "--no_progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["made_latent.npy", "made_projected.png"]
    assert "project:" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--images", "{missing}"], r"error: cannot read --images '.*missing\.png': .*No such file"),
        (["--images", "{text}"], r"error: cannot read --images '.*notes\.png': cannot identify image file"),
        (["--images", "{made}", "{made}"], "error: --images .* have the same name 'made'"),
        (["--images", "{made}", "--num_steps", "0"], "error: --num_steps must be >= 1, got 0."),
        (["--images", "{made}", "--num_starts", "0"], "error: --num_starts must be >= 1, got 0."),
        (["--images", "{made}", "--seed", "-1"], "error: --seed must be >= 0, got -1."),
        (["--images", "{made}", "--output_dir", "{text}"], "error: --output_dir '.*notes.png' is a file"),
        (["--images", "{made}", "--model", "{tmp}/no-model"], "error: cannot load --model '.*no-model'"),
    ],
)
def test_bad_command_inputs_are_one_error_line(pipeline_folder, image_files, tmp_path, capsys, extra, message):
    (tmp_path / "notes.png").write_text("not an image")
    values = {"missing": str(tmp_path / "missing.png"), "text": str(tmp_path / "notes.png"),
              "made": str(image_files[0]), "tmp": str(tmp_path)}
    extra = [part.format(**values) for part in extra]
    argv = ["project", "--model", str(pipeline_folder), "--output_dir", str(tmp_path / "out"), "--num_steps", "1"]
    assert main(argv + extra) == 2
    assert re.match(message, error_line(capsys.readouterr().err))
    assert not (tmp_path / "out").exists()


def test_the_quality_benchmark_prints_its_json_line(tmp_path):
    """benchmarks/projection_quality.py, tiny: two generated images, two steps (the figures come from full runs)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "projection_quality.py"
    result = subprocess.run([sys.executable, str(script), "--num_generated", "2", "--num_real", "0", "--num_steps",
                             "2", "--threads", "1", "--figure", str(tmp_path / "figure.png")],
                            capture_output=True, text=True, timeout=300, env=SUBPROCESS_ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"psnr_mean_db", "psnr_median_db", "psnr_min_db", "share_psnr_30db"} <= set(numbers)
    assert 5 < numbers["psnr_min_db"] <= numbers["psnr_mean_db"] < 60
    with Image.open(tmp_path / "figure.png") as figure:
        assert figure.height == 2 * 32 * 4  # two rows of 32 px images enlarged 4x
