#!/usr/bin/env python
"""Report of the bundled MNIST-5k demo run: `transgan report`, plus what only the demo has (the real-data floor).

    python scripts/demo_report.py --run_dir runs/demo-mnist --output_dir docs/demo

Writes into `--output_dir` what `transgan report --run_dir RUN --output_dir OUT` writes (the curves against kimg,
among them `quality.png` with the `--eval_steps` metrics, `progress.png` with the sample grids over training,
`report.json`, `report.md`), then, from the exported EMA pipeline (`<run_dir>/pipeline`, or `--pipeline`):

- `report.json` gains `floor`: MNIST-5k is split in two random halves (2,500 digits each, seed 0); `fdd_mnist` of
  half A against half B is what two samples of *real* digits score, and 2,500 generated digits are measured the same
  way. (The numbers logged during training use all 5,000 digits as reference and 5,000 samples; the Fréchet distance
  shrinks with more images, so only same-size figures are compared.)
- `samples.png`: 64 samples of the final model; `interpolation.png`: latent interpolations (slerp) between seeds;
- `training_log.jsonl`: a copy of the run's log (`tests/test_demo.py` checks the demo model's card against it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from diffusers.utils import make_image_grid
from PIL import Image

from transgan_hf import TransGANPipeline
from transgan_hf.atomic_files import write_bytes_atomically, write_text_atomically
from transgan_hf.commands.report import write_report
from transgan_hf.images import save_image
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


def floor_figures(pipeline: TransGANPipeline, seed: int) -> dict:
    """Generator and real half A, each against real half B (2,500 images each)."""
    extractor = build_feature_extractor("digits")
    images, _ = mnist_5k_tensors()
    real = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    half_a, half_b = real[order[:HALF]].split(256), real[order[HALF : 2 * HALF]].split(256)
    features_b, _ = extract_features(half_b, extractor)
    reference_b = ReferenceStatistics.from_features(features_b, keep_features=True, feature_extractor=extractor.name)
    features_a, logits_a = extract_features(half_a, extractor, with_logits=True)

    def generate(generators):
        return pipeline(batch_size=len(generators), generator=generators, output_type="pt").images

    return {
        "protocol": f"{extractor.protocol}; MNIST-5k split into halves A/B of {HALF} (seed 0); each set of {HALF} "
                    f"images against half B; generated image i from SeedSequence([{seed}, i])",
        "real_half_a": compute_metrics(features_a, logits_a, reference_b, extractor, METRICS, seed=seed),
        "generator": evaluate_generator(generate, HALF, extractor, reference_b, batch_size=250, seed=seed,
                                        metrics=METRICS, progress=False)["metrics"],
    }


def enlarged_grid(images: list[Image.Image], columns: int, scale: int = 2) -> Image.Image:
    """diffusers' grid, enlarged `scale` times (nearest neighbour: 32-px digits stay sharp)."""
    grid = make_image_grid(images, rows=len(images) // columns, cols=columns)
    return grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True, type=Path, help="output_dir of the training run")
    parser.add_argument("--pipeline", type=Path, help="pipeline folder (default: <run_dir>/pipeline)")
    parser.add_argument("--output_dir", required=True, type=Path, help="folder for the PNGs and report.json")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated evaluation images")
    args = parser.parse_args(argv)

    try:
        summary = write_report(args.run_dir, args.output_dir)
    except (ValueError, ImportError) as error:  # no or an empty training log; matplotlib missing
        sys.exit(f"error: {error}")
    pipeline = TransGANPipeline.from_pretrained(args.pipeline or args.run_dir / "pipeline")
    pipeline.set_progress_bar_config(disable=True)
    summary["floor"] = floor_figures(pipeline, args.seed)
    write_text_atomically(args.output_dir / "report.json", json.dumps(summary, indent=2) + "\n")
    if args.output_dir.resolve() != args.run_dir.resolve():
        log = (args.run_dir / "training_log.jsonl").read_bytes()
        write_bytes_atomically(args.output_dir / "training_log.jsonl", log)

    samples = pipeline(batch_size=64, generator=[torch.Generator().manual_seed(i) for i in range(64)]).images
    save_image(enlarged_grid(samples, columns=16), args.output_dir / "samples.png")
    strips = [pipeline.interpolate(a, b, num_steps=10).images for a, b in [(0, 1), (2, 3), (4, 5), (6, 7)]]
    save_image(enlarged_grid([image for strip in strips for image in strip], columns=10),
               args.output_dir / "interpolation.png")
    print(json.dumps(summary["floor"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
