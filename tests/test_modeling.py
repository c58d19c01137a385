"""Configurations and models: parameter counts, validation, attention math, save/load, seeding, checkpointing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

from transgan_hf import (
    TransGANDiscriminator,
    TransGANDiscriminatorConfig,
    TransGANGenerator,
    TransGANGeneratorConfig,
)
from transgan_hf.attention import AttentionWithBiasGradient
from transgan_hf.modeling_transgan import (
    TransGANSelfAttention,
    relative_position_index,
    window_partition,
    window_reverse,
)
from transgan_hf.training.losses import gradient_penalty

OFFICIAL_PARAMETER_COUNTS = {
    "cifar10": (83_312_495, 10_210_400),
    "stl10": (168_466_623, 10_341_536),
    "celeba_hq_256": (212_903_275, 13_334_593),
    "church_256": (205_291_952, 17_754_569),
}


def small_generator_config(**overrides) -> TransGANGeneratorConfig:
    values = dict(latent_dim=16, bottom_width=4, image_size=16, hidden_size=64, depths=[1, 1, 1],
                  upsample_types=["pixel_shuffle", "pixel_shuffle"], window_sizes=[0, 0, 8], noise_injection=True)
    values.update(overrides)
    return TransGANGeneratorConfig(**values)


def small_discriminator_config(**overrides) -> TransGANDiscriminatorConfig:
    values = dict(image_size=16, patch_size=2, patch_embed_dims=[24, 8], hidden_size=32, depths=[1, 1],
                  window_sizes=[4, 0], global_depths=[1, 0], noise_injection=True)
    values.update(overrides)
    return TransGANDiscriminatorConfig(**values)


def with_nonzero_noise(model: torch.nn.Module) -> torch.nn.Module:
    """Noise strengths start at 0; give them a value so that noise changes the output."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("attention.noise_strength"):
                param.fill_(0.5)
    return model


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset", sorted(OFFICIAL_PARAMETER_COUNTS))
def test_official_presets_have_official_parameter_counts(preset):
    with torch.device("meta"):
        generator = TransGANGenerator(TransGANGeneratorConfig.from_preset(preset))
        discriminator = TransGANDiscriminator(TransGANDiscriminatorConfig.from_preset(preset))
    assert (num_parameters(generator), num_parameters(discriminator)) == OFFICIAL_PARAMETER_COUNTS[preset]


def bias_attentions(model: torch.nn.Module) -> list[TransGANSelfAttention]:
    return [m for m in model.modules() if isinstance(m, TransGANSelfAttention) and m.bias_window]


def assert_indices_are_exact(model: torch.nn.Module) -> None:
    attentions = bias_attentions(model)
    assert attentions
    for attention in attentions:
        index = attention.relative_position_index
        assert index.dtype == torch.int64
        assert torch.equal(index.cpu(), relative_position_index(attention.bias_window))


def test_relative_position_index_is_a_buffer_outside_the_state_dict():
    """Each attention owns its index as a non-persistent int64 buffer: never saved, and a cast to bf16 leaves it
    an exact integer index."""
    model = TransGANGenerator(small_generator_config())
    assert not any("index" in key for key in model.state_dict())
    assert len(list(model.buffers())) == len(bias_attentions(model)) == 3
    assert_indices_are_exact(model)
    assert_indices_are_exact(model.to(torch.bfloat16))
    assert_indices_are_exact(TransGANDiscriminator(small_discriminator_config()).half())


def test_relative_position_index_is_rebuilt_by_from_pretrained(tmp_path):
    """`from_pretrained` builds the model on the meta device and leaves non-persistent buffers empty; `_init_weights`
    fills them, in float32 and in a bf16 load."""
    generator = TransGANGenerator(small_generator_config())
    discriminator = TransGANDiscriminator(small_discriminator_config())
    generator.save_pretrained(tmp_path / "g")
    discriminator.save_pretrained(tmp_path / "d")
    for dtype in (torch.float32, torch.bfloat16):
        assert_indices_are_exact(TransGANGenerator.from_pretrained(tmp_path / "g", dtype=dtype))
        assert_indices_are_exact(TransGANDiscriminator.from_pretrained(tmp_path / "d", dtype=dtype))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(window_sizes=[0, 0, 5]), "window_sizes"),
        (dict(num_attention_heads=3), "num_attention_heads"),
        (dict(hidden_size=66), "pixel-shuffle"),
        (dict(image_size=32), "image_size"),
        (dict(norm_type="rms"), "'ln', 'pn', 'bn', 'in', 'none'"),
        (dict(hidden_act="swish"), "hidden_act"),
        (dict(upsample_types=["pixel_shuffle", "nearest"]), "upsample_types"),
        (dict(upsample_types=["pixel_shuffle"]), "upsample_types"),
        (dict(depths=[1, -1, 1]), "depths"),
    ],
)
def test_invalid_generator_configs_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        small_generator_config(**overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(window_sizes=[3, 0]), "window_sizes"),
        (dict(hidden_size=40), "hidden_size"),
        (dict(image_size=18), "image_size"),
        (dict(patch_embed_dims=[22, 10]), "num_attention_heads"),
        (dict(norm_type="layer"), "norm_type"),
        (dict(cls_token_position="middle"), "cls_token_position"),
        (dict(depths=[1]), "depths"),
    ],
)
def test_invalid_discriminator_configs_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        small_discriminator_config(**overrides)


