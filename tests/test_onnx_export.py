"""ONNX export (`transgan_hf.onnx_export`, `transgan export`) and `transgan generate --backend onnxruntime`: ONNX
Runtime gives PyTorch's outputs for a small version of every generator preset and for a discriminator, at batch sizes
other than the traced one, with the noise of noise injection as inputs; the ONNX backend makes the PyTorch images of
the same seeds; one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from helpers import ROOT, SUBPROCESS_ENV, tiny_pipeline
from PIL import Image

from transgan_hf import TransGANGenerator, TransGANGeneratorConfig
from transgan_hf.cli import main
from transgan_hf.onnx_export import (
    OPSET,
    PARITY_TOLERANCE,
    OnnxRuntimeGenerator,
    OnnxRuntimeNetwork,
    draw_noise_inputs,
    export_onnx,
    max_abs_difference,
)

SMALL_PRESETS = {
    # Each preset's architecture (upsampling, norms, windows, noise, latent cross-attention) at a fraction of its
    # size: narrow, few blocks, 256-px presets at 64 px (their windowed stages keep 16x16 windows).
    "tiny": dict(latent_dim=16, hidden_size=32, depths=[1, 1, 0]),
    "cifar10": dict(latent_dim=16, hidden_size=64, depths=[1, 1, 1]),
    "stl10": dict(latent_dim=16, hidden_size=64, bottom_width=3, image_size=12, depths=[1, 1, 1]),
    "church_256": dict(latent_dim=16, hidden_size=256, bottom_width=2, image_size=64, depths=[1, 0, 0, 0, 1, 1]),
    "celeba_hq_256": dict(latent_dim=16, hidden_size=256, bottom_width=2, image_size=64, depths=[0, 1, 0, 0, 1, 1],
                          num_latent_tokens=4),
}


def strengthen_noise(model: torch.nn.Module) -> None:
    """Noise strengths start at zero; 0.5 makes the noise inputs change the output."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("attention.noise_strength"):
                parameter.fill_(0.5)


