"""TransGANPipeline: seeded sampling, truncation, discriminator ranking, interpolation, save/load (local folder, HF
cache by Hub id offline), push_to_hub at the huggingface_hub boundary, and every bad-input error. Remote code:
test_remote_code.py."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from helpers import COMMIT, place_in_hub_cache, seeds, tiny_pipeline

from transgan_hf import (
    TransGANDiscriminator,
    TransGANDiscriminatorConfig,
    TransGANGenerator,
    TransGANPipeline,
)
from transgan_hf.modeling_transgan import TransGANDiscriminatorOutput
from transgan_hf.sampling import available_memory_bytes, slerp

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official"

# ---------------------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------------------


def test_seeded_calls_repeat_bit_for_bit_across_output_types():
    pipe = tiny_pipeline()
    pt = pipe(batch_size=3, generator=seeds(0, 1, 2), output_type="pt").images
    again = pipe(batch_size=3, generator=seeds(0, 1, 2), output_type="pt").images
    np_images = pipe(batch_size=3, generator=seeds(0, 1, 2), output_type="np").images
    pil = pipe(batch_size=3, generator=seeds(0, 1, 2)).images
    assert pt.shape == (3, 3, 16, 16) and pt.min() >= 0 and pt.max() <= 1
    assert torch.equal(pt, again)
    assert np.array_equal(np_images, pt.permute(0, 2, 3, 1).numpy())
    assert [im.size for im in pil] == [(16, 16)] * 3
    assert np.array_equal(np.stack([np.asarray(im) for im in pil]), (np_images * 255).round().astype(np.uint8))
    single = pipe(batch_size=3, generator=torch.Generator().manual_seed(7), output_type="pt").images
    assert torch.equal(single, pipe(batch_size=3, generator=torch.Generator().manual_seed(7), output_type="pt").images)
    assert not torch.equal(pt, pipe(batch_size=3, generator=seeds(3, 4, 5), output_type="pt").images)
    images, = pipe(generator=seeds(0), output_type="pt", return_dict=False)
    assert images.shape == (1, 3, 16, 16)


def test_image_i_equals_its_seed_drawn_alone_noise_included():
    pipe = tiny_pipeline()
    batch = pipe(batch_size=3, generator=seeds(5, 6, 7), output_type="pt").images
    reordered = pipe(batch_size=2, generator=seeds(7, 5), output_type="pt").images
    for i, seed in enumerate((5, 6, 7)):
        alone = pipe(generator=torch.Generator().manual_seed(seed), output_type="pt").images[0]
        # Same latents and noise; only the round-off of batched matrix products may differ.
        torch.testing.assert_close(batch[i], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(reordered, batch[[2, 0]], atol=1e-5, rtol=0)
    # The noise matters: same latent, other noise -> clearly another image. So the checks above cover the noise.
    latent = pipe.sample_latents(1, torch.Generator().manual_seed(5))
    other_noise = pipe(latents=latent, generator=seeds(99), output_type="pt").images[0]
    assert (other_noise - batch[0]).abs().max() > 1e-2


def test_single_generator_for_one_image_is_a_list_of_one():
    pipe = tiny_pipeline()
    for kwargs in ({}, {"truncation": 0.5}, {"num_candidates": 3}):
        single = pipe(generator=torch.Generator().manual_seed(3), output_type="pt", **kwargs).images
        listed = pipe(generator=seeds(3), output_type="pt", **kwargs).images
        assert torch.equal(single, listed)


def test_truncated_latents_follow_the_documented_convention():
    pipe = tiny_pipeline()
    plain = pipe.sample_latents(4000, torch.Generator().manual_seed(0))
    full = pipe.sample_latents(4000, torch.Generator().manual_seed(0), truncation=1.0)
    half = pipe.sample_latents(4000, torch.Generator().manual_seed(0), truncation=0.5)
    assert plain.abs().max() > 3  # 64,000 standard normal values
    assert full.abs().max() <= 2 and full.abs().max() > 1.95
    assert abs(full.std().item() - 0.8796) < 0.01  # std of N(0, 1) truncated to [-2, 2]
    torch.testing.assert_close(half, full * 0.5)
    images = pipe(batch_size=2, generator=seeds(0, 1), truncation=0.5, output_type="pt").images
    assert torch.equal(images, pipe(batch_size=2, generator=seeds(0, 1), truncation=0.5, output_type="pt").images)
    assert not torch.equal(images, pipe(batch_size=2, generator=seeds(0, 1), output_type="pt").images)


class BrightnessCritic(TransGANDiscriminator):
    """Scores an image by its mean brightness, so the expected ranking is known."""

    def forward(self, pixel_values, noise_generator=None, return_dict=None):
        return TransGANDiscriminatorOutput(logits=pixel_values.clamp(-1, 1).mean(dim=(1, 2, 3))[:, None])


def test_num_candidates_keeps_the_images_the_discriminator_scores_highest():
    pipe = tiny_pipeline()
    pipe.discriminator = BrightnessCritic(pipe.discriminator.config)
    generator = torch.Generator().manual_seed(0)
    pool_latents = pipe.sample_latents(12, generator)
    pool = pipe(latents=pool_latents, generator=generator, output_type="pt").images  # noise continues from the same
    brightest_first = pool.mean(dim=(1, 2, 3)).argsort(descending=True)
    best = pipe(batch_size=3, generator=torch.Generator().manual_seed(0), num_candidates=4, output_type="pt").images
    assert torch.equal(best, pool[brightest_first[:3]])
    assert not torch.equal(best, pool[:3])


def test_num_candidates_with_seeds_takes_each_seeds_best_by_the_real_discriminator():
    pipe = tiny_pipeline()
    chosen = []
    for seed in range(6):
        generator = torch.Generator().manual_seed(seed)
        latents = pipe.sample_latents(4, generator)  # documented draw order: latents, G noise, D noise
        with torch.no_grad():
            candidates = pipe.generator(latents, noise_generator=[generator] * 4).images
            scores = pipe.discriminator(candidates, noise_generator=[generator] * 4).logits[:, 0]
        chosen.append(scores.argmax().item())
        expected = (candidates[scores.argmax()] / 2 + 0.5).clamp(0, 1)
        kept = pipe(generator=seeds(seed), num_candidates=4, output_type="pt").images[0]
        assert torch.equal(kept, expected)
    assert set(chosen) != {0}  # the ranking does pick other candidates than the first
    batch = pipe(batch_size=3, generator=seeds(0, 1, 2), num_candidates=4, output_type="pt").images
    for i in range(3):
        alone = pipe(generator=seeds(i), num_candidates=4, output_type="pt").images[0]
        torch.testing.assert_close(batch[i], alone, atol=1e-5, rtol=0)


def test_interpolation_walks_from_seed_a_to_seed_b():
    pipe = tiny_pipeline()
    frames = pipe.interpolate(seed_a=1, seed_b=2, num_steps=5, output_type="pt").images
    assert frames.shape == (5, 3, 16, 16)
    first = pipe(generator=torch.Generator().manual_seed(1), output_type="pt").images[0]
    torch.testing.assert_close(frames[0], first, atol=1e-5, rtol=0)
    noise_of_a = torch.Generator().manual_seed(1)
    pipe.sample_latents(1, noise_of_a)
    latent_b = pipe.sample_latents(1, torch.Generator().manual_seed(2))
    last = pipe(latents=latent_b, generator=[noise_of_a], output_type="pt").images[0]
    torch.testing.assert_close(frames[-1], last, atol=1e-5, rtol=0)
    assert all((frames[i] - frames[i + 1]).abs().max() > 0 for i in range(4))
    pil = pipe.interpolate(1, 2, num_steps=3, truncation=0.7).images
    assert len(pil) == 3
    with pytest.raises(ValueError, match="num_steps"):
        pipe.interpolate(1, 2, num_steps=1)
    with pytest.raises(ValueError, match="seed_a"):
        pipe.interpolate(-1, 2)


def test_slerp_keeps_the_norm_between_orthogonal_end_points():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    assert torch.equal(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    torch.testing.assert_close(slerp(a, b, 0.5).norm(), torch.tensor(3.0))
    torch.testing.assert_close(slerp(a, a * 2, 0.5), a * 1.5)  # parallel: linear


def test_networks_run_in_eval_mode_and_keep_their_mode():
    pipe = tiny_pipeline()
    reference = pipe(batch_size=2, generator=seeds(0, 1), num_candidates=2, output_type="pt").images
    pipe.generator.train()
    pipe.discriminator.train()
    images = pipe(batch_size=2, generator=seeds(0, 1), num_candidates=2, output_type="pt").images
    assert pipe.generator.training and pipe.discriminator.training
    assert torch.equal(images, reference)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"latents": torch.zeros(2, 15)}, r"shape \(batch, 16\)"),
        ({"latents": torch.zeros(16)}, r"shape \(batch, 16\)"),
        ({"latents": torch.zeros(2, 16, dtype=torch.long)}, "floating-point"),
        ({"latents": torch.full((2, 16), float("nan"))}, "NaN or infinite"),
        ({"latents": torch.tensor([[float("inf")] + [0.0] * 15])}, "NaN or infinite"),
        ({"latents": np.zeros((2, 16), dtype=np.float32)}, "torch.Tensor"),
        ({"latents": torch.zeros(2, 16), "batch_size": 3}, "does not match"),
        ({"latents": torch.zeros(2, 16), "truncation": 0.5}, "cannot be combined"),
        ({"latents": torch.zeros(2, 16), "num_candidates": 2}, "cannot be combined"),
        ({"truncation": 0}, r"\(0, 1\]"),
        ({"truncation": 1.5}, r"\(0, 1\]"),
        ({"truncation": float("nan")}, r"\(0, 1\]"),
        ({"truncation": "0.5"}, r"\(0, 1\]"),
        ({"num_candidates": 0}, "num_candidates"),
        ({"output_type": "latent"}, "output_type"),
        ({"batch_size": 2, "generator": seeds(0)}, "one generator per image"),
        ({"batch_size": 2, "generator": [torch.Generator(), 3]}, "list of them"),
        ({"batch_size": 10**9}, "at most 65536 samples"),
        ({"batch_size": 4, "num_candidates": 2**15}, "at most 65536 samples"),
        ({"output_type": ["pil"]}, "output_type"),
        ({"return_dict": "yes"}, "return_dict"),
    ],
)
def test_bad_call_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_pipeline()(**kwargs)


def test_num_candidates_needs_a_discriminator_and_components_must_fit():
    pipe = tiny_pipeline(with_discriminator=False)
    with pytest.raises(ValueError, match="has none"):
        pipe(num_candidates=2)
    generator = pipe.generator
    with pytest.raises(ValueError, match="must be a TransGANGenerator"):
        TransGANPipeline(generator=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="must be a TransGANDiscriminator"):
        TransGANPipeline(generator=generator, discriminator=generator)
    other_size = TransGANDiscriminator(TransGANDiscriminatorConfig.from_preset("tiny"))  # 32x32
    with pytest.raises(ValueError, match="pair networks trained together"):
        TransGANPipeline(generator=generator, discriminator=other_size)


def test_calls_larger_than_free_memory_run_in_passes_with_the_same_images(monkeypatch):
    pipe = tiny_pipeline()
    calls = [
        dict(batch_size=6, generator=seeds(*range(6))),
        dict(batch_size=6, generator=torch.Generator().manual_seed(1)),  # one generator: noise of the whole batch
        dict(batch_size=4, generator=seeds(*range(4)), num_candidates=3),  # an image's candidates stay together
        dict(batch_size=4, generator=torch.Generator().manual_seed(2), num_candidates=2),
        dict(latents=torch.randn(7, 16, generator=torch.Generator().manual_seed(3)), generator=seeds(*range(7))),
    ]
    generator_states = []

    def copy(generator):
        return torch.Generator().set_state(generator.get_state())

    def run(kwargs):  # on copies of the generators, so that every call starts from the same states
        kwargs = {**kwargs, "generator": copy(kwargs["generator"]) if isinstance(kwargs["generator"], torch.Generator)
                  else [copy(g) for g in kwargs["generator"]]}
        images = pipe(output_type="pt", **kwargs).images
        if isinstance(kwargs["generator"], torch.Generator):
            generator_states.append(kwargs["generator"].get_state())
        return images

    expected = [run(kwargs) for kwargs in calls]
    passes = []
    pipe.generator.register_forward_hook(lambda module, args, output: passes.append(args[0].shape[0]))
    # 1 MB per sample and 4 MB free besides the results (12 kB per image): three samples per forward pass.
    monkeypatch.setattr("transgan_hf.sampling.estimate_sample_bytes", lambda *args: 10**6)
    monkeypatch.setattr("transgan_hf.sampling.available_memory_bytes", lambda device: 4 * 10**6)
    for kwargs, reference in zip(calls, expected):
        passes.clear()
        torch.testing.assert_close(run(kwargs), reference, atol=1e-5, rtol=0)
        assert max(passes) == 3 and sum(passes) == kwargs.get("batch_size", 7) * kwargs.get("num_candidates", 1)
    assert passes == [3, 3, 1]
    # A single generator is left where one pass leaves it.
    assert all(torch.equal(a, b) for a, b in zip(generator_states[:2], generator_states[2:]))
    monkeypatch.setattr("transgan_hf.sampling.available_memory_bytes", lambda device: 2**19)
    with pytest.raises(ValueError, match=r"One sample needs about 1.0 MiB on cpu, but only 0.5 MiB are free"):
        pipe(batch_size=1)
    monkeypatch.setattr("transgan_hf.sampling.available_memory_bytes", lambda device: 3 * 10**6)
    with pytest.raises(ValueError, match="The 4 candidates of one image need about 3.8 MiB.*lower `num_candidates`"):
        pipe(generator=seeds(0), num_candidates=4)
    monkeypatch.setattr("transgan_hf.sampling.available_memory_bytes", lambda device: 12_288 * 100)
    with pytest.raises(ValueError, match="The 200 images of this call alone need about 2.3 MiB on cpu, but only 1.2"):
        pipe(batch_size=200)


FREED_HEAP_SCRIPT = textwrap.dedent("""
    import torch
    from transgan_hf.cpu_memory import reuse_freed_cpu_memory
    from transgan_hf.cpu_memory import freed_heap_bytes
    assert reuse_freed_cpu_memory()  # as training and `transgan generate` do
    activations = torch.ones(2**25)  # 128 MiB
    before = freed_heap_bytes()
    del activations
    print(freed_heap_bytes() - before)