def test_unknown_preset_lists_choices():
    with pytest.raises(ValueError, match="'celeba_hq_256', 'church_256', 'cifar10', 'stl10', 'tiny'"):
        TransGANGeneratorConfig.from_preset("imagenet")


def test_presets_accept_overrides():
    config = TransGANGeneratorConfig.from_preset("cifar10", norm_type="pn")
    assert config.norm_type == "pn" and config.depths == [5, 4, 2]


def test_relative_position_index_matches_swin_formula():
    window = 3
    index = relative_position_index(window)
    for i in range(window * window):
        for j in range(window * window):
            (yi, xi), (yj, xj) = divmod(i, window), divmod(j, window)
            assert index[i, j] == (yi - yj + window - 1) * (2 * window - 1) + (xi - xj + window - 1)


def test_relative_position_bias_gradient_is_exact_and_deterministic():
    """The bias table's gradient sums the map gradient over every query/key pair with the same offset (32x32 grid:
    1M pairs onto 3,969 offsets), and on two threads it is bitwise the same from run to run."""
    attention = TransGANSelfAttention(small_generator_config(), dim=8, bias_window=32)
    grad_map = torch.randn(1, 4, 1024, 1024, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gradients = []
        for _ in range(3):
            attention.zero_grad(set_to_none=True)
            attention.relative_position_bias().backward(grad_map)
            gradients.append(attention.relative_position_bias_table.grad.clone())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(gradients[0], other) for other in gradients[1:])
    index = relative_position_index(32).view(-1)
    expected = torch.zeros(63 * 63, 4, dtype=torch.float64).index_put_(
        (index,), grad_map[0].permute(1, 2, 0).reshape(-1, 4).double(), accumulate=True)
    torch.testing.assert_close(gradients[0].double(), expected, rtol=1e-5, atol=1e-4)


def test_window_partition_groups_square_windows_and_reverses():
    grid, window = 4, 2
    tokens = torch.arange(grid * grid, dtype=torch.float32).view(1, grid * grid, 1)
    windows = window_partition(tokens, grid, window)
    assert windows.shape == (4, 4, 1)
    assert windows[0, :, 0].tolist() == [0, 1, 4, 5]  # top-left window, row-major inside
    assert windows[1, :, 0].tolist() == [2, 3, 6, 7]  # next window to the right
    assert torch.equal(window_reverse(windows, grid, window), tokens)


def test_sdpa_attention_matches_explicit_softmax_with_bias():
    torch.manual_seed(0)
    attention = TransGANSelfAttention(small_generator_config(noise_injection=False), dim=16, bias_window=3)
    torch.nn.init.normal_(attention.relative_position_bias_table, std=1.0)
    x = torch.randn(2, 9, 16)
    q, k, v = attention.qkv(x).view(2, 9, 3, 4, 4).permute(2, 0, 3, 1, 4)
    index = attention.relative_position_index
    bias = attention.relative_position_bias_table[index.view(-1)].view(9, 9, 4).permute(2, 0, 1)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(4) + bias, dim=-1)
    expected = attention.proj((weights @ v).transpose(1, 2).reshape(2, 9, 16))
    torch.testing.assert_close(attention(x), expected, atol=1e-5, rtol=1e-5)


def explicit_attention(q, k, v, bias):
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + bias, dim=-1) @ v


def attention_gradients(function, inputs, grad_output):
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    output = function(*inputs)
    output.backward(grad_output.to(output.dtype))
    return [output.detach().double()] + [t.grad.double() for t in inputs]


