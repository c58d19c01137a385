"""Official checkpoint conversion: fixture parity, every official layout, and every malformed-input error."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import official_checkpoint_from, reduced_official_args
from transformers import AutoModel

import transgan_hf  # noqa: F401  (registers the Auto classes)
from transgan_hf.convert_official import (
    OFFICIAL_PRESETS,
    ConversionError,
    configs_from_official_args,
    configs_from_preset,
    convert,
    main,
    official_discriminator_key,
    official_generator_key,
)
from transgan_hf.modeling_transgan import TransGANDiscriminator, TransGANGenerator

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official"
CHECKPOINT = FIXTURES / "cifar_small_checkpoint.pth"
ARGS = FIXTURES / "cifar_small_args.json"
needs_fixture = pytest.mark.skipif(not CHECKPOINT.is_file(), reason="official fixture (../shared) not available")


def load_generator_and_discriminator(folder: Path):
    generator = AutoModel.from_pretrained(folder / "generator").eval()
    discriminator = AutoModel.from_pretrained(folder / "discriminator").eval()
    return generator, discriminator


@needs_fixture
def test_fixture_converts_and_reproduces_official_outputs(tmp_path):
    out = tmp_path / "converted"
    assert main(["--checkpoint", str(CHECKPOINT), "--official_args", str(ARGS), "--output_dir", str(out)]) == 0
    generator, discriminator = load_generator_and_discriminator(out)
    assert isinstance(generator, TransGANGenerator) and isinstance(discriminator, TransGANDiscriminator)
    assert sum(p.numel() for p in generator.parameters()) == 1_452_511
    assert sum(p.numel() for p in discriminator.parameters()) == 150_508
    io = np.load(FIXTURES / "cifar_small_io.npz")
    with torch.no_grad():
        images = generator(torch.from_numpy(io["z"])).images
        logits = discriminator(torch.from_numpy(io["disc_input"])).logits
    image_error = (images - torch.from_numpy(io["images"])).abs().max().item()
    logit_error = (logits - torch.from_numpy(io["disc_logits"])).abs().max().item()
    print(f"official fixture parity: images max abs {image_error:.2e}, logits max abs {logit_error:.2e}")
    assert image_error <= 1e-5 and logit_error <= 1e-5


@needs_fixture
def test_raw_weights_option(tmp_path):
    out = tmp_path / "raw"
    convert(CHECKPOINT, out, official_args=ARGS, weights="raw")
    assert (out / "generator" / "model.safetensors").is_file()


# The documented official key layouts (spec §5 and the official classes): a few names per architecture, and the
# number of parameter entries each official state dict holds.
OFFICIAL_LAYOUT = {
    "cifar10": (139, 101, [
        ("g", "blocks.block.4.attn.relative_position_bias_table", (225, 4)),
        ("g", "upsample_blocks.1.block.1.mlp.fc2.weight", (64, 256)),
        ("g", "deconv.0.weight", (3, 64, 1, 1)),
        ("d", "blocks_1.2.attn.noise_strength_1", ()),
        ("d", "fRGB_2.weight", (96, 3, 4, 4)),
        ("d", "last_block.0.attn.qkv.weight", (1152, 384)),
        ("d", "norm.norm.weight", (384,)),
    ]),
    "stl10": (127, 71, [
        ("g", "l1.weight", (147456, 512)),
        ("d", "blocks_1.0.attn.relative_position_bias_table", (47 * 47, 4)),
    ]),
    "celeba_hq_256": (313, 135, [
        ("g", "embed_pos", (1, 64, 1024)),
        ("g", "embedding_transform.weight", (65536, 512)),
        ("g", "blocks_2.block.0.cross_attention.k_transform.weight", (1024, 1024)),
        ("g", "blocks_6.block.3.cross_attention.v_transform.weight", (16, 1024)),
        ("g", "blocks_5.block.0.cross_attention.noise_strength_1", ()),
        ("g", "blocks_4.block.2.attn.relative_position_bias_table", (961, 4)),
        ("g", "pos_embed_1", (1, 64, 1024)),
        ("d", "fRGB_1.weight", (96, 3, 4, 4)),
        ("d", "blocks_21.0.attn.qkv.weight", (576, 192)),
        ("d", "blocks_3.3.mlp.fc1.weight", (1536, 384)),
    ]),
    "church_256": (235, 145, [
        ("g", "blocks_1.block.4.attn.noise_strength_1", ()),
        ("g", "blocks_3.block.0.attn.relative_position_bias_table", (3969, 4)),
        ("g", "blocks_6.block.3.attn.qkv.weight", (48, 16)),
        ("d", "blocks_11.0.attn.relative_position_bias_table", (16129, 4)),
        ("d", "fRGB_3.weight", (48, 3, 16, 16)),
        ("d", "pos_embed_2", (1, 1024, 336)),
        ("d", "blocks_1.1.attn.relative_position_bias_table", (961, 4)),
    ]),
}


@pytest.mark.parametrize("preset", sorted(OFFICIAL_PRESETS))
def test_official_key_names_of_every_preset(preset):
    num_g, num_d, samples = OFFICIAL_LAYOUT[preset]
    g_config, d_config = configs_from_preset(preset)
    gen_model, _ = OFFICIAL_PRESETS[preset]
    with torch.device("meta"):
        generator, discriminator = TransGANGenerator(g_config), TransGANDiscriminator(d_config)
    g_keys = {official_generator_key(k, gen_model): tuple(v.shape) for k, v in generator.state_dict().items()}
    d_keys = {official_discriminator_key(k, d_config): tuple(v.shape) for k, v in discriminator.state_dict().items()}
    assert (len(g_keys), len(d_keys)) == (num_g, num_d)
    for network, key, shape in samples:
        assert (g_keys if network == "g" else d_keys)[key] == shape, key


@pytest.mark.parametrize("preset", sorted(OFFICIAL_PRESETS))
def test_every_official_layout_converts_back_to_identical_models(preset, tmp_path):
    args = reduced_official_args(preset)
    g_config, d_config = configs_from_official_args(args)
    torch.manual_seed(0)
    generator, discriminator = TransGANGenerator(g_config).eval(), TransGANDiscriminator(d_config).eval()
    checkpoint = official_checkpoint_from(generator, discriminator, args["gen_model"], d_config)
    checkpoint["dis_model"] = args["dis_model"]
    torch.save(checkpoint, tmp_path / "checkpoint")
    (tmp_path / "args.json").write_text(json.dumps(args))
    out = tmp_path / "out"
    convert(tmp_path / "checkpoint", out, official_args=tmp_path / "args.json")
    loaded_g, loaded_d = load_generator_and_discriminator(out)
    latents = torch.randn(2, 16)
    with torch.no_grad():
        images = generator(latents, noise_generator=torch.Generator().manual_seed(0)).images
        loaded = loaded_g(latents, noise_generator=torch.Generator().manual_seed(0)).images
        assert torch.equal(images, loaded)
        assert torch.equal(discriminator(images).logits, loaded_d(images).logits)


@pytest.fixture()
def small_checkpoint(tmp_path):
    args = reduced_official_args("cifar10")
    g_config, d_config = configs_from_official_args(args)
    checkpoint = official_checkpoint_from(TransGANGenerator(g_config), TransGANDiscriminator(d_config),
                                          args["gen_model"], d_config)
    checkpoint["dis_model"] = args["dis_model"]
    (tmp_path / "args.json").write_text(json.dumps(args))
    return checkpoint, tmp_path / "args.json"


def assert_fails_cleanly(tmp_path, checkpoint_path, args_path, match):
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match=match):
        convert(checkpoint_path, out, official_args=args_path)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_missing_keys_are_listed(small_checkpoint, tmp_path):
    checkpoint, args = small_checkpoint
    del checkpoint["avg_gen_state_dict"]["module.l1.bias"]
    torch.save(checkpoint, tmp_path / "ckpt")
    assert_fails_cleanly(tmp_path, tmp_path / "ckpt", args, r"missing keys \(1\): l1.bias")


def test_unmapped_keys_are_listed(small_checkpoint, tmp_path):
    checkpoint, args = small_checkpoint
    checkpoint["dis_state_dict"]["module.extra_head.weight"] = torch.zeros(3)
    torch.save(checkpoint, tmp_path / "ckpt")
    assert_fails_cleanly(tmp_path, tmp_path / "ckpt", args, r"unmapped keys \(1\): extra_head.weight")


def test_wrong_shapes_are_listed(small_checkpoint, tmp_path):
    checkpoint, args = small_checkpoint
    checkpoint["avg_gen_state_dict"]["module.pos_embed_1"] = torch.zeros(1, 3, 3)
    torch.save(checkpoint, tmp_path / "ckpt")
    assert_fails_cleanly(tmp_path, tmp_path / "ckpt", args, r"wrong shapes \(1\): pos_embed_1: checkpoint \(1, 3, 3\)")


def test_truncated_file(small_checkpoint, tmp_path):
    checkpoint, args = small_checkpoint
    torch.save(checkpoint, tmp_path / "ckpt")
    data = (tmp_path / "ckpt").read_bytes()
    (tmp_path / "truncated").write_bytes(data[: len(data) // 2])
    assert_fails_cleanly(tmp_path, tmp_path / "truncated", args, "truncated or not a checkpoint")


class NotAWeight:
    pass


def test_non_checkpoint_pickle_is_refused_without_running_it(small_checkpoint, tmp_path):
    _, args = small_checkpoint
    with open(tmp_path / "evil.pkl", "wb") as handle:
        pickle.dump({"gen_state_dict": NotAWeight()}, handle)
    assert_fails_cleanly(tmp_path, tmp_path / "evil.pkl", args, "weights-only load refuses")
    torch.save({"some": torch.zeros(1)}, tmp_path / "other.pt")
    assert_fails_cleanly(tmp_path, tmp_path / "other.pt", args, "not an official TransGAN training checkpoint")


def test_mismatched_architecture_and_existing_output(small_checkpoint, tmp_path):
    checkpoint, args = small_checkpoint
    torch.save(checkpoint, tmp_path / "ckpt")
    with pytest.raises(ConversionError, match="trained with ViT_custom_rp"):
        convert(tmp_path / "ckpt", tmp_path / "out", preset="church_256")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="--overwrite"):
        convert(tmp_path / "ckpt", tmp_path / "busy", official_args=args)
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


def test_command_line_errors_are_one_line(tmp_path, capsys):
    argv = ["--checkpoint", str(tmp_path / "nope"), "--preset", "cifar10", "--output_dir", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Checkpoint file") and "does not exist" in err[0]
