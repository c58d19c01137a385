"""`TransGANPipeline`: unconditional image sampling with a TransGAN generator, in the style of diffusers' DDPMPipeline.

A saved pipeline folder holds `model_index.json`, `generator/`, the optional `discriminator/` (safetensors weights),
the model card `README.md`, and copies of this file and of the modeling/configuration files ("remote code"), so that
both of these load it:

    TransGANPipeline.from_pretrained("org/transgan-stl10")                         # with this package installed
    DiffusionPipeline.from_pretrained("org/transgan-stl10", trust_remote_code=True)  # diffusers alone

This file imports only torch, diffusers, huggingface_hub, the standard library and its sibling modeling/configuration
files, because it is itself the remote code of saved folders. Package-only helpers (the model card, atomic files) are
imported where they are used.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import logging
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from transformers import PreTrainedModel

# Also imported (not only the models) so that diffusers' remote-code loader, which copies only the files a pipeline
# file imports directly, copies the configuration file as well.
from .configuration_transgan import TransGANDiscriminatorConfig, TransGANGeneratorConfig
from .modeling_transgan import BatchNoiseRows, NoiseGenerator, TransGANDiscriminator, TransGANGenerator

logger = logging.get_logger(__name__)

OUTPUT_TYPES = ("pil", "np", "pt")
TRUNCATION_BOUND = 2.0
"""Truncated latents are standard normal values restricted to [-2, 2], then multiplied by `truncation`."""
MAX_SAMPLES_PER_CALL = 2**16
"""Samples (`batch_size * num_candidates`) of one call; larger jobs are several calls (`transgan generate` does it)."""
MAX_INTERPOLATION_STEPS = 4096

MODEL_INDEX = "model_index.json"
MODEL_CARD = "README.md"
REMOTE_CODE_FILES = ("pipeline_transgan.py", "modeling_transgan.py", "configuration_transgan.py")
PIPELINE_ENTRIES = (MODEL_INDEX, MODEL_CARD, "generator", "discriminator", *REMOTE_CODE_FILES)
"""Top-level entries of a folder that `save_pretrained` owns (it replaces them and removes stale ones)."""

HUB_FILES = [MODEL_INDEX, MODEL_CARD, "generator/*", "discriminator/*"]
"""What `from_pretrained` downloads from a Hub repo (not the remote code, not sample images)."""

GeneratorArg = torch.Generator | list[torch.Generator] | None
_LOAD = object()  # `from_pretrained(discriminator=...)` default: load it from the folder


class TransGANPipeline(DiffusionPipeline):
    r"""Sample images from a TransGAN generator.

    Args:
        generator ([`TransGANGenerator`]): maps latent vectors to images in [-1, 1].
        discriminator ([`TransGANDiscriminator`], *optional*): scores samples; needed only for `num_candidates > 1`.

    The call argument `generator` is the `torch.Generator` (diffusers' convention); the network is `self.generator`.
    """

    model_cpu_offload_seq = "generator->discriminator"
    _optional_components = ["discriminator"]

    def __init__(self, generator: TransGANGenerator, discriminator: TransGANDiscriminator | None = None) -> None:
        super().__init__()
        check_components(generator, discriminator)
        self.register_modules(generator=generator, discriminator=discriminator)
        self.image_processor = VaeImageProcessor(do_resize=False, do_normalize=True)

    @classmethod
    def _get_signature_types(cls) -> dict[str, tuple[type, ...]]:
        """Component types for diffusers' load-time type warning. `check_components` does the real check (by model
        type): diffusers' remote-code loader re-imports the modeling file for every component, so the loaded classes
        are not the annotated class objects, and the annotation check would warn "expected X, got X"."""
        return {"generator": (PreTrainedModel,), "discriminator": (PreTrainedModel, type(None))}

    # -----------------------------------------------------------------------------------------------------------------
    # Sampling
    # -----------------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: GeneratorArg = None,
        latents: torch.Tensor | None = None,
        truncation: float | None = None,
        num_candidates: int = 1,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""Generate images.

        Args:
            batch_size: number of images. With `latents`, their first dimension is the batch size.
            generator: a `torch.Generator`, or a list with one per image. It draws the latents first, then the
                per-token noise of noise injection (and of the discriminator), so a seeded call is bit-reproducible.
                With a list, image `i` depends only on `generator[i]`: it gets the same latent and noise as in a call
                with `batch_size=1`, and the same image up to the round-off of batched matrix products. A single
                generator with `batch_size=1` is the same as a list of one.
            latents: `(batch_size, latent_dim)` latent vectors to use instead of sampled ones.
            truncation: `t` in (0, 1] samples truncated latents: standard normal values restricted to [-2, 2], then
                multiplied by `t` (BigGAN's truncation trick; smaller `t` trades diversity for fidelity). `None`
                samples plain standard normal latents.
            num_candidates: `k > 1` draws `k` candidates per image and keeps the ones the discriminator scores
                highest: with a single generator (or none) the `batch_size` best of all `batch_size * k`, best first;
                with a list of generators the best of each image's own `k` candidates, so that image `i` still depends
                only on `generator[i]`.
            output_type: `"pil"` (list of PIL images), `"np"` (`(B, H, W, C)` float array in [0, 1]) or `"pt"`
                (`(B, C, H, W)` tensor in [0, 1]).
            return_dict: return an [`~diffusers.ImagePipelineOutput`] instead of a tuple.

        Both networks run in eval mode during the call; their train/eval mode is restored afterwards. A call whose
        samples do not fit in the free memory of the device at once runs in several forward passes, with the same
        latents and noise (so the same images up to the round-off of batched matrix products); it fails only when not
        even one sample fits.
        """
        check_output_type(output_type)
        if not isinstance(return_dict, bool):
            raise ValueError(f"`return_dict` must be True or False, got {return_dict!r}.")
        check_positive_int("num_candidates", num_candidates)
        if num_candidates > 1 and self.discriminator is None:
            raise ValueError(
                "`num_candidates` > 1 ranks samples with the discriminator, but this pipeline has none. Load a "
                "pipeline saved with its discriminator, or pass `discriminator=` to TransGANPipeline."
            )
        check_truncation(truncation)
        if latents is not None:
            batch_size = self._check_latents(latents, batch_size, truncation, num_candidates)
        else:
            check_positive_int("batch_size", batch_size)
        num_samples = batch_size * num_candidates
        check_sample_count(num_samples)
        generators = per_image_generators(generator, batch_size)
        # A generator of a list serves all candidates of its image: they stay in one pass, so that it draws as unsplit.
        unit = num_candidates if generators is not None else 1
        samples_per_pass = self._samples_per_pass(num_samples, with_discriminator=num_candidates > 1, unit=unit)
        device = self._execution_device

        if latents is None:
            latents = self.sample_latents(num_samples, generators if generators is not None else generator, truncation)
        latents = latents.to(device)
        # With per-image generators, every candidate of image i draws its noise from generator i.
        noise_generator = generator if generators is None else [g for g in generators for _ in range(num_candidates)]

        with eval_mode(self.generator, self.discriminator):
            images, scores = [], []
            for rows, noise in forward_passes(noise_generator, num_samples, samples_per_pass):
                images.append(self.generator(latents[rows], noise_generator=noise).images)
                if num_candidates > 1:
                    scores.append(self.discriminator(images[-1], noise_generator=noise).logits.squeeze(-1).float())
            images = images[0] if len(images) == 1 else torch.cat(images)
            if num_candidates > 1:
                scores = torch.cat(scores)
                images = images[select_best(scores, batch_size, num_candidates, per_image=generators is not None)]

        images = self.image_processor.postprocess(images.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    @torch.no_grad()
    def interpolate(
        self,
        seed_a: int,
        seed_b: int,
        num_steps: int = 8,
        truncation: float | None = None,
        output_type: str = "pil",
    ) -> ImagePipelineOutput:
        r"""Images along the spherical interpolation (slerp) between the latents of two seeds.

        Seed `s` means `generator=torch.Generator().manual_seed(s)`, so the first image equals
        `pipe(generator=torch.Generator().manual_seed(seed_a), truncation=truncation)`. The noise of noise injection
        is `seed_a`'s at every step, so only the latent moves (the last image therefore differs from `seed_b`'s own
        image when the generator injects noise).

        Args:
            seed_a, seed_b: seeds of the two end points.
            num_steps: number of images, end points included (2 to `MAX_INTERPOLATION_STEPS`).
            truncation, output_type: as in `__call__`.
        """
        check_seed("seed_a", seed_a)
        check_seed("seed_b", seed_b)
        check_positive_int("num_steps", num_steps, 2, MAX_INTERPOLATION_STEPS,
                           " (the end points included; interpolate in several calls for more images)")
        check_truncation(truncation)
        check_output_type(output_type)
        generator_a = torch.Generator().manual_seed(seed_a)
        latent_a = self.sample_latents(1, generator_a, truncation)[0]
        latent_b = self.sample_latents(1, torch.Generator().manual_seed(seed_b), truncation)[0]
        noise_state = generator_a.get_state()  # seed_a's generator right after its latent, as in `__call__`
        step_generators = []
        for _ in range(num_steps):
            step_generator = torch.Generator()
            step_generator.set_state(noise_state)
            step_generators.append(step_generator)
        weights = torch.linspace(0, 1, num_steps).tolist()
        latents = torch.stack([slerp(latent_a, latent_b, w) for w in weights])
        return self(latents=latents, generator=step_generators, output_type=output_type)

    def sample_latents(
        self, num_samples: int, generator: GeneratorArg, truncation: float | None = None
    ) -> torch.Tensor:
        """`(num_samples, latent_dim)` latents, on the generator's device (the execution device without one).

        With a list of generators, each draws `num_samples // len(generator)` consecutive rows.
        """
        check_positive_int("num_samples", num_samples)
        check_sample_count(num_samples)
        check_truncation(truncation)
        if not isinstance(generator, (torch.Generator, list, type(None))):
            kind = type(generator).__name__
            raise ValueError(f"`generator` must be a torch.Generator or a list of them, got {kind}.")
        latent_dim = self.generator.config.latent_dim
        if isinstance(generator, list):
            if num_samples % len(generator):
                raise ValueError(f"{num_samples} latents cannot be split evenly over {len(generator)} generators.")
            per_generator = num_samples // len(generator)
            return torch.cat([draw_latents((per_generator, latent_dim), g, truncation, g.device) for g in generator])
        device = generator.device if generator is not None else self._execution_device
        return draw_latents((num_samples, latent_dim), generator, truncation, device)

    def _check_latents(self, latents: Any, batch_size: int, truncation: float | None, num_candidates: int) -> int:
        latent_dim = self.generator.config.latent_dim
        if not isinstance(latents, torch.Tensor):
            raise ValueError(f"`latents` must be a torch.Tensor (batch, {latent_dim}), got {type(latents).__name__}.")
        if latents.dim() != 2 or latents.shape[1] != latent_dim or latents.shape[0] < 1:
            raise ValueError(f"`latents` must have shape (batch, {latent_dim}), got {tuple(latents.shape)}.")
        if not latents.is_floating_point():
            raise ValueError(f"`latents` must be a floating-point tensor, got {latents.dtype}.")
        if not torch.isfinite(latents).all():
            raise ValueError("`latents` contains NaN or infinite values; pass finite latent vectors.")
        if truncation is not None:
            raise ValueError("`truncation` shapes sampled latents; it cannot be combined with `latents`.")
        if num_candidates != 1:
            raise ValueError("`num_candidates` needs sampled latents; it cannot be combined with `latents`.")
        if batch_size not in (1, latents.shape[0]):
            raise ValueError(f"`batch_size`={batch_size} does not match the {latents.shape[0]} rows of `latents`.")
        return latents.shape[0]

    def _samples_per_pass(self, num_samples: int, with_discriminator: bool, unit: int = 1) -> int:
        """How many samples (a multiple of `unit`) one forward pass can take in the memory the execution device has
        left (all of them when that is unknown); `ValueError` when not even the results and one unit fit (rough
        activation estimate)."""
        device = self._execution_device
        available = available_memory_bytes(device)
        if available is None:
            return num_samples
        config = self.generator.config
        # The raw images of every sample and the float32 copies of post-processing.
        result_bytes = num_samples * config.out_channels * config.image_size**2 * (self.generator.dtype.itemsize + 12)
        discriminator_config = self.discriminator.config if with_discriminator else None
        sample_bytes = estimate_sample_bytes(config, discriminator_config, self.generator.dtype)
        samples_per_pass = (available - result_bytes) // (sample_bytes * unit) * unit
        if samples_per_pass >= 1:
            return min(num_samples, samples_per_pass)
        free = f"only {format_bytes(available)} are free"
        if result_bytes >= available:
            raise ValueError(
                f"The {num_samples} images of this call alone need about {format_bytes(result_bytes)} on {device}, "
                f"but {free}; ask for fewer images per call (lower `batch_size` or `num_candidates`; `transgan "
                "generate --batch_size` splits the work for you)."
            )
        what = "One sample needs" if unit == 1 else f"The {unit} candidates of one image need"
        raise ValueError(
            f"{what} about {format_bytes(unit * sample_bytes)} on {device}, but {free} besides the results; free "
            f"memory, load the pipeline with dtype=torch.bfloat16{', lower `num_candidates`' if unit > 1 else ''}, "
            "or use a device with more memory."
        )

    # -----------------------------------------------------------------------------------------------------------------
    # Loading
    # -----------------------------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool | None = None,
        **kwargs: Any,
    ) -> TransGANPipeline:
        r"""Load a pipeline from a local folder or a Hub repo id.

        A repo id is resolved with `huggingface_hub.snapshot_download` (which honours `HF_HUB_OFFLINE`, `revision`,
        `token`, `cache_dir` and `local_files_only`); the components are then loaded from the local folder with this
        package's classes, whichever layout `model_index.json` records (package or remote code).

        Keyword args:
            dtype (or `torch_dtype`), device_map: passed to the components' `from_pretrained`.
            generator, discriminator: ready-made components to use instead of loading them (`discriminator=None`
                skips the discriminator).
        """
        if not isinstance(pretrained_model_name_or_path, (str, os.PathLike)):
            raise TypeError(f"`pretrained_model_name_or_path` must be a folder path or a Hub repo id (str), got "
                            f"{type(pretrained_model_name_or_path).__name__}.")
        folder = resolve_pipeline_folder(pretrained_model_name_or_path, revision, token, cache_dir, local_files_only)
        index = read_model_index(folder)
        load_kwargs = {"dtype": kwargs.pop("dtype", kwargs.pop("torch_dtype", None)),
                       "device_map": kwargs.pop("device_map", None)}
        load_kwargs = {k: v for k, v in load_kwargs.items() if v is not None}
        generator = kwargs.pop("generator", None)
        discriminator = kwargs.pop("discriminator", _LOAD)
        if kwargs:
            raise TypeError(f"TransGANPipeline.from_pretrained got unexpected keyword arguments {sorted(kwargs)}.")
        if generator is None:
            generator = TransGANGenerator.from_pretrained(folder / "generator", **load_kwargs)
        if discriminator is _LOAD:
            discriminator = None
            if index.get("discriminator", [None])[0] is not None:
                discriminator = TransGANDiscriminator.from_pretrained(folder / "discriminator", **load_kwargs)
        pipeline = cls(generator=generator, discriminator=discriminator)
        pipeline.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        return pipeline

    # -----------------------------------------------------------------------------------------------------------------
    # Saving and sharing
    # -----------------------------------------------------------------------------------------------------------------

    def save_pretrained(
        self, save_directory: str | os.PathLike, model_card_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        r"""Write `model_index.json`, `generator/`, `discriminator/` (safetensors), the model card `README.md`
        and the remote-code files into `save_directory`.

        Everything is written into a temporary sibling folder first and then moved into place, so a failure leaves
        `save_directory` as it was. Other files in an existing `save_directory` are kept.

        Args:
            model_card_kwargs: keyword arguments of [`transgan_hf.model_card.make_model_card`] (license, datasets,
                training, metrics, repo_id, converted_from_official, samples_image).
            kwargs: `push_to_hub=True` (with `repo_id`, `token`, `private`, `commit_message`, `create_pr`) uploads the
                saved folder; the rest goes to `DiffusionPipeline.save_pretrained`.
        """
        push_to_hub = kwargs.pop("push_to_hub", False)
        hub_kwargs = {k: kwargs.pop(k) for k in ("repo_id", "token", "private", "commit_message", "create_pr")
                      if k in kwargs}
        atomic_files, model_card = load_package_modules()
        if model_card_kwargs is not None and not isinstance(model_card_kwargs, dict):
            raise ValueError(f"`model_card_kwargs` must be a dict or None, got {type(model_card_kwargs).__name__}.")
        save_directory = Path(save_directory)
        if save_directory.exists() and not save_directory.is_dir():
            raise ValueError(f"Cannot save the pipeline to {str(save_directory)!r}: it is a file, not a folder.")
        card_kwargs = dict(model_card_kwargs or {})
        if push_to_hub:
            card_kwargs.setdefault("repo_id", hub_kwargs.get("repo_id", save_directory.name))
        card = model_card.make_model_card(self, **card_kwargs)  # validates the card arguments before any writing
        with atomic_files.staging_folder(save_directory) as staging:
            super().save_pretrained(staging, **kwargs)
            self._write_remote_code(staging)
            card.save(staging / MODEL_CARD)
            atomic_files.move_entries_into_place(staging, save_directory, PIPELINE_ENTRIES)
        samples_image = card_kwargs.get("samples_image")
        if samples_image and not (save_directory / samples_image).is_file():
            logger.warning(f"The model card shows {samples_image!r}, which is not in {str(save_directory)!r} yet.")
        if push_to_hub:
            api = HfApi(token=hub_kwargs.pop("token", None))
            repo_id = hub_kwargs.pop("repo_id", save_directory.name)
            repo_id = create_hub_repo(api, repo_id, hub_kwargs.pop("private", None))
            upload_pipeline_folder(api, save_directory, repo_id, **hub_kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
    ) -> str:
        r"""Create (or reuse) the Hub repo `repo_id` and upload the saved pipeline with its model card.

        Returns the URL of the commit. Raises `OSError` with what to do when the Hub cannot be reached.
        """
        api = HfApi(token=token)
        repo_id = create_hub_repo(api, repo_id, private)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, model_card_kwargs={"repo_id": repo_id, **(model_card_kwargs or {})})
            return upload_pipeline_folder(api, folder, repo_id, commit_message=commit_message, create_pr=create_pr)

    def _write_remote_code(self, folder: Path) -> None:
        """Lay out the remote-code files and point `model_index.json` at them (diffusers' custom-component layout)."""
        code_files = {
            "modeling_transgan.py": sys.modules[TransGANGenerator.__module__].__file__,
            "configuration_transgan.py": sys.modules[TransGANGeneratorConfig.__module__].__file__,
        }
        shutil.copyfile(__file__, folder / "pipeline_transgan.py")
        for name, source in code_files.items():  # imported by the root pipeline file
            shutil.copyfile(source, folder / name)
        index = json.loads((folder / MODEL_INDEX).read_text(encoding="utf-8"))
        index["_class_name"] = ["pipeline_transgan", "TransGANPipeline"]
        components = {"generator": (TransGANGenerator, TransGANGeneratorConfig),
                      "discriminator": (TransGANDiscriminator, TransGANDiscriminatorConfig)}
        for name, (model_class, config_class) in components.items():
            component_folder = folder / name
            if getattr(self, name) is None or not component_folder.is_dir():
                index[name] = [None, None]
                continue
            index[name] = ["modeling_transgan", model_class.__name__]
            for file_name, source in code_files.items():  # diffusers imports components from their own folder
                shutil.copyfile(source, component_folder / file_name)
            config_path = component_folder / "config.json"
            config = json.loads(config_path.read_text(encoding="utf-8"))
            config["auto_map"] = {"AutoConfig": f"configuration_transgan.{config_class.__name__}",
                                  "AutoModel": f"modeling_transgan.{model_class.__name__}"}
            config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (folder / MODEL_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------------------------------


def check_components(generator: Any, discriminator: Any) -> None:
    """Check the component types by `model_type` (remote-code classes are distinct class objects) and their fit."""
    if getattr(getattr(generator, "config", None), "model_type", None) != TransGANGeneratorConfig.model_type:
        raise ValueError(f"`generator` must be a TransGANGenerator, got {type(generator).__name__}.")
    if discriminator is None:
        return
    if getattr(getattr(discriminator, "config", None), "model_type", None) != TransGANDiscriminatorConfig.model_type:
        raise ValueError(f"`discriminator` must be a TransGANDiscriminator or None, got {type(discriminator).__name__}")
    g, d = generator.config, discriminator.config
    if (g.image_size, g.out_channels) != (d.image_size, d.in_channels):
        raise ValueError(
            f"The discriminator expects {d.in_channels}x{d.image_size}x{d.image_size} images but the generator makes "
            f"{g.out_channels}x{g.image_size}x{g.image_size}; pair networks trained together."
        )


def check_positive_int(name: str, value: Any, minimum: int = 1, maximum: int | None = None, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value > (maximum or value):
        bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ValueError(f"`{name}` must be an integer {bounds}{hint}, got {value!r}.")


def check_sample_count(num_samples: int) -> None:
    if num_samples > MAX_SAMPLES_PER_CALL:
        raise ValueError(
            f"One call makes at most {MAX_SAMPLES_PER_CALL} samples (`batch_size` * `num_candidates`), got "
            f"{num_samples}; generate in several calls (`transgan generate --batch_size` splits the work for you)."
        )


def check_output_type(output_type: Any) -> None:
    if not isinstance(output_type, str) or output_type not in OUTPUT_TYPES:
        raise ValueError(f"`output_type`={output_type!r} is not supported; use one of {', '.join(OUTPUT_TYPES)}.")


def check_seed(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValueError(f"`{name}` must be an integer in [0, 2**63), got {value!r}.")


def check_truncation(truncation: Any) -> None:
    if truncation is None:
        return
    if isinstance(truncation, bool) or not isinstance(truncation, (int, float)) or not 0 < truncation <= 1:
        raise ValueError(
            f"`truncation` must be a number in (0, 1] (1 = latents restricted to [-2, 2]; smaller = less diverse, "
            f"cleaner samples) or None for untruncated latents, got {truncation!r}."
        )


def per_image_generators(generator: GeneratorArg, batch_size: int) -> list[torch.Generator] | None:
    """The list of per-image generators, or None when one generator (or the global RNG) serves the whole batch."""
    if generator is None:
        return None
    if isinstance(generator, torch.Generator):
        return [generator] if batch_size == 1 else None
    if not isinstance(generator, (list, tuple)) or not all(isinstance(g, torch.Generator) for g in generator):
        raise ValueError(f"`generator` must be a torch.Generator or a list of them, got {type(generator).__name__}.")
    if len(generator) != batch_size:
        raise ValueError(
            f"Got a list of {len(generator)} generators for a batch of {batch_size} images; pass one generator per "
            "image, or a single torch.Generator for the whole batch."
        )
    return list(generator)


# ---------------------------------------------------------------------------------------------------------------------
# Sampling helpers
# ---------------------------------------------------------------------------------------------------------------------


def draw_latents(
    shape: tuple[int, int], generator: torch.Generator | None, truncation: float | None, device: torch.device
) -> torch.Tensor:
    """Standard normal latents, or truncated ones (|z| <= 2, times `truncation`) drawn by inverse-CDF sampling."""
    if truncation is None:
        return torch.randn(shape, generator=generator, device=device)
    latents = torch.empty(shape, device=device)
    torch.nn.init.trunc_normal_(latents, a=-TRUNCATION_BOUND, b=TRUNCATION_BOUND, generator=generator)
    return latents * truncation


def forward_passes(
    noise_generator: NoiseGenerator, num_samples: int, samples_per_pass: int
) -> Iterator[tuple[slice, NoiseGenerator]]:
    """The rows of each forward pass and the noise source for them, for a call split into passes of
    `samples_per_pass`.

    A single `torch.Generator` is served through `BatchNoiseRows` (every pass starts from its state and keeps its
    rows of the whole batch's noise); afterwards it is left where one pass would have left it. Per-sample generators
    are sliced; the global RNG (`None`) just draws on.
    """
    if samples_per_pass >= num_samples:
        yield slice(0, num_samples), noise_generator
        return
    state = noise_generator.get_state() if isinstance(noise_generator, torch.Generator) else None
    for start in range(0, num_samples, samples_per_pass):
        rows = slice(start, min(start + samples_per_pass, num_samples))
        if state is not None:
            pass_generator = torch.Generator(device=noise_generator.device).set_state(state)
            yield rows, BatchNoiseRows(pass_generator, num_samples, rows)
        else:
            yield rows, noise_generator[rows] if isinstance(noise_generator, list) else None
    if state is not None:
        noise_generator.set_state(pass_generator.get_state())


def select_best(scores: torch.Tensor, batch_size: int, num_candidates: int, per_image: bool) -> torch.Tensor:
    """Indices of the kept candidates: the best of each consecutive group of `num_candidates` (`per_image`), or the
    `batch_size` best overall, best first."""
    if per_image:
        best_in_group = scores.view(batch_size, num_candidates).argmax(dim=1)
        return torch.arange(batch_size, device=scores.device) * num_candidates + best_in_group
    return scores.topk(batch_size).indices


def slerp(start: torch.Tensor, end: torch.Tensor, weight: float) -> torch.Tensor:
    """Spherical interpolation between two latent vectors (linear when they are almost parallel)."""
    cos_angle = torch.dot(start / start.norm(), end / end.norm()).clamp(-1, 1)
    angle = torch.arccos(cos_angle)
    if angle.abs() < 1e-4:
        return torch.lerp(start, end, weight)
    return (torch.sin((1 - weight) * angle) * start + torch.sin(weight * angle) * end) / torch.sin(angle)


@contextlib.contextmanager
def eval_mode(*modules: torch.nn.Module | None) -> Iterator[None]:
    """Run the networks in eval mode (running BatchNorm statistics), then restore each one's mode."""
    modules = [m for m in modules if m is not None]
    was_training = [m.training for m in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, training in zip(modules, was_training):
            module.train(training)


def estimate_sample_bytes(
    generator_config: TransGANGeneratorConfig,
    discriminator_config: TransGANDiscriminatorConfig | None,
    dtype: torch.dtype,
) -> int:
    """Rough peak activation memory of one sample: the largest transformer block's tokens, MLP and attention scores."""

    def block_elements(tokens: int, width: int, window: int, mlp_ratio: float, heads: int) -> float:
        attended = window * window if window else tokens
        return tokens * width * (6 + mlp_ratio) + heads * tokens * attended

    g = generator_config
    peak = max(block_elements(grid * grid, dim, window, g.mlp_ratio, g.num_attention_heads)
               for dim, grid, window in zip(g.stage_dims, g.stage_grid_sizes, g.window_sizes))
    if discriminator_config is not None:
        d = discriminator_config
        peak = max(peak, max(block_elements(grid * grid, dim, 0, d.mlp_ratio, d.num_attention_heads)  # as global
                             for dim, grid in zip(d.scale_dims, d.scale_grid_sizes)))
    return int(peak * torch.finfo(dtype).bits // 8)


def format_bytes(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def available_memory_bytes(device: torch.device) -> int | None:
    """Memory that a forward pass on `device` can still get, or None when unknown.

    Memory this process holds but has freed counts as available, since its next allocations reuse it: on CUDA,
    free device memory plus what PyTorch's caching allocator keeps unused; on a CPU, the system's MemAvailable (free
    pages plus caches the kernel can drop) plus the freed memory glibc's heap keeps (all of it once
    `transgan_hf.cpu_memory.reuse_freed_cpu_memory` is on, as in training and `transgan generate`).
    """
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable:"))
        return kib * 1024 + freed_heap_bytes()
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    try:  # other Unix systems: free pages only (what the system would give back quickly is unknown there)
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def freed_heap_bytes() -> int:
    """Bytes freed into glibc's heap and kept there for reuse (`mallinfo2().fordblks`); 0 with another C library."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError, TypeError):
        return 0
    mallinfo2.restype = _MallInfo2
    return int(mallinfo2().fordblks)


# ---------------------------------------------------------------------------------------------------------------------
# Folder and Hub helpers
# ---------------------------------------------------------------------------------------------------------------------


def looks_like_local_path(name: str) -> bool:
    """Paths, not repo ids: absolute, `./`, `~`, Windows drives, or more than one `/` (repo ids are `org/name`)."""
    return name.startswith((".", "/", "~", "\\")) or bool(re.match(r"^[A-Za-z]:", name)) or name.count("/") > 1


def resolve_pipeline_folder(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """The local folder of a pipeline: `name_or_path` itself, or the Hub snapshot of the repo id (downloaded or
    taken from the cache; offline, only the cache is used)."""
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        return Path(name)
    if os.path.exists(name) or looks_like_local_path(name):
        raise OSError(f"{name!r} is not a folder; pass a TransGANPipeline folder or a Hub repo id such as 'org/name'.")
    try:
        return Path(snapshot_download(name, revision=revision, token=token, cache_dir=cache_dir,
                                      local_files_only=bool(local_files_only), allow_patterns=HUB_FILES))
    except HFValidationError as error:
        raise OSError(f"{name!r} is neither a local folder nor a valid Hub repo id ({error}).") from None
    except (LocalEntryNotFoundError, IncompleteSnapshotError):
        where = "pass local_files_only=False" if local_files_only else "unset HF_HUB_OFFLINE or check the network"
        raise OSError(
            f"{name!r} is not a local folder, and the Hub repo {name!r}"
            f"{f' (revision {revision!r})' if revision else ''} is not (completely) in the Hugging Face cache "
            f"{str(cache_dir) if cache_dir else '(HF_HUB_CACHE)'} while the Hub cannot be reached. Download it once "
            f"with network access (`hf download {name}`) and {where}, or pass the path of a saved pipeline folder."
        ) from None
    except (RepositoryNotFoundError, GatedRepoError) as error:
        raise OSError(
            f"Hub repo {name!r} was not found or is not accessible ({type(error).__name__}); check the id, and pass "
            "`token=` (or run `hf auth login`) for a private or gated repo."
        ) from None
    except RevisionNotFoundError:
        message = f"Hub repo {name!r} has no revision {revision!r}; pass an existing branch, tag or commit."
        raise OSError(message) from None


def read_model_index(folder: Path) -> dict[str, Any]:
    """`model_index.json` of a TransGAN pipeline folder; `OSError` naming what is missing otherwise."""
    index_path = folder / MODEL_INDEX
    if not index_path.is_file():
        hint = ""
        if (folder / "config.json").is_file():
            hint = " It looks like a single model folder: load it with TransGANGenerator.from_pretrained instead."
        raise OSError(
            f"{str(folder)!r} is not a TransGANPipeline folder: it has no {MODEL_INDEX}. Pipeline folders are "
            f"written by TransGANPipeline.save_pretrained and `transgan convert`.{hint}"
        )
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise OSError(f"{str(index_path)!r} is not valid JSON ({error}); save the pipeline again.") from None
    check_model_index(index, index_path)
    if not (folder / "generator").is_dir():
        raise OSError(f"{str(folder)!r} has no generator/ folder; the pipeline was not saved completely.")
    if index.get("discriminator", [None])[0] is not None and not (folder / "discriminator").is_dir():
        raise OSError(f"{str(folder)!r} declares a discriminator but has no discriminator/ folder; save it again.")
    return index


def check_model_index(index: Any, index_path: Path) -> None:
    """`OSError` unless `index` is a TransGANPipeline `model_index.json`: the pipeline class, a generator entry
    `[library, "TransGANGenerator"]`, an optional discriminator entry, nothing else but `_` metadata."""
    where = f"{str(index_path)!r}"
    fix = "save the pipeline again with TransGANPipeline.save_pretrained"
    if not isinstance(index, dict):
        raise OSError(f"{where} must hold a JSON object, not a {type(index).__name__}; {fix}.")
    class_name = index.get("_class_name")
    if isinstance(class_name, list) and class_name:
        class_name = class_name[-1]
    if class_name != "TransGANPipeline":
        raise OSError(f"{where} describes a {class_name!r} pipeline, not a TransGANPipeline.")
    expected = {"generator": "TransGANGenerator", "discriminator": "TransGANDiscriminator"}
    for name, entry in index.items():
        if name.startswith("_"):
            continue
        if name not in expected:
            raise OSError(f"{where} declares a component {name!r} that a TransGANPipeline does not have; {fix}.")
        valid = (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                 and entry[1] == expected[name]) or (name == "discriminator" and entry == [None, None])
        if not valid:
            allowed = f'["<library>", "{expected[name]}"]' + (" or [null, null]" if name == "discriminator" else "")
            raise OSError(f"{where} has {name!r}: {json.dumps(entry)}, but it must be {allowed}; {fix}.")
    if "generator" not in index:
        raise OSError(f"{where} declares no TransGANGenerator component (no 'generator' entry); {fix}.")


def load_package_modules():
    """`transgan_hf.atomic_files` and `transgan_hf.model_card`; package-only (not part of the remote code of saved
    folders)."""
    try:
        from . import atomic_files, model_card
    except ImportError:
        raise ImportError(
            "Saving a TransGANPipeline writes its model card with the transgan_hf package, which is not importable "
            "here (this pipeline was loaded as remote code). Install transgan_hf (`pip install transgan-hf`) and load "
            "the pipeline with transgan_hf.TransGANPipeline.from_pretrained."
        ) from None
    return atomic_files, model_card


def hub_unreachable(error: BaseException) -> bool:
    """Offline mode, or a transport error of huggingface_hub's HTTP client (httpx2 from huggingface_hub 2, httpx
    before; matched by class name so that neither needs importing here)."""
    return isinstance(error, (OfflineModeIsEnabled, ConnectionError)) or any(
        cls.__name__ == "TransportError" for cls in type(error).__mro__
    )


@contextlib.contextmanager
def hub_errors_explained(repo_id: str) -> Iterator[None]:
    """Turn a Hub that cannot be reached into an `OSError` that says what to do."""
    try:
        yield
    except Exception as error:
        if not hub_unreachable(error):
            raise
        raise OSError(
            f"Cannot reach the Hugging Face Hub to push {repo_id!r} ({type(error).__name__}: {error}). Check the "
            "network and that HF_HUB_OFFLINE is not set; to keep the pipeline meanwhile, use save_pretrained(folder) "
            f"and upload the folder later (`hf upload {repo_id} folder`)."
        ) from None


def create_hub_repo(api: HfApi, repo_id: str, private: bool | None = None) -> str:
    """Create the model repo if it does not exist; returns its full id (`namespace/name`)."""
    with hub_errors_explained(repo_id):
        return api.create_repo(repo_id, private=private, exist_ok=True).repo_id


def upload_pipeline_folder(
    api: HfApi, folder: str | os.PathLike, repo_id: str, commit_message: str | None = None, create_pr: bool = False
) -> str:
    """Upload a saved pipeline folder to an existing repo; returns the commit URL."""
    with hub_errors_explained(repo_id):
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=os.fspath(folder), commit_message=commit_message or "Upload TransGANPipeline",
            create_pr=create_pr, ignore_patterns=[".*", "**/.*"],
        )
    return str(getattr(commit, "commit_url", commit))


__all__ = ["TransGANPipeline"]
