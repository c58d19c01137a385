#!/usr/bin/env python
"""Quality report of a training run on MNIST-5k: plots from its `training_log.jsonl` and the real-data floor.

    python scripts/demo_report.py --run_dir runs/demo-mnist --out docs/demo

Reads `<run_dir>/training_log.jsonl` (written by `training/train.py`), `<run_dir>/samples/step_*.png` and the
exported EMA pipeline (`<run_dir>/pipeline`, or `--pipeline`), and writes into `--out`:

- `losses.png`: discriminator loss, gradient penalty and generator loss against kimg (raw and smoothed);
- `quality.png`: `fdd_mnist` (Fréchet Digit Distance, the digit-classifier metric of `--eval_steps`) and the mean
  digit-classifier confidence against kimg, with the real-data floor;
- `progress.png`: the fixed-noise sample grid of the EMA generator at several points of training;
- `samples.png`: 64 samples of the final model; `interpolation.png`: latent interpolations (slerp) between seeds;
- `report.json`: the figures below, with their protocol; `training_log.jsonl`: a copy of the run's log they come from
  (`tests/test_demo.py` checks the bundled demo model's card against it).

The floor: MNIST-5k is split in two random halves (2,500 digits each, seed 0); `fdd_mnist` of half A against half B
is what two samples of *real* digits score. The generator is measured the same way: 2,500 generated digits against
half B. (The numbers logged during training use all 5,000 digits as reference and 5,000 samples; the Fréchet distance
shrinks with more images, so only same-size figures are compared.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers.utils import make_image_grid
from PIL import Image, ImageDraw

from transgan_hf import TransGANPipeline
from transgan_hf.metrics import (
    ReferenceStatistics,
    build_feature_extractor,
    compute_metrics,
    evaluate_generator,
    extract_features,
)
from transgan_hf.metrics.digits import mnist_5k_tensors

HALF = 2500
METRICS = ("fid", "kid", "confidence")


def read_log(run_dir: Path) -> list[dict]:
    path = run_dir / "training_log.jsonl"
    if not path.is_file():
        sys.exit(f"error: {path} does not exist; train with `training/train.py --eval_steps N` first.")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(row["progress/kimg"], row[key]) for row in rows if key in row]
    if not points:
        return np.zeros(0), np.zeros(0)
    kimg, values = np.array(points, dtype=np.float64).T
    return kimg, values


def smooth(values: np.ndarray, window: int = 15) -> np.ndarray:
    """Rolling median: robust to the rare one-interval spikes of a GAN's losses."""
    if len(values) < window:
        return values
    padded = np.pad(values, (window // 2, window - 1 - window // 2), mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, window), axis=1)


def plot_losses(rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for axis, (key, title) in zip(axes, [("loss/discriminator", "discriminator loss (WGAN-GP-eps)"),
                                         ("loss/gradient_penalty", "gradient penalty"),
                                         ("loss/generator", "generator loss")]):
        kimg, values = series(rows, key)
        axis.plot(kimg, values, color="tab:blue", alpha=0.25, linewidth=0.8)
        axis.plot(kimg, smooth(values), color="tab:blue", linewidth=1.5)
        low, high = np.percentile(values, [0.5, 99.5])
        margin = 0.1 * (high - low)
        axis.set_ylim(low - margin, high + margin)  # a few spikes would otherwise flatten the curve
        axis.set_title(title + (" (spikes clipped)" if values.max() > high + margin else ""))
        axis.set_xlabel("kimg (thousands of real images seen by D)")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_quality(rows: list[dict], floor: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    kimg, fdd = series(rows, "eval/fdd_mnist")
    _, confidence = series(rows, "eval/digit_confidence_mnist")
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    left.plot(kimg, fdd, marker="o", markersize=3, label="EMA generator: 5,000 samples vs the 5,000 training digits")
    left.scatter([kimg[-1]], [floor["generator"]["fdd_mnist"]], color="tab:red", zorder=3,
                 label=f"final generator: {HALF:,} samples vs real half B")
    left.axhline(floor["real_half_a"]["fdd_mnist"], color="black", linestyle="--",
                 label=f"floor: real half A vs real half B ({HALF:,} each)")
    left.set_yscale("log")
    left.set_title("fdd_mnist (Fréchet Digit Distance; lower is better)")
    left.set_xlabel("kimg")
    left.grid(alpha=0.3, which="both")
    left.legend(fontsize=8)
    right.plot(kimg, confidence, marker="o", markersize=3, color="tab:green", label="EMA generator")
    right.axhline(floor["real_half_a"]["digit_confidence_mnist"], color="black", linestyle="--",
                  label="real digits (half A)")
    right.set_ylim(0, 1)
    right.set_title("mean digit-classifier confidence")
    right.set_xlabel("kimg")
    right.grid(alpha=0.3)
    right.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def labelled_row(images: list[Image.Image], labels: list[str], margin: int = 18) -> Image.Image:
    width, height = images[0].size
    canvas = Image.new("RGB", (len(images) * (width + 8) - 8, height + margin), "white")
    draw = ImageDraw.Draw(canvas)
    for index, (image, label) in enumerate(zip(images, labels)):
        canvas.paste(image.convert("RGB"), (index * (width + 8), margin))
        draw.text((index * (width + 8) + 2, 3), label, fill="black")
    return canvas


def progress_strip(run_dir: Path, rows: list[dict], count: int = 6) -> Image.Image:
    grids = sorted((run_dir / "samples").glob("step_*.png"))
    if not grids:
        sys.exit(f"error: no sample grids in {run_dir / 'samples'}.")
    picks = sorted({grids[round(i * (len(grids) - 1) / (count - 1))] for i in range(count)})
    kimg_at = {row["step"]: row["progress/kimg"] for row in rows if "progress/kimg" in row}
    images, labels = [], []
    for grid in picks:
        step = int(grid.stem.split("_")[1])
        image = Image.open(grid)
        crop = image.crop((0, 0, image.width // 2, image.height // 2))  # the top-left 4x4 of the 8x8 grid
        images.append(crop.resize((crop.width * 2, crop.height * 2), Image.NEAREST))
        labels.append(f"step {step}" + (f" ({kimg_at[step]:.0f} kimg)" if step in kimg_at else ""))
    return labelled_row(images, labels)


def image_grid(images: list[Image.Image], columns: int, scale: int = 2) -> Image.Image:
    """diffusers' grid, enlarged `scale` times (nearest neighbour: 32-px digits stay sharp)."""
    grid = make_image_grid(images, rows=len(images) // columns, cols=columns)
    return grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)


def real_digit_uint8() -> torch.Tensor:
    images, _ = mnist_5k_tensors()
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def batched(images: torch.Tensor, size: int = 256):
    for start in range(0, len(images), size):
        yield images[start : start + size]


def floor_figures(pipeline: TransGANPipeline, extractor, seed: int) -> dict:
    """Generator and real half A, each against real half B (2,500 images each)."""
    real = real_digit_uint8()
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    half_a, half_b = real[order[:HALF]], real[order[HALF : 2 * HALF]]
    features_b, _ = extract_features(batched(half_b), extractor)
    reference_b = ReferenceStatistics.from_features(features_b, keep_features=True, feature_extractor=extractor.name)
    features_a, logits_a = extract_features(batched(half_a), extractor, with_logits=True)
    real_a = compute_metrics(features_a, logits_a, reference_b, extractor, METRICS, seed=seed)

    def generate(generators):
        return pipeline(batch_size=len(generators), generator=generators, output_type="pt").images

    generated = evaluate_generator(generate, HALF, extractor, reference_b, batch_size=250, seed=seed,
                                   metrics=METRICS, progress=False)["metrics"]
    return {
        "protocol": f"{extractor.protocol}; MNIST-5k split into halves A/B of {HALF} (seed 0); each set of {HALF} "
                    f"images against half B; generated image i from SeedSequence([{seed}, i])",
        "real_half_a": real_a,
        "generator": generated,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True, type=Path, help="output_dir of the training run")
    parser.add_argument("--pipeline", type=Path, help="pipeline folder (default: <run_dir>/pipeline)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the PNGs and report.json")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated evaluation images")
    args = parser.parse_args(argv)

    rows = read_log(args.run_dir)
    pipeline = TransGANPipeline.from_pretrained(args.pipeline or args.run_dir / "pipeline")
    pipeline.set_progress_bar_config(disable=True)
    extractor = build_feature_extractor("digits")
    args.out.mkdir(parents=True, exist_ok=True)

    floor = floor_figures(pipeline, extractor, args.seed)
    evaluations = [row for row in rows if "eval/fdd_mnist" in row]
    last = evaluations[-1] if evaluations else {}
    best = min(evaluations, key=lambda row: row["eval/fdd_mnist"]) if evaluations else {}
    report = {
        "floor": floor,
        "training_log": {
            "last_evaluation": last,
            "best_evaluation": best,
            "evaluations": len(evaluations),
            "protocol": "EMA-generator samples against the 5,000 MNIST-5k training digits (train.py --eval_steps)",
        },
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.out.resolve() != args.run_dir.resolve():
        shutil.copyfile(args.run_dir / "training_log.jsonl", args.out / "training_log.jsonl")

    plot_losses(rows, args.out / "losses.png")
    plot_quality(rows, floor, args.out / "quality.png")
    progress_strip(args.run_dir, rows).save(args.out / "progress.png")
    samples = pipeline(batch_size=64, generator=[torch.Generator().manual_seed(i) for i in range(64)]).images
    image_grid(samples, columns=16).save(args.out / "samples.png")
    rows_of_strips = [pipeline.interpolate(a, b, num_steps=10).images for a, b in [(0, 1), (2, 3), (4, 5), (6, 7)]]
    image_grid([image for strip in rows_of_strips for image in strip], columns=10).save(args.out / "interpolation.png")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
