"""Loading that would be silently wrong or die deep inside fails with one line naming the file, the field or the
tensor, and the fix: non-finite, missing, unexpected or misshapen weights; truncated and pickle-only folders;
configurations with missing, unknown or mistyped fields or sizes beyond the limits; bad `model_index.json`. Saved
folders and files get the user's umask permissions."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from transgan_hf import (
    TransGANDiscriminator,
    TransGANDiscriminatorConfig,
    TransGANGenerator,
    TransGANGeneratorConfig,
    TransGANPipeline,
)
from transgan_hf.configuration_transgan import MAX_PARAMETERS
from transgan_hf.model_card import update_model_card_metrics

GENERATOR = dict(latent_dim=16, bottom_width=4, image_size=16, hidden_size=64, depths=[1, 1, 1],
                 upsample_types=["pixel_shuffle", "pixel_shuffle"], window_sizes=[0, 0, 8], noise_injection=True)
DISCRIMINATOR = dict(image_size=16, patch_size=2, patch_embed_dims=[24, 8], hidden_size=32, depths=[1, 1],
                     window_sizes=[4, 0], global_depths=[1, 0])


def one_line_error(error_type: type[Exception], match: str, call) -> str:
    with pytest.raises(error_type, match=match) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.fixture()
def pipeline_folder(tmp_path) -> Path:
    torch.manual_seed(0)
    pipe = TransGANPipeline(TransGANGenerator(TransGANGeneratorConfig(**GENERATOR)),
                            TransGANDiscriminator(TransGANDiscriminatorConfig(**DISCRIMINATOR)))
    pipe.save_pretrained(tmp_path / "pipe")
    return tmp_path / "pipe"


def rewrite_weights(folder: Path, change) -> None:
    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


# ---------------------------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("component", ["generator", "discriminator"])
def test_non_finite_weights_name_the_file_and_the_tensors(pipeline_folder, component):
    folder = pipeline_folder / component
    model_class = TransGANGenerator if component == "generator" else TransGANDiscriminator
    names = sorted(load_file(folder / "model.safetensors"))[:2]

    def poison(tensors):
        tensors[names[0]] = torch.full_like(tensors[names[0]], float("nan"))
        tensors[names[1]] = tensors[names[1]].clone()
        tensors[names[1]].view(-1)[0] = float("inf")

    rewrite_weights(folder, poison)
    pattern = f"{folder / 'model.safetensors'}' holds NaN or infinite values in 2 tensor.*{names[0]}, {names[1]}"
    message = one_line_error(OSError, pattern, lambda: model_class.from_pretrained(folder))
    assert "earlier checkpoint" in message
    one_line_error(OSError, pattern, lambda: TransGANPipeline.from_pretrained(pipeline_folder))


def test_missing_unexpected_and_misshapen_tensors_are_refused_not_initialised(pipeline_folder):
    folder = pipeline_folder / "generator"
    original = load_file(folder / "model.safetensors")
    weights = f"{folder / 'model.safetensors'}'"

    rewrite_weights(folder, lambda tensors: tensors.pop("stages.0.blocks.0.mlp.fc1.weight"))
    one_line_error(OSError, f"{weights} does not match the TransGANGenerator .*1 tensor\\(s\\) missing from the file "
                            r"\(stages.0.blocks.0.mlp.fc1.weight\).*save or download the model again",
                   lambda: TransGANGenerator.from_pretrained(folder))
    one_line_error(OSError, "missing from the file", lambda: TransGANPipeline.from_pretrained(pipeline_folder))

    save_file({**original, "stages.0.blocks.9.extra": torch.zeros(2)}, folder / "model.safetensors")
    one_line_error(OSError, r"1 tensor\(s\) in the file but not in the model \(stages.0.blocks.9.extra\)",
                   lambda: TransGANGenerator.from_pretrained(folder))

    save_file({**original, "latent_proj.bias": torch.zeros(3)}, folder / "model.safetensors")
    one_line_error(OSError, r"1 tensor\(s\) of the wrong shape \(latent_proj.bias\)",
                   lambda: TransGANGenerator.from_pretrained(folder))

    many = {name: tensor for name, tensor in original.items() if not name.startswith("stages.")}
    save_file(many, folder / "model.safetensors")
    message = one_line_error(OSError, "missing from the file", lambda: TransGANGenerator.from_pretrained(folder))
    assert message.count("stages.") == 5 and "in all)" in message  # the first few names, then the count

    save_file(original, folder / "model.safetensors")
    first, second = TransGANGenerator.from_pretrained(folder), TransGANGenerator.from_pretrained(folder)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_truncated_empty_and_pickle_only_weights(pipeline_folder, monkeypatch):
    folder = pipeline_folder / "discriminator"
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    for broken in (data[: len(data) // 2], data[:5], b""):
        weights.write_bytes(broken)
        one_line_error(OSError, f"{weights}' is not a readable safetensors file .* truncated or corrupt",
                       lambda: TransGANDiscriminator.from_pretrained(folder))
    one_line_error(OSError, "not a readable safetensors", lambda: TransGANPipeline.from_pretrained(pipeline_folder))

    weights.unlink()
    torch.save({"head.bias": torch.zeros(1)}, folder / "pytorch_model.bin")

    def unpickling(*args, **kwargs):
        raise AssertionError("a pickle file was loaded")

    monkeypatch.setattr(torch, "load", unpickling)
    one_line_error(OSError, r"holds only pickle weights \(pytorch_model.bin\), which are never loaded",
                   lambda: TransGANDiscriminator.from_pretrained(folder))
    one_line_error(OSError, "pickle weights", lambda: TransGANPipeline.from_pretrained(pipeline_folder))
    with pytest.raises(ValueError, match="safetensors weights only"):
        TransGANDiscriminator.from_pretrained(folder, use_safetensors=False)

    (folder / "pytorch_model.bin").unlink()
    one_line_error(OSError, f"{weights}' is missing", lambda: TransGANPipeline.from_pretrained(pipeline_folder))
    (folder / "config.json").unlink()
    one_line_error(OSError, f"{folder / 'config.json'}' is missing",
                   lambda: TransGANPipeline.from_pretrained(pipeline_folder))


# ---------------------------------------------------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda c: c.pop("depths"), "'depths' are missing"),
        (lambda c: c.pop("hidden_size"), "'hidden_size' are missing"),
        (lambda c: c.update(norm="ln"), r"no field 'norm' \(did you mean 'norm_type'\?\)"),
        (lambda c: c.update(hidden_size="64"), r"`hidden_size` must be an integer, got '64' \(str\)"),
        (lambda c: c.update(latent_dim=16.0), r"`latent_dim` must be an integer, got 16.0 \(float\)"),
        (lambda c: c.update(out_channels=True), r"`out_channels` must be an integer, got True \(bool\)"),
        (lambda c: c.update(noise_injection=1), r"`noise_injection` must be true or false, got 1 \(int\)"),
        (lambda c: c.update(depths="1,1,1"), "`depths` must be a list of integers"),
        (lambda c: c.update(depths=[1, 1]), "`upsample_types` has 2 entries but needs 1"),
        (lambda c: c.update(window_sizes=[0, 0]), "`window_sizes` has 2 entries but needs 3"),
        (lambda c: c.update(mlp_ratio="4"), "`mlp_ratio` must be a finite number"),
        (lambda c: c.update(mlp_ratio=float("nan")), "`mlp_ratio` must be a finite number"),
        (lambda c: c.update(upsample_types=["pixel_shuffle", 2]), "`upsample_types` must be a list of strings"),
        (lambda c: c.update(model_type="transgan_discriminator"), "this is not a TransGANGeneratorConfig"),
        (lambda c: c.update(depths=[1000000, 2, 0]), r"`depths` entries must be in \[0, 1024\]"),
        (lambda c: c.update(hidden_size=2**40), r"`hidden_size` must be in \[1, 65536\]"),
    ],
)
def test_bad_config_files_name_the_file_and_the_field(pipeline_folder, change, match):
    folder = pipeline_folder / "generator"
    path = folder / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))
    file_match = f"{path}' is not a valid TransGANGeneratorConfig: .*{match}.*Fix the file"
    for load in (lambda: TransGANGeneratorConfig.from_pretrained(folder),
                 lambda: TransGANGeneratorConfig.from_json_file(path),
                 lambda: TransGANGenerator.from_pretrained(folder),
                 lambda: TransGANPipeline.from_pretrained(pipeline_folder)):
        one_line_error(OSError, file_match, load)
    one_line_error(ValueError, match, lambda: TransGANGeneratorConfig.from_dict(config))


def test_config_files_that_are_not_json_objects(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    one_line_error(OSError, f"{path}' is not valid JSON", lambda: TransGANDiscriminatorConfig.from_json_file(path))
    path.write_text("[1, 2]")
    one_line_error(OSError, "must be a JSON object", lambda: TransGANDiscriminatorConfig.from_json_file(path))


def test_saved_configs_keep_the_generic_transformers_keys(pipeline_folder):
    config = json.loads((pipeline_folder / "discriminator" / "config.json").read_text())
    assert {"architectures", "dtype", "model_type", "transformers_version"} <= set(config)
    config.update(output_hidden_states=False, return_dict=True, _name_or_path="x", torch_dtype="float32")
    loaded = TransGANDiscriminatorConfig.from_dict(config)
    assert loaded.patch_embed_dims == [24, 8] and loaded.to_dict()["patch_embed_dims"] == [24, 8]
    # Overrides given to from_pretrained are checked like the fields of the file.
    with pytest.raises(ValueError, match="`depths` must be a list of integers"):
        TransGANDiscriminatorConfig.from_pretrained(pipeline_folder / "discriminator", depths="1")


def test_python_construction_keeps_defaults_but_refuses_unknown_and_mistyped_fields():
    assert TransGANGeneratorConfig().depths == [5, 4, 2]  # keyword defaults stay allowed in Python
    assert TransGANGeneratorConfig(depths=(2, 2, 0)).depths == [2, 2, 0]
    with pytest.raises(ValueError, match=r"no field 'norm' \(did you mean 'norm_type'\?\)"):
        TransGANGeneratorConfig.from_preset("tiny", norm="foo")
    with pytest.raises(ValueError, match="no field 'patch'"):
        TransGANDiscriminatorConfig.from_preset("tiny", patch=4)
    with pytest.raises(ValueError, match=r"`patch_size` must be an integer, got 4.5"):
        TransGANDiscriminatorConfig.from_preset("tiny", patch_size=4.5)


@pytest.mark.parametrize(
    ("config_class", "overrides", "match"),
    [
        (TransGANGeneratorConfig, dict(depths=[1000000, 2, 0]), r"`depths` entries must be in \[0, 1024\]"),
        (TransGANGeneratorConfig, dict(hidden_size=2**17), r"`hidden_size` must be in \[1, 65536\]"),
        (TransGANGeneratorConfig, dict(latent_dim=10**12), "`latent_dim` must be in"),
        (TransGANGeneratorConfig, dict(bottom_width=2**15, image_size=2**17), "`bottom_width` must be in"),
        (TransGANGeneratorConfig, dict(mlp_ratio=1e6), "`mlp_ratio` must be in"),
        (TransGANGeneratorConfig, dict(depths=[1] * 40, upsample_types=["bicubic"] * 39, window_sizes=[0] * 40),
         "`depths` needs 1 to 16 stages"),
        (TransGANGeneratorConfig, dict(bottom_width=32, image_size=512, depths=[1, 1, 1, 1, 1],
                                       upsample_types=["bicubic"] * 4, window_sizes=[0, 0, 0, 0, 0]),
         "generator stage 4 attends over 262144 tokens"),
        (TransGANGeneratorConfig, dict(hidden_size=8192, depths=[100, 100, 100]), "describes about .* parameters"),
        (TransGANDiscriminatorConfig, dict(global_depths=[0, 10**9]), r"`global_depths` entries must be in"),
        (TransGANDiscriminatorConfig, dict(image_size=10**9), "`image_size` must be in"),
        (TransGANDiscriminatorConfig, dict(patch_embed_dims=[2**20, 32], hidden_size=2**20 + 32),
         "`hidden_size` must be in"),
        (TransGANDiscriminatorConfig, dict(patch_embed_dims=[8192, 8192], hidden_size=16384, depths=[10, 10]),
         "describes about .* parameters"),
    ],
)
def test_size_limits_are_checked_before_anything_is_allocated(monkeypatch, config_class, overrides, match):
    monkeypatch.setattr(torch.nn.Module, "__init__", None)  # building any module would fail differently
    with pytest.raises(ValueError, match=match):
        config_class.from_preset("tiny", **overrides)


def test_parameter_estimates_match_the_models():
    for preset in TransGANGeneratorConfig.available_presets():
        configs = TransGANGeneratorConfig.from_preset(preset), TransGANDiscriminatorConfig.from_preset(preset)
        with torch.device("meta"):
            models = TransGANGenerator(configs[0]), TransGANDiscriminator(configs[1])
        for config, model in zip(configs, models):
            count = sum(p.numel() for p in model.parameters())
            assert count <= config.estimated_num_parameters <= count * 1.001 < MAX_PARAMETERS, preset


# ---------------------------------------------------------------------------------------------------------------------
# Pipeline folders
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "match"),
    [
        ("[1, 2]", "must hold a JSON object, not a list"),
        ('{"_class_name": "TransGANPipeline"}', "declares no TransGANGenerator component"),
        ('{"_class_name": "TransGANPipeline", "generator": "TransGANGenerator"}',
         r"has 'generator': \"TransGANGenerator\", but it must be \[\"<library>\", \"TransGANGenerator\"\]"),
        ('{"_class_name": "TransGANPipeline", "generator": ["transgan_hf", "TransGANDiscriminator"]}',
         "has 'generator'"),
        ('{"_class_name": "TransGANPipeline", "generator": ["transgan_hf", "TransGANGenerator"], '
         '"discriminator": ["transgan_hf", "Critic"]}',
         r"has 'discriminator': .* must be \[\"<library>\", \"TransGANDiscriminator\"\] or \[null, null\]"),
        ('{"_class_name": "TransGANPipeline", "generator": ["transgan_hf", "TransGANGenerator"], '
         '"vae": ["diffusers", "AutoencoderKL"]}', "declares a component 'vae' that a TransGANPipeline does not have"),
        ('{"_class_name": 3, "generator": ["transgan_hf", "TransGANGenerator"]}', "describes a 3 pipeline"),
    ],
)
def test_bad_model_index_names_the_file_and_the_fix(pipeline_folder, index, match):
    path = pipeline_folder / "model_index.json"
    path.write_text(index)
    message = one_line_error(OSError, f"{path}' {match}", lambda: TransGANPipeline.from_pretrained(pipeline_folder))
    assert "TransGANPipeline" in message


def test_truncated_pipeline_folders(pipeline_folder):
    (pipeline_folder / "generator" / "model.safetensors").unlink()
    one_line_error(OSError, "generator/model.safetensors' is missing, .*save it again",
                   lambda: TransGANPipeline.from_pretrained(pipeline_folder))
    shutil.rmtree(pipeline_folder / "generator")
    one_line_error(OSError, "has no generator/ folder", lambda: TransGANPipeline.from_pretrained(pipeline_folder))


# ---------------------------------------------------------------------------------------------------------------------
# Permissions
# ---------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(folder: Path) -> set[tuple[str, int]]:
    return {("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode)) for p in [folder, *folder.rglob("*")]}


@pytest.mark.parametrize(("mask", "folder_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_saved_folders_and_files_follow_the_umask(tmp_path, mask, folder_mode, file_mode):
    torch.manual_seed(0)
    generator = TransGANGenerator(TransGANGeneratorConfig(**GENERATOR))
    with umask(mask):
        generator.save_pretrained(tmp_path / "generator")
        TransGANPipeline(generator).save_pretrained(tmp_path / "pipe")
        TransGANPipeline(generator).save_pretrained(tmp_path / "pipe")  # over an existing folder
        update_model_card_metrics(tmp_path / "pipe", [{"name": "FID", "type": "fid", "value": 9.5, "dataset": "d"}])
    assert modes(tmp_path / "generator") == {("dir", folder_mode), ("file", file_mode)}
    assert modes(tmp_path / "pipe") == {("dir", folder_mode), ("file", file_mode)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator", "pipe"]  # no staging folders left
