"""Builders shared by several test modules that must be importable rather than fixtures: classes (a stand-in feature
network), functions that module-scoped fixtures, test bodies and subprocess scripts call with arguments, and paths.

Fixtures live in `conftest.py`; no test module imports another test module.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from transgan_hf import (
    TransGANDiscriminator,
    TransGANDiscriminatorConfig,
    TransGANGenerator,
    TransGANGeneratorConfig,
    TransGANPipeline,
)
from transgan_hf.convert_official import OFFICIAL_PRESETS, official_discriminator_key, official_generator_key
from transgan_hf.metrics import FeatureExtractor, FeatureOutput

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = ROOT / "training" / "train.py"
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
"""Environment of training subprocesses: one thread (the micro models do not need more on a shared machine), offline."""
SPACE_APP_FILE = ROOT / "spaces" / "app.py"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
"""The snapshot hash under which `place_in_hub_cache` stores a pipeline."""

# ---------------------------------------------------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------------------------------------------------


def tiny_pipeline(with_discriminator: bool = True, seed: int = 0) -> TransGANPipeline:
    """A 16x16 pipeline with noise injection in both networks (strength 0.5, so that noise changes the output)."""
    torch.manual_seed(seed)
    generator = TransGANGenerator(TransGANGeneratorConfig(
        latent_dim=16, bottom_width=4, image_size=16, hidden_size=64, depths=[1, 1, 1],
        upsample_types=["pixel_shuffle"] * 2, window_sizes=[0, 0, 8], noise_injection=True,
    ))
    discriminator = TransGANDiscriminator(TransGANDiscriminatorConfig(
        image_size=16, patch_size=2, patch_embed_dims=[24, 8], hidden_size=32, depths=[1, 1], window_sizes=[0, 0],
        global_depths=[0, 0], noise_injection=True,
    )) if with_discriminator else None
    with torch.no_grad():
        for model in filter(None, (generator, discriminator)):
            for name, param in model.named_parameters():
                if name.endswith("attention.noise_strength"):
                    param.fill_(0.5)
    return TransGANPipeline(generator=generator, discriminator=discriminator)


def seeds(*values: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(v) for v in values]


def place_in_hub_cache(folder: Path, cache: Path, repo_id: str, revision: str = "main") -> Path:
    """Copy a saved pipeline into the layout huggingface_hub uses (`models--org--name/snapshots/<hash>`, `refs/`)."""
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, storage / "snapshots" / COMMIT)
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / revision).write_text(COMMIT)
    return storage


# ---------------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------------


class StandInFeatures(FeatureExtractor):
    """A tiny fixed random network in place of Inception."""

    name = "standin"
    protocol = "test stand-in network"

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 4, stride=4)
        self.head = nn.Linear(8, 5)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)

    def forward(self, images: torch.Tensor) -> FeatureOutput:
        features = self.conv(images.float() / 127.5 - 1).relu().mean(dim=(2, 3))
        return FeatureOutput(features, self.head(features))


# ---------------------------------------------------------------------------------------------------------------------
# Official checkpoints
# ---------------------------------------------------------------------------------------------------------------------


def reduced_official_args(preset: str) -> dict:
    """Small flags of the same official class pair (a forward pass of the real sizes is too slow for a test)."""
    gen_model, dis_model = OFFICIAL_PRESETS[preset]
    args = dict(gen_model=gen_model, dis_model=dis_model, latent_dim=16, g_norm="pn", d_norm="ln", g_act="gelu",
                d_act="gelu", g_mlp=4, d_mlp=4, d_depth=3)
    if preset in ("cifar10", "stl10"):
        args.update(gf_dim=64, g_depth="1,1,1", bottom_width=4, img_size=16, df_dim=32, patch_size=2)
    elif preset == "church_256":
        args.update(gf_dim=256, g_depth="1,1,1,1,1,1", bottom_width=2, img_size=64, df_dim=64, patch_size=2,
                    g_window_size=8, d_window_size=8)
    else:
        args.update(gf_dim=256, g_depth="5,1,1,1,1,1", bottom_width=2, img_size=64, df_dim=64, patch_size=2,
                    g_window_size=8, d_window_size=4)
    return args


def official_checkpoint_from(generator, discriminator, gen_model, d_config, extra_entries=True) -> dict:
    """An official-format training checkpoint holding our models' weights under the official names."""
    def official(state, key_fn):
        out = {"module." + key_fn(k): v.clone() for k, v in state.items()}
        if extra_entries:  # what real official checkpoints also carry, and the converter must drop
            for key, value in list(out.items()):
                if key.endswith("relative_position_bias_table"):
                    side = int(round((value.shape[0] ** 0.5 + 1) / 2))
                    out[key.replace("bias_table", "index")] = torch.zeros(side * side, side * side, dtype=torch.int64)
        return out

    gen = official(generator.state_dict(), lambda k: official_generator_key(k, gen_model))
    dis = official(discriminator.state_dict(), lambda k: official_discriminator_key(k, d_config))
    if extra_entries:
        dis["module.Hz_fbank"] = torch.zeros(4, 43)
    return {"epoch": 3, "gen_model": gen_model, "dis_model": "x", "gen_state_dict": gen, "avg_gen_state_dict": gen,
            "dis_state_dict": dis, "best_fid": 1e4, "path_helper": {"prefix": "logs"}, "fixed_z": torch.zeros(2, 16)}


# ---------------------------------------------------------------------------------------------------------------------
# The Space
# ---------------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def import_app():
    """spaces/app.py as a module (it is a script folder, not a package); builds its demo without launching it."""
    spec = importlib.util.spec_from_file_location("transgan_space_app", SPACE_APP_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def space_models_setting(models: tuple[Path, Path]) -> str:
    """TRANSGAN_SPACE_MODELS serving both models under their folder names, `tiny` (the default) and
    `tiny-no-discriminator`."""
    return ",".join(str(model) for model in models)


def save_space_models(folder: Path) -> tuple[Path, Path]:
    """A tiny pipeline with its discriminator, and the same generator saved without one."""
    full, generator_only = folder / "tiny", folder / "tiny-no-discriminator"
    pipeline = tiny_pipeline()
    pipeline.save_pretrained(full)
    TransGANPipeline(generator=pipeline.generator).save_pretrained(generator_only)
    return full, generator_only


# ---------------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------------


def model_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = model_weights(a), model_weights(b)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), f"{a} and {b} differ in {name}"