def read(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


@pytest.fixture(scope="module")
def exported(pipeline_folder, tmp_path_factory, single_thread):
    """`transgan export --discriminator` of the tiny pipeline (noise injection in both networks): the folder."""
    folder = tmp_path_factory.mktemp("onnx") / "exported"
    assert main(["export", "--model", str(pipeline_folder), "--output_dir", str(folder), "--discriminator",
                 "--no_progress"]) == 0
    return folder


@pytest.mark.parametrize("preset", TransGANGeneratorConfig.available_presets())
def test_onnx_runtime_gives_pytorchs_images_for_every_preset(preset, tmp_path, single_thread):
    torch.manual_seed(0)
    config = TransGANGeneratorConfig.from_preset(preset, **SMALL_PRESETS[preset])
    generator = TransGANGenerator(config)
    strengthen_noise(generator)
    names = export_onnx(generator, tmp_path / "generator.onnx")
    noisy_blocks = sum(config.depths) if config.noise_injection else 0
    assert names == ["latents"] + [f"noise_{index}" for index in range(noisy_blocks)]
    network = OnnxRuntimeNetwork(tmp_path / "generator.onnx", num_threads=1)
    assert network.input_shape == (config.latent_dim,)
    for batch_size in (1, 3):  # the export traced a batch of 2
        assert max_abs_difference(generator, network, batch_size) < PARITY_TOLERANCE
    if noisy_blocks:  # the noise inputs reach the blocks
        latents = torch.randn(2, config.latent_dim)
        noise = draw_noise_inputs(network.noise_tokens, 2, torch.Generator().manual_seed(0))
        silent = network(latents, [torch.zeros_like(tensor) for tensor in noise])
        assert (network(latents, noise) - silent).abs().max() > 1e-2


def test_export_writes_both_networks_documented_and_matching_pytorch(exported, capsys):
    assert sorted(path.name for path in exported.iterdir()) == ["discriminator.onnx", "generator.onnx"]
    pipe = tiny_pipeline()  # the weights of the exported pipeline
    for name, model, output in (("generator", pipe.generator, "images"),
                                ("discriminator", pipe.discriminator, "logits")):
        proto = onnx.load(exported / f"{name}.onnx")
        onnx.checker.check_model(proto)
        assert {entry.domain: entry.version for entry in proto.opset_import}[""] == OPSET
        metadata = {prop.key: prop.value for prop in proto.metadata_props}
        assert json.loads(metadata["transgan_config"])["model_type"] == model.config.model_type
        assert [node.name for node in proto.graph.output] == [output]
        network = OnnxRuntimeNetwork(exported / f"{name}.onnx", num_threads=1)
        assert network.input_name == model.main_input_name
        assert len(network.noise_tokens) == 3  # one noise input per transformer block
        for batch_size in (1, 4):
            assert max_abs_difference(model, network, batch_size, seed=batch_size) < PARITY_TOLERANCE


@pytest.mark.parametrize("model", ["folder", "file"])
def test_onnxruntime_backend_makes_the_pytorch_images(model, exported, pipeline_folder, tmp_path, single_thread):
    common = ["--seeds", "0-2,7", "--truncation", "0.8", "--batch_size", "3", "--no_progress"]
    onnx_model = exported if model == "folder" else exported / "generator.onnx"
    assert main(["generate", "--backend", "onnxruntime", "--model", str(onnx_model), *common,
                 "--output_dir", str(tmp_path / "onnx")]) == 0
    assert main(["generate", "--model", str(pipeline_folder), *common, "--output_dir", str(tmp_path / "torch")]) == 0
    for seed in (0, 1, 2, 7):
        name = f"seed{seed:04d}.png"
        assert np.abs(read(tmp_path / "onnx" / name) - read(tmp_path / "torch" / name)).max() <= 1


def test_onnxruntime_backend_exports_a_pipeline_on_the_fly(pipeline_folder, tmp_path, capsys, single_thread):
    assert main(["generate", "--backend", "onnxruntime", "--model", str(pipeline_folder), "--seeds", "5",
                 "--output_dir", str(tmp_path), "--no_progress"]) == 0
    assert "Exporting the generator to ONNX first" in capsys.readouterr().err
    expected = np.asarray(tiny_pipeline()(generator=[torch.Generator().manual_seed(5)]).images[0], dtype=np.int16)
    assert np.abs(read(tmp_path / "seed0005.png") - expected).max() <= 1


def test_onnx_generator_samples_what_the_pipeline_samples(exported):
    generator = OnnxRuntimeGenerator(exported / "generator.onnx", num_threads=1)
    seeds = [torch.Generator().manual_seed(seed) for seed in (3, 4)]
    expected = tiny_pipeline()(batch_size=2, generator=[torch.Generator().manual_seed(seed) for seed in (3, 4)],
                              output_type="pt")
    torch.testing.assert_close((generator.sample(seeds) / 2 + 0.5).clamp(0, 1), expected.images, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["export", "--model", "{no_discriminator}", "--discriminator", "--output_dir", "{tmp}/out"],
         "has no discriminator"),
        (["export", "--model", "{pipeline}", "--output_dir", "{file}"], "is a file; pass a folder"),
        (["export", "--model", "{tmp}/missing", "--output_dir", "{tmp}/out"], "cannot load --model"),
        (["generate", "--backend", "onnxruntime", "--model", "{exported}", "--seeds", "0", "--num_candidates", "2",
          "--output_dir", "{tmp}/out"], "--num_candidates ranks samples with the PyTorch discriminator"),
        (["generate", "--backend", "onnxruntime", "--model", "{exported}", "--seeds", "0", "--dtype", "bfloat16",
          "--output_dir", "{tmp}/out"], "the ONNX generator runs in float32"),
        (["generate", "--backend", "onnxruntime", "--model", "{exported}", "--seeds", "0", "--device", "cuda",
          "--output_dir", "{tmp}/out"], "runs on the CPU"),
        (["generate", "--backend", "onnxruntime", "--model", "{exported}/discriminator.onnx", "--seeds", "0",
          "--output_dir", "{tmp}/out"], "is a discriminator, not a generator"),
        (["generate", "--backend", "onnxruntime", "--model", "{corrupt}", "--seeds", "0", "--output_dir",
          "{tmp}/out"], "is not an ONNX model that ONNX Runtime can load"),
        (["generate", "--backend", "onnxruntime", "--model", "{tmp}/missing.onnx", "--seeds", "0", "--output_dir",
          "{tmp}/out"], "does not exist"),
    ],
    ids=["no discriminator", "output is a file", "missing model", "candidates", "bfloat16", "cuda",
         "discriminator file", "corrupt file", "missing file"],
)
def test_bad_input_is_one_error_line(arguments, message, exported, pipeline_folder, tmp_path, capsys):
    no_discriminator = tmp_path / "no_discriminator"
    tiny_pipeline(with_discriminator=False).save_pretrained(no_discriminator)
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "generator.onnx").write_bytes(b"\x00not onnx")
    paths = {"tmp": tmp_path, "pipeline": pipeline_folder, "exported": exported, "file": tmp_path / "file",
             "no_discriminator": no_discriminator, "corrupt": tmp_path / "corrupt"}
    capsys.readouterr()
    assert main([argument.format(**paths) for argument in arguments]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and err.endswith(lines[0] + "\n") and "Traceback" not in err, err
    assert message in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_speed_benchmark_prints_its_figures(pipeline_folder):
    result = subprocess.run(
        [sys.executable, "onnx_speed.py", "--model", str(pipeline_folder), "--batch_size", "2", "--steps", "1",
         "--warmup", "0", "--threads", "1"],
        cwd=ROOT / "benchmarks", capture_output=True, text=True, timeout=300, env=SUBPROCESS_ENV,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(figures) == {"max_abs_diff", "export_s", "pytorch_fp32_images_per_s", "pytorch_bf16_images_per_s",
                            "onnxruntime_images_per_s"}
    assert figures["max_abs_diff"] < PARITY_TOLERANCE
    assert all(value > 0 for key, value in figures.items() if key != "max_abs_diff")