@pytest.mark.parametrize("chunk_elements", [1, 3 * 36 * 36, 2**18])  # one sample / uneven chunks / whole batch
def test_attention_with_bias_gradient_matches_explicit_attention(monkeypatch, chunk_elements):
    monkeypatch.setattr(AttentionWithBiasGradient, "chunk_elements", chunk_elements)
    torch.manual_seed(0)
    q, k, v = (torch.randn(7, 2, 36, 8) for _ in range(3))
    bias = torch.randn(1, 2, 36, 36)
    grad_output = torch.randn(7, 2, 36, 8)
    ours = attention_gradients(AttentionWithBiasGradient.apply, (q, k, v, bias), grad_output)
    expected = attention_gradients(explicit_attention, [t.double() for t in (q, k, v, bias)], grad_output)
    for name, a, b in zip(("output", "query", "key", "value", "bias"), ours, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)


def test_attention_with_bias_gradient_in_bfloat16_is_as_accurate_as_sdpa():
    """Against a float64 reference, our bf16 gradients are no worse than those of SDPA's bf16 math path."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(4, 4, 256, 16) for _ in range(3))
    bias = torch.randn(1, 4, 256, 256) * 0.5
    grad_output = torch.randn(4, 4, 256, 16)
    expected = attention_gradients(explicit_attention, [t.double() for t in (q, k, v, bias)], grad_output)
    low = [t.bfloat16() for t in (q, k, v, bias)]
    ours = attention_gradients(AttentionWithBiasGradient.apply, low, grad_output)
    sdpa = attention_gradients(lambda *t: F.scaled_dot_product_attention(*t[:3], attn_mask=t[3]), low, grad_output)
    for name, a, s, b in zip(("output", "query", "key", "value", "bias"), ours, sdpa, expected):
        error, sdpa_error = ((a - b).norm() / b.norm()).item(), ((s - b).norm() / b.norm()).item()
        assert error < 1e-2 and error <= 1.5 * sdpa_error, (name, error, sdpa_error)


def test_generator_training_uses_the_bias_gradient_kernel_and_matches_sdpa(monkeypatch):
    config = small_generator_config(window_sizes=[0, 0, 4])
    torch.manual_seed(0)
    fast = with_nonzero_noise(TransGANGenerator(config)).train()
    assert fast.config._attn_implementation == "cpu_bias_gradient"  # the generator's default
    for module in fast.modules():
        if isinstance(module, TransGANSelfAttention):
            torch.nn.init.normal_(module.relative_position_bias_table, std=0.5)
    reference = TransGANGenerator(small_generator_config(window_sizes=[0, 0, 4], attn_implementation="sdpa")).train()
    assert reference.config._attn_implementation == "sdpa"
    reference.load_state_dict(fast.state_dict())
    calls = []
    apply = AttentionWithBiasGradient.apply
    monkeypatch.setattr(AttentionWithBiasGradient, "apply", lambda *args: calls.append(args[0].shape) or apply(*args))
    latents = torch.randn(3, 16)
    for model in (fast, reference):
        model(latents, noise_generator=torch.Generator().manual_seed(5)).images.square().mean().backward()
    assert len(calls) == sum(config.depths)  # every generator attention, none in the SDPA reference
    for (name, a), (_, b) in zip(fast.named_parameters(), reference.named_parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_discriminator_attention_stays_differentiable_twice():
    """The gradient penalty differentiates D twice; the generator-only kernel refuses that with a clear error."""
    config = small_discriminator_config(window_sizes=[0, 0], global_depths=[0, 0])
    discriminator = TransGANDiscriminator(config)
    attentions = bias_attentions(discriminator)
    assert attentions and discriminator.config._attn_implementation == "sdpa"
    real, fake = (torch.randn(2, 3, config.image_size, config.image_size) for _ in range(2))
    gradient_penalty(discriminator, real, fake).backward()
    assert all(m.relative_position_bias_table.grad.abs().sum() > 0 for m in attentions)
    q, k, v = (torch.randn(1, 1, 4, 2, requires_grad=True) for _ in range(3))
    bias = torch.randn(1, 1, 4, 4, requires_grad=True)
    output = AttentionWithBiasGradient.apply(q, k, v, bias)
    (grad_q,) = torch.autograd.grad(output.square().sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_q.sum().backward()


def test_attention_implementation_is_chosen_once_by_configuration(tmp_path, monkeypatch):
    generator = TransGANGenerator(small_generator_config(window_sizes=[0, 0, 4]))
    generator.save_pretrained(tmp_path)
    assert "attn_implementation" not in (tmp_path / "config.json").read_text()  # saved configs are unchanged
    assert TransGANGenerator.from_pretrained(tmp_path, attn_implementation="sdpa").config._attn_implementation == "sdpa"
    # `eager`, which transformers set on these models before they chose a kernel, still means the model's default
    eager = TransGANGenerator.from_pretrained(tmp_path, attn_implementation="eager")
    assert eager.config._attn_implementation == "cpu_bias_gradient"
    with pytest.raises(ValueError, match="'flash_attention_2' is not supported by TransGANGenerator; valid choices are "
                                         "'sdpa', 'cpu_bias_gradient'"):
        TransGANGenerator.from_pretrained(tmp_path, attn_implementation="flash_attention_2")
    calls = []
    apply = AttentionWithBiasGradient.apply
    monkeypatch.setattr(AttentionWithBiasGradient, "apply", lambda *args: calls.append(1) or apply(*args))
    generator.set_attn_implementation("sdpa")
    generator(torch.randn(2, 16)).images.mean().backward()
    assert not calls
    generator.set_attn_implementation("cpu_bias_gradient")
    generator(torch.randn(2, 16)).images.mean().backward()
    assert len(calls) == sum(generator.config.depths)


def test_generator_and_discriminator_shapes_and_dtypes():
    generator = TransGANGenerator(small_generator_config())
    discriminator = TransGANDiscriminator(small_discriminator_config())
    images = generator(torch.randn(3, 16)).images
    assert images.shape == (3, 3, 16, 16)
    logits = discriminator(images).logits
    assert logits.shape == (3, 1)
    assert generator(torch.randn(2, 16), return_dict=False)[0].shape == (2, 3, 16, 16)


def test_bad_inputs_are_rejected_with_shapes():
    generator = TransGANGenerator(small_generator_config())
    with pytest.raises(ValueError, match=r"\(batch, 16\)"):
        generator(torch.randn(2, 8))
    discriminator = TransGANDiscriminator(small_discriminator_config())
    with pytest.raises(ValueError, match=r"\(batch, 3, 16, 16\)"):
        discriminator(torch.randn(2, 3, 32, 32))


def test_seeded_noise_is_reproducible_and_per_sample():
    generator = with_nonzero_noise(TransGANGenerator(small_generator_config())).eval()
    latents = torch.randn(3, 16)
    with torch.no_grad():
        a = generator(latents, noise_generator=torch.Generator().manual_seed(1)).images
        b = generator(latents, noise_generator=torch.Generator().manual_seed(1)).images
        c = generator(latents, noise_generator=torch.Generator().manual_seed(2)).images
        batch = generator(latents, noise_generator=[torch.Generator().manual_seed(s) for s in (7, 8, 9)]).images
        alone = generator(latents[1:2], noise_generator=[torch.Generator().manual_seed(8)]).images
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # Same draws; the batched matmuls may round differently in the last bits.
    torch.testing.assert_close(batch[1:2], alone, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="one per sample"):
        generator(latents, noise_generator=[torch.Generator()])


def test_save_load_and_automodel_round_trip(tmp_path):
    generator = with_nonzero_noise(TransGANGenerator(small_generator_config())).eval()
    discriminator = with_nonzero_noise(TransGANDiscriminator(small_discriminator_config())).eval()
    generator.save_pretrained(tmp_path / "g")
    discriminator.save_pretrained(tmp_path / "d")
    assert (tmp_path / "g" / "model.safetensors").is_file()
    assert AutoConfig.from_pretrained(tmp_path / "g").model_type == "transgan_generator"
    loaded_g = AutoModel.from_pretrained(tmp_path / "g").eval()
    loaded_d = TransGANDiscriminator.from_pretrained(tmp_path / "d").eval()
    assert isinstance(loaded_g, TransGANGenerator)
    latents = torch.randn(2, 16)
    with torch.no_grad():
        images = generator(latents, noise_generator=torch.Generator().manual_seed(3)).images
        loaded_images = loaded_g(latents, noise_generator=torch.Generator().manual_seed(3)).images
        logits = discriminator(images, noise_generator=torch.Generator().manual_seed(4)).logits
        loaded_logits = loaded_d(images, noise_generator=torch.Generator().manual_seed(4)).logits
    assert torch.equal(images, loaded_images)
    assert torch.equal(logits, loaded_logits)


def test_initialisation_follows_the_official_scheme():
    torch.manual_seed(0)
    generator = TransGANGenerator(small_generator_config(hidden_size=256))
    discriminator = TransGANDiscriminator(small_discriminator_config())
    # Generator Linear layers keep PyTorch's default U(+-1/sqrt(fan_in)) init.
    weight = generator.latent_proj.weight
    bound = 1 / math.sqrt(weight.shape[1])
    assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound
    assert generator.latent_proj.bias.abs().max() <= bound and generator.latent_proj.bias.abs().max() > 0
    # Discriminator Linear layers: truncated normal std 0.02, zero bias.
    fc1 = discriminator.scales[0].blocks[0].mlp.fc1
    assert abs(fc1.weight.std().item() - 0.02) < 0.004 and torch.count_nonzero(fc1.bias) == 0
    # Position embeddings and bias tables: std 0.02; noise strengths: 0; conv weights: xavier-uniform bound.
    assert abs(generator.stages[0].position_embedding.std().item() - 0.02) < 0.005
    assert torch.count_nonzero(generator.stages[0].blocks[0].attention.noise_strength) == 0
    conv = discriminator.scales[0].patch_embedding.weight
    xavier = math.sqrt(6 / (conv.shape[0] * conv[0, 0].numel() + conv.shape[1] * conv[0, 0].numel()))
    assert conv.abs().max() <= xavier and conv.abs().max() > 0.8 * xavier


def test_gradient_checkpointing_gives_the_same_gradients():
    config = small_generator_config()
    torch.manual_seed(0)
    reference = with_nonzero_noise(TransGANGenerator(config)).train()
    checkpointed = with_nonzero_noise(TransGANGenerator(config)).train()
    checkpointed.load_state_dict(reference.state_dict())
    checkpointed.activation_checkpointing_enable()  # transformers 5: the new name of gradient_checkpointing_enable
    latents = torch.randn(2, 16)
    for model in (reference, checkpointed):
        images = model(latents, noise_generator=torch.Generator().manual_seed(5)).images
        images.square().mean().backward()
    for (name, a), (_, b) in zip(reference.named_parameters(), checkpointed.named_parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("norm_type", ["pn", "bn", "in", "none"])
def test_every_norm_type_runs_forward_and_backward(norm_type):
    generator = TransGANGenerator(small_generator_config(norm_type=norm_type))
    discriminator = TransGANDiscriminator(small_discriminator_config(norm_type=norm_type))
    logits = discriminator(generator(torch.randn(2, 16)).images).logits
    logits.mean().backward()
    assert torch.isfinite(logits).all()
    if norm_type == "none":
        assert discriminator.scales[0].blocks[0].residual_gain == pytest.approx(math.sqrt(0.5))


def test_upsample_kinds_and_latent_cross_attention():
    config = small_generator_config(
        depths=[0, 1, 1], upsample_types=["bicubic", "updown_pixel_shuffle"], window_sizes=[0, 0, 4],
        latent_cross_attention=True, num_latent_tokens=4, hidden_size=64, latent_norm=True,
    )
    generator = TransGANGenerator(config)
    assert config.stage_dims == [64, 64, 16]
    frozen = [n for n, p in generator.named_parameters() if not p.requires_grad]
    assert frozen and all(n.endswith("cross_attention.noise_strength") for n in frozen)
    images = generator(torch.randn(2, 16)).images
    assert images.shape == (2, 3, 16, 16)
    images.mean().backward()
    assert generator.stages[1].blocks[0].cross_attention.k.weight.grad is not None


def test_cls_token_at_input_discriminator():
    config = small_discriminator_config(
        patch_embed_dims=[32], hidden_size=32, depths=[2], window_sizes=[0], global_depths=[0],
        cls_token_position="input", use_relative_position_bias=False,
    )
    discriminator = TransGANDiscriminator(config)
    assert discriminator.last_block is None
    assert discriminator.scales[0].position_embedding.shape == (1, 65, 32)
    assert discriminator(torch.randn(2, 3, 16, 16)).logits.shape == (2, 1)


def test_bfloat16_autocast_stays_close_to_float32():
    torch.manual_seed(0)
    generator = TransGANGenerator(small_generator_config(noise_injection=False))
    discriminator = TransGANDiscriminator(small_discriminator_config(noise_injection=False))
    latents = torch.randn(4, 16)
    with torch.no_grad():
        images = generator(latents).images
        logits = discriminator(images).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16_images = generator(latents).images
            bf16_logits = discriminator(images).logits
    assert torch.isfinite(bf16_logits.float()).all()
    assert F.l1_loss(bf16_images.float(), images) < 0.05 * images.abs().mean()
    assert F.l1_loss(bf16_logits.float(), logits) < 0.05 * logits.abs().mean() + 1e-2
