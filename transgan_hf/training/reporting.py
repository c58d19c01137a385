"""What a run reports besides the trackers: `training_log.jsonl` and the fixed-noise sample grids of the EMA
generator."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger

from ..atomic_files import write_text_atomically
from ..images import image_grid, save_image
from ..pipeline_transgan import TransGANPipeline
from .trainer import random_generator

logger = get_logger(__name__, log_level="INFO")


class TrainingLog:
    """`training_log.jsonl` in the output folder: one JSON object per logged step (losses, speed, evaluations).

    What the trackers get, in a form scripts can read without TensorBoard (`transgan report` plots it). On
    resume, rows after the checkpoint's step (written by the interrupted run) are dropped, so each step appears once
    per kind of row; so is a row that cannot be read (the last one, torn when the run was killed), with a warning.
    """

    FILE = "training_log.jsonl"

    def __init__(self, accelerator: Accelerator, output_dir: Path, resumed_step: int) -> None:
        self.path = output_dir / self.FILE if accelerator.is_main_process else None
        if self.path is not None and self.path.is_file():
            rows, unreadable = [], 0
            for line in filter(str.strip, self.path.read_text(errors="replace").splitlines()):
                try:
                    if json.loads(line)["step"] <= resumed_step:
                        rows.append(line)
                except (ValueError, KeyError, TypeError):
                    unreadable += 1
            if unreadable:
                logger.warning(f"{self.path}: dropped {unreadable} unreadable row(s), torn by an interrupted run.")
            write_text_atomically(self.path, "".join(row + "\n" for row in rows))

    def write(self, step: int, values: Mapping[str, Any]) -> None:
        if self.path is not None:
            with self.path.open("a") as file:
                file.write(json.dumps({"step": step, **values}) + "\n")


class SampleWriter:
    """Fixed-noise sample grids of the EMA generator: PNG under `folder` and images for the trackers.

    The grid is generated `batch_size` images per pipeline call (the generator's training batch per process, which
    is known to fit); image `i` has its own latent and noise stream, so the grid does not depend on that size. Call it
    on every process: the main process samples and writes while the others wait at a barrier (also if it fails).
    """

    def __init__(self, accelerator: Accelerator, pipeline: TransGANPipeline, folder: Path, num_images: int,
                 seed: int, batch_size: int) -> None:
        self.accelerator, self.pipeline, self.folder, self.seed = accelerator, pipeline, folder, seed
        self.batch_size = batch_size
        latent_dim = pipeline.generator.config.latent_dim
        self.latents = torch.randn((num_images, latent_dim), generator=torch.Generator().manual_seed(seed))

    def __call__(self, step: int) -> Path | None:
        path = None
        try:
            if self.accelerator.is_main_process:
                images = []
                for start in range(0, len(self.latents), self.batch_size):
                    latents = self.latents[start:start + self.batch_size]
                    noise = [random_generator(self.accelerator.device, self.seed, index, purpose=2)  # one per image
                             for index in range(start, start + len(latents))]
                    images += self.pipeline(latents=latents, generator=noise, output_type="pil").images
                grid = image_grid(images)  # square: `--num_sample_images` is a square number
                path = self.folder / f"step_{step:06d}.png"
                save_image(grid, path)
                pixels = np.asarray(grid)[None]
                for tracker in self.accelerator.trackers:
                    if tracker.name == "tensorboard":
                        tracker.log_images({"samples": pixels}, step=step, dataformats="NHWC")
                    elif hasattr(tracker, "log_images"):
                        tracker.log_images({"samples": pixels}, step=step)
        finally:
            self.accelerator.wait_for_everyone()
        return path