""")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc heap statistics")
def test_cpu_memory_freed_inside_the_process_counts_as_available(monkeypatch):
    result = subprocess.run([sys.executable, "-c", FREED_HEAP_SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) > 2**27 - 2**20  # the freed tensor stays in the heap, for the process to reuse
    meminfo = Path("/proc/meminfo").read_text()
    mem_available = int(next(line for line in meminfo.splitlines() if line.startswith("MemAvailable:")).split()[1])
    monkeypatch.setattr("transgan_hf.sampling.freed_heap_bytes", lambda: 2**50)
    assert available_memory_bytes(torch.device("cpu")) - 2**50 > mem_available * 1024 / 2  # MemAvailable moves


def test_interpolation_and_latent_arguments_are_checked_before_any_work(monkeypatch):
    pipe = tiny_pipeline()
    class NoWork:  # interpolation starts its work by making generators
        def __init__(self, *args, **kwargs):
            raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(torch, "Generator", NoWork)
    for kwargs, match in [
        (dict(num_steps=10**8), r"`num_steps` must be an integer from 2 to 4096"),
        (dict(num_steps=1), "from 2 to 4096"),
        (dict(num_steps=2.0), "num_steps"),
        (dict(seed_a=-1), r"seed_a.*\[0, 2\*\*63\)"),
        (dict(seed_b=2**63), "seed_b"),
        (dict(truncation=2), "truncation"),
        (dict(output_type="latent"), "output_type"),
    ]:
        with pytest.raises(ValueError, match=match):
            pipe.interpolate(**{"seed_a": 1, "seed_b": 2, **kwargs})
    for args, match in [((0, None), "num_samples"), ((10**9, None), "at most 65536"), ((2, 5), "generator")]:
        with pytest.raises(ValueError, match=match):
            pipe.sample_latents(*args)


# ---------------------------------------------------------------------------------------------------------------------
# Save and load
# ---------------------------------------------------------------------------------------------------------------------


def test_save_and_load_a_local_folder(tmp_path):
    pipe = tiny_pipeline()
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder)
    assert {p.name for p in folder.iterdir()} == {"model_index.json", "README.md", "generator", "discriminator"}
    assert {p.name for p in (folder / "generator").iterdir()} == {"config.json", "model.safetensors"}
    assert (folder / "discriminator" / "model.safetensors").is_file()
    assert not list(folder.rglob("*.bin")) and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "TransGANPipeline" and index["generator"][1] == "TransGANGenerator"
    loaded = TransGANPipeline.from_pretrained(folder)
    assert isinstance(loaded.generator, TransGANGenerator) and isinstance(loaded.discriminator, TransGANDiscriminator)
    for kwargs in ({"batch_size": 3}, {"batch_size": 2, "num_candidates": 3, "truncation": 0.8}):
        expected = pipe(generator=seeds(*range(kwargs["batch_size"])), output_type="pt", **kwargs).images
        assert torch.equal(loaded(generator=seeds(*range(kwargs["batch_size"])), output_type="pt", **kwargs).images,
                           expected)
    without_d = TransGANPipeline.from_pretrained(folder, discriminator=None)
    assert without_d.discriminator is None
    half = TransGANPipeline.from_pretrained(folder, dtype=torch.float64)
    assert half.generator.dtype == torch.float64
    with pytest.raises(TypeError, match="unexpected keyword"):
        TransGANPipeline.from_pretrained(folder, variant="fp16")


def test_saving_over_an_existing_folder_keeps_other_files_and_drops_stale_components(tmp_path):
    folder = tmp_path / "run"
    tiny_pipeline().save_pretrained(folder)
    (folder / "checkpoint-100").mkdir()
    (folder / "samples.png").write_bytes(b"png")
    pipe = tiny_pipeline(with_discriminator=False, seed=1)
    pipe.save_pretrained(folder)
    assert (folder / "checkpoint-100").is_dir() and (folder / "samples.png").read_bytes() == b"png"
    assert not (folder / "discriminator").exists()
    assert json.loads((folder / "model_index.json").read_text())["discriminator"] == [None, None]
    loaded = TransGANPipeline.from_pretrained(folder)
    assert loaded.discriminator is None
    assert torch.equal(pipe(generator=seeds(0), output_type="pt").images,
                       loaded(generator=seeds(0), output_type="pt").images)


def test_a_failed_save_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    folder = tmp_path / "pipe"
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match="license"):
        pipe.save_pretrained(folder, model_card_kwargs={"license": ""})
    assert not folder.exists()
    pipe.save_pretrained(folder)
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    def broken(pipeline, staging):
        (staging / "generator" / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr("transgan_hf.pipeline_folder.write_remote_code", broken)
    with pytest.raises(OSError, match="disk full"):
        tiny_pipeline(seed=1).save_pretrained(folder, remote_code=True)
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        pipe.save_pretrained(tmp_path / "file")


def test_load_by_hub_id_from_the_cache_with_hf_hub_offline(tmp_path, offline_hub):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "saved")
    storage = place_in_hub_cache(tmp_path / "saved", offline_hub, "org/transgan-tiny")
    (storage / "refs" / "v1").write_text(COMMIT)
    expected = pipe(batch_size=2, generator=seeds(0, 1), num_candidates=2, output_type="np").images
    for kwargs in ({}, {"revision": "v1"}, {"revision": COMMIT}, {"local_files_only": True}):
        loaded = TransGANPipeline.from_pretrained("org/transgan-tiny", **kwargs)
        assert np.array_equal(loaded(batch_size=2, generator=seeds(0, 1), num_candidates=2, output_type="np").images,
                              expected)
    assert loaded.name_or_path == "org/transgan-tiny"


def test_hub_id_not_in_the_cache_while_offline(offline_hub, tmp_path):
    with pytest.raises(OSError, match="not \\(completely\\) in the Hugging Face cache.*hf download org/missing"):
        TransGANPipeline.from_pretrained("org/missing")
    with pytest.raises(OSError, match="revision 'v2'"):
        TransGANPipeline.from_pretrained("org/missing", revision="v2", cache_dir=tmp_path)


def test_explicit_cache_dir_and_local_files_only_without_offline_mode(tmp_path):
    tiny_pipeline().save_pretrained(tmp_path / "saved")
    place_in_hub_cache(tmp_path / "saved", tmp_path / "cache", "org/tiny")
    loaded = TransGANPipeline.from_pretrained("org/tiny", cache_dir=tmp_path / "cache", local_files_only=True)
    assert loaded.discriminator is not None
    with pytest.raises(OSError, match="pass local_files_only=False"):
        TransGANPipeline.from_pretrained("org/other", cache_dir=tmp_path / "cache", local_files_only=True)


def test_folders_that_are_not_pipelines(tmp_path):
    with pytest.raises(OSError, match="is not a folder"):
        TransGANPipeline.from_pretrained(tmp_path / "missing")
    with pytest.raises(OSError, match="is not a folder"):
        TransGANPipeline.from_pretrained("./missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="is not a folder"):
        TransGANPipeline.from_pretrained(tmp_path / "file")
    with pytest.raises(OSError, match="has no model_index.json"):
        TransGANPipeline.from_pretrained(tmp_path)
    tiny_pipeline().generator.save_pretrained(tmp_path / "generator_only")
    with pytest.raises(OSError, match="TransGANGenerator.from_pretrained instead"):
        TransGANPipeline.from_pretrained(tmp_path / "generator_only")
    other = tmp_path / "ddpm"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline", "unet": ["diffusers", "X"]}))
    with pytest.raises(OSError, match="'DDPMPipeline' pipeline, not a TransGANPipeline"):
        TransGANPipeline.from_pretrained(other)
    (other / "model_index.json").write_text("{not json")
    with pytest.raises(OSError, match="not valid JSON"):
        TransGANPipeline.from_pretrained(other)
    tiny_pipeline().save_pretrained(tmp_path / "broken")
    shutil.rmtree(tmp_path / "broken" / "discriminator")
    with pytest.raises(OSError, match="no discriminator/ folder"):
        TransGANPipeline.from_pretrained(tmp_path / "broken")
    with pytest.raises(OSError, match="neither a local folder nor a valid Hub repo id"):
        TransGANPipeline.from_pretrained("org/bad name!")


def test_package_layout_folders_load_too(tmp_path):
    """A folder whose model_index records the package module (plain DiffusionPipeline.save_pretrained) loads."""
    pipe = tiny_pipeline()
    folder = tmp_path / "package_layout"
    super(TransGANPipeline, pipe).save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "TransGANPipeline"
    assert index["generator"] == ["transgan_hf.modeling_transgan", "TransGANGenerator"]
    loaded = TransGANPipeline.from_pretrained(folder)
    assert torch.equal(loaded(generator=seeds(0), output_type="pt").images,
                       pipe(generator=seeds(0), output_type="pt").images)


# ---------------------------------------------------------------------------------------------------------------------
# Hub upload (tested at the huggingface_hub boundary) and conversion
# ---------------------------------------------------------------------------------------------------------------------


class RecordingApi:
    """Stands in for the network calls of `HfApi` and records what would be uploaded."""

    def __init__(self, monkeypatch):
        self.calls = []
        self.uploaded = {}
        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", self.create_repo)
        monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", self.upload_folder)

    def create_repo(self, repo_id, private=None, exist_ok=False, **kwargs):
        self.calls.append(("create_repo", repo_id, private, exist_ok))
        full_id = repo_id if "/" in repo_id else f"me/{repo_id}"
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{full_id}")

    def upload_folder(self, repo_id, folder_path, commit_message=None, create_pr=False, ignore_patterns=None, **kw):
        self.calls.append(("upload_folder", repo_id, commit_message, create_pr))
        folder = Path(folder_path)
        self.uploaded = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        return huggingface_hub.CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{COMMIT}", commit_message=commit_message or "",
            commit_description="", oid=COMMIT,
        )


def test_push_to_hub_creates_the_repo_and_uploads_the_folder_with_its_card(monkeypatch, tmp_path):
    api = RecordingApi(monkeypatch)
    pipe = tiny_pipeline()
    url = pipe.push_to_hub("transgan-tiny", private=True, model_card_kwargs={"datasets": ["uoft-cs/cifar10"]})
    assert url == f"https://huggingface.co/me/transgan-tiny/commit/{COMMIT}"
    assert api.calls == [("create_repo", "transgan-tiny", True, True),
                         ("upload_folder", "me/transgan-tiny", "Upload TransGANPipeline", False)]
    assert {"model_index.json", "README.md", "generator/model.safetensors", "discriminator/model.safetensors",
            "transgan_remote_pipeline.py", "pipeline_transgan.py", "generator/transgan_remote_generator.py",
            } <= set(api.uploaded)  # with its remote code (test_remote_code.py checks that it loads)
    card = api.uploaded["README.md"].decode()
    assert 'TransGANPipeline.from_pretrained("me/transgan-tiny")' in card and "uoft-cs/cifar10" in card
    assert 'DiffusionPipeline.from_pretrained("me/transgan-tiny", trust_remote_code=True)' in card
    # What was uploaded loads back to the same pipeline.
    for name, data in api.uploaded.items():
        (tmp_path / "repo" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "repo" / name).write_bytes(data)
    loaded = TransGANPipeline.from_pretrained(tmp_path / "repo")
    assert torch.equal(loaded(generator=seeds(0), output_type="pt").images,
                       pipe(generator=seeds(0), output_type="pt").images)
    pipe.save_pretrained(tmp_path / "local", push_to_hub=True, repo_id="org/x", commit_message="v1")
    assert api.calls[-2:] == [("create_repo", "org/x", None, True), ("upload_folder", "org/x", "v1", False)]
    assert 'from_pretrained("org/x")' in (tmp_path / "local" / "README.md").read_text()
    assert (tmp_path / "local" / "transgan_remote_pipeline.py").is_file()  # pushed folders carry their code


def test_push_to_hub_offline_fails_with_a_clear_message(offline_hub):
    with pytest.raises(OSError, match="Cannot reach the Hugging Face Hub to push 'org/x'.*HF_HUB_OFFLINE"):
        tiny_pipeline().push_to_hub("org/x")


def test_push_to_hub_without_network_fails_with_a_clear_message(monkeypatch):
    class TransportError(Exception):  # the base class name of the HTTP client's network errors
        pass

    class ConnectError(TransportError):
        pass

    def unreachable(self, *args, **kwargs):
        raise ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", unreachable)
    with pytest.raises(OSError, match="Cannot reach the Hugging Face Hub.*ConnectError"):
        tiny_pipeline().push_to_hub("org/x")


@pytest.mark.skipif(not (FIXTURES / "cifar_small_checkpoint.pth").is_file(), reason="official fixture not available")
def test_converter_writes_a_pipeline_folder_with_the_official_licence(tmp_path):
    from transgan_hf.convert_official import OFFICIAL_LICENSE_NOTE, convert

    out = convert(FIXTURES / "cifar_small_checkpoint.pth", tmp_path / "converted",
                  official_args=FIXTURES / "cifar_small_args.json")
    assert not (out / "CONVERSION.md").exists()
    pipe = TransGANPipeline.from_pretrained(out)
    io = np.load(FIXTURES / "cifar_small_io.npz")
    images = pipe(latents=torch.from_numpy(io["z"]), output_type="pt").images
    official = (torch.from_numpy(io["images"]) / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(images, official, atol=1e-5, rtol=0)
    card = huggingface_hub.ModelCard.load(out / "README.md")
    assert card.data.license == "other" and card.data.license_name == "transgan-non-commercial"
    assert OFFICIAL_LICENSE_NOTE in card.text and "cifar_small_checkpoint.pth" in card.text
