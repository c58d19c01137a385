"""Fixtures shared by the test modules. Importable builders (classes, functions called with arguments from
module-scoped fixtures and subprocess scripts) are in `helpers.py`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from PIL import Image

from transgan_hf import TransGANDiscriminatorConfig, TransGANGeneratorConfig


@pytest.fixture()
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty HF cache with HF_HUB_OFFLINE=1 (environment and the value huggingface_hub read at import)."""
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def single_thread():
    """Two-thread OpenMP kernels crawl on a shared 2-core machine; the micro models do not need them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory) -> Path:
    """`tests.helpers.tiny_pipeline()` saved once per test module (noise injection included, strength 0.5)."""
    from helpers import tiny_pipeline

    folder = tmp_path_factory.mktemp("model") / "pipe"
    tiny_pipeline().save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------------------------------
# Training: micro models on 16 synthetic images (seconds per run)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def training_workspace(tmp_path_factory) -> Path:
    """Micro generator/discriminator configs and a 16-image folder (RGB, RGBA, greyscale, palette; not square)."""
    folder = tmp_path_factory.mktemp("training")
    TransGANGeneratorConfig(latent_dim=16, bottom_width=4, image_size=16, hidden_size=64, depths=[1, 1, 1],
                            upsample_types=["pixel_shuffle"] * 2, window_sizes=[0, 0, 8],
                            noise_injection=True).to_json_file(folder / "generator.json")
    TransGANDiscriminatorConfig(image_size=16, patch_size=2, patch_embed_dims=[16, 16], hidden_size=32, depths=[1, 1],
                                window_sizes=[0, 0], global_depths=[0, 0],
                                noise_injection=True).to_json_file(folder / "discriminator.json")
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    modes = ["RGB", "RGBA", "L", "P"]
    for i in range(16):
        pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(modes[i % 4]).save(images / f"{i:02d}.png")
    return folder


@pytest.fixture(scope="session")
def micro_args(training_workspace) -> Callable[..., list[str]]:
    """`micro_args(output_dir, *extra)`: training flags for the micro models and images of `training_workspace`
    (batches of 4, 2 critic steps of 2 micro-batches, the penalty on every update and the whole batch, translation
    DiffAugment (its random stream is part of an exact resume), a checkpoint every 3 steps), then `extra`."""

    def flags(output_dir: Path, *extra: str) -> list[str]:
        return [
            "--generator_config", str(training_workspace / "generator.json"),
            "--discriminator_config", str(training_workspace / "discriminator.json"),
            "--train_data_dir", str(training_workspace / "images"), "--cache_dir", str(training_workspace / "cache"),
            "--train_batch_size", "4", "--gen_batch_size", "4", "--n_critic", "2", "--gradient_accumulation_steps",
            "2", "--gp_interval", "1", "--gp_batch_shrink", "1", "--diffaug_policy", "translation",
            "--random_flip", "--no-center_crop",
            "--num_sample_images", "4", "--report_to", "none",
            "--logging_steps", "1", "--save_images_steps", "100", "--checkpointing_steps", "3",
            "--output_dir", str(output_dir), *extra,
        ]

    return flags


@pytest.fixture(scope="session")
def run_training_in_process():
    """`run(argv, evaluation_hooks=())`: `training/train.py ARGV` in this process (`transgan_hf.training.loop.main`),
    returning its `TrainingResult`; Accelerate's process-wide state is reset afterwards, so every run builds a fresh
    Accelerator."""
    from accelerate.state import AcceleratorState, GradientState

    from transgan_hf.training.loop import main

    def run(argv: Sequence[str], evaluation_hooks=()):
        try:
            return main(argv, evaluation_hooks=evaluation_hooks)
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()

    return run
