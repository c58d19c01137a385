"""`TransGANPipeline`: unconditional image sampling with a TransGAN generator, in the style of diffusers' DDPMPipeline.

This module is also the pipeline code that `save_pretrained(folder, remote_code=True)` writes for diffusers alone
(`DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`; see `transgan_hf.remote_code`). So at module
level it imports only torch, diffusers and sibling modules that travel with it; loading, saving, the Hub and
projection are package-only (`transgan_hf.pipeline_folder`, `transgan_hf.projection`), imported by name in the
methods, out of the sight of diffusers' import scan.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType
from typing import Any

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput

from .configuration_transgan import TransGANDiscriminatorConfig, TransGANGeneratorConfig
from .modeling_transgan import TransGANDiscriminator, TransGANGenerator
from .sampling import (
    GeneratorArg,
    draw_latents,
    eval_mode,
    forward_passes,
    per_image_generators,
    samples_per_pass,
    select_best,
    slerp,
)

OUTPUT_TYPES = ("pil", "np", "pt")
MAX_SAMPLES_PER_CALL = 2**16
"""Samples (`batch_size * num_candidates`) of one call; larger jobs are several calls (`transgan generate` does it)."""
MAX_INTERPOLATION_STEPS = 4096
MAX_PROJECTION_STEPS = 100_000


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
        device = self._execution_device
        # A generator of a list serves all candidates of its image: they stay in one pass, so that it draws as unsplit.
        pass_size = samples_per_pass(self.generator, self.discriminator if num_candidates > 1 else None, device,
                                     num_samples, unit=num_candidates if generators is not None else 1)

        if latents is None:
            latents = self.sample_latents(num_samples, generators if generators is not None else generator, truncation)
        latents = latents.to(device)
        # With per-image generators, every candidate of image i draws its noise from generator i.
        noise_generator = generator if generators is None else [g for g in generators for _ in range(num_candidates)]

        with eval_mode(self.generator, self.discriminator):
            images, scores = [], []
            for rows, noise in forward_passes(noise_generator, num_samples, pass_size):
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
        step_generators = [torch.Generator().set_state(noise_state) for _ in range(num_steps)]
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

    # -----------------------------------------------------------------------------------------------------------------
    # Projection: package-only, in `transgan_hf.projection`
    # -----------------------------------------------------------------------------------------------------------------

    def project(
        self,
        images: Any,
        num_steps: int = 200,
        num_starts: int = 4,
        generator: torch.Generator | None = None,
        noise_seed: int = 0,
        output_type: str = "pil",
        return_dict: bool = True,
        record_every: int | None = None,
    ) -> BaseOutput | tuple:
        r"""Find the latents whose images reproduce `images` (projection, as StyleGAN2-ADA's `projector.py`).

        The objective, the starts and the schedule are described in `transgan_hf.projection`. Offline: no perceptual
        network is downloaded. Package-only (not part of the remote code).

        Args:
            images: a PIL image, an image file path, a NumPy array (`(H, W[, C])`, or `(B, H, W, C)`; uint8 or floats
                in [0, 1]), a tensor in [0, 1] (`(C, H, W)` or `(B, C, H, W)`, as `output_type="pt"` gives), or a list
                of these. Read as training reads images: converted to RGB, shorter side resized to the model's size,
                centre-cropped.
            num_steps: optimisation steps (1 to `MAX_PROJECTION_STEPS`).
            num_starts: starting latents per image, the pool samples nearest to it; after the first 30 % of the steps
                only the best one goes on.
            generator: a `torch.Generator` drawing the pool of starting latents (seeded: reproducible results).
            noise_seed: with noise injection, the noise is held fixed: that of
                `torch.Generator().manual_seed(noise_seed)` for one image, so that
                `pipe(latents=out.latents, generator=[torch.Generator().manual_seed(noise_seed) for _ in out.latents])`
                gives the reconstructions back.
            output_type: `"pil"`, `"np"` or `"pt"` for the reconstructions, as in `__call__`.
            return_dict: return a [`~transgan_hf.projection.TransGANProjectionOutput`] instead of a tuple
                `(images, latents)`.
            record_every: also return the latents of every `record_every`-th step (`trajectory`, for an animation).

        Returns `images` (the reconstructions), `latents` (`(B, latent_dim)` float32, CPU), `distances` (the final
        multi-scale squared error of each image) and `trajectory`.
        """
        check_output_type(output_type)
        if not isinstance(return_dict, bool):
            raise ValueError(f"`return_dict` must be True or False, got {return_dict!r}.")
        check_positive_int("num_steps", num_steps, 1, MAX_PROJECTION_STEPS)
        check_positive_int("num_starts", num_starts)
        check_seed("noise_seed", noise_seed)
        if record_every is not None:
            check_positive_int("record_every", record_every)
        if not isinstance(generator, (torch.Generator, type(None))):
            raise ValueError("`generator` must be one torch.Generator (it draws the pool of starting latents shared "
                             f"by all images) or None, got {type(generator).__name__}.")
        projection = package_only("project", "projection")
        result = projection.project_images(self, images, num_steps, num_starts, generator, noise_seed, record_every)
        images = self.image_processor.postprocess(result.images, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, result.latents)
        return projection.TransGANProjectionOutput(images=images, latents=result.latents,
                                                   distances=result.distances, trajectory=result.trajectory)

    # -----------------------------------------------------------------------------------------------------------------
    # Loading, saving and sharing: package-only, in `transgan_hf.pipeline_folder`
    # -----------------------------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> TransGANPipeline:
        r"""Load a pipeline from a local folder or a Hub repo id (`revision`, `token`, `cache_dir`,
        `local_files_only`; `HF_HUB_OFFLINE` uses the cache only), with this package's classes, whichever layout
        `model_index.json` records (package or remote code).

        Keyword args:
            dtype (or `torch_dtype`), device_map: passed to the components' `from_pretrained`.
            generator, discriminator: ready-made components to use instead of loading them (`discriminator=None`
                skips the discriminator).
        """
        return package_only("from_pretrained").load_pipeline(cls, pretrained_model_name_or_path, **kwargs)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        model_card_kwargs: dict[str, Any] | None = None,
        remote_code: bool | None = None,
        **kwargs: Any,
    ) -> None:
        r"""Write `model_index.json`, `generator/`, `discriminator/` (safetensors) and the model card `README.md`
        into `save_directory`, through a staging folder (a failure leaves it as it was; its other files stay).

        Args:
            model_card_kwargs: keyword arguments of [`transgan_hf.model_card.make_model_card`].
            remote_code: also write the pipeline code, so that diffusers alone loads the folder
                (`DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`). Default: only with `push_to_hub`.
            kwargs: `push_to_hub=True` (with `repo_id`, `token`, `private`, `commit_message`, `create_pr`) uploads the
                saved folder; the rest goes to `DiffusionPipeline.save_pretrained`.
        """
        package_only("save_pretrained").save_pipeline(self, save_directory, model_card_kwargs, remote_code, **kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
    ) -> str:
        """Create (or reuse) the Hub repo and upload the pipeline with its remote code and card; returns the commit
        URL. Raises `OSError` with what to do when the Hub cannot be reached."""
        return package_only("push_to_hub").push_pipeline(
            self, repo_id, commit_message=commit_message, private=private, token=token, create_pr=create_pr,
            model_card_kwargs=model_card_kwargs,
        )


def package_only(method: str, module: str = "pipeline_folder") -> ModuleType:
    """`transgan_hf.<module>` (default `pipeline_folder`); a clear `ImportError` where this file runs as remote
    code."""
    name = f"{__package__}.{module}"
    if importlib.util.find_spec(name) is None:
        raise ImportError(
            f"TransGANPipeline.{method} is part of the transgan_hf package, not of the remote code this pipeline was "
            "loaded from. Install transgan_hf (`pip install transgan-hf`) and load the pipeline with "
            "transgan_hf.TransGANPipeline.from_pretrained."
        )
    return importlib.import_module(name)


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


__all__ = ["TransGANPipeline"]
