"""Evaluation during training: the hooks `main` calls every few steps, and the `--eval_steps` metrics hook."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger

from ..cli import CommandError
from ..data import CorruptImageError, DatasetError, find_image_column
from ..metrics import (
    FEATURE_METRICS,
    PRDC_METRICS,
    REFERENCE_METRICS,
    ReferenceStatistics,
    build_feature_extractor,
    compute_reference_statistics,
    evaluate_generator,
    load_statistics,
    reference_batches,
)
from ..pipeline_transgan import TransGANPipeline
from .dataloader import ImageSource
from .distributed import on_main_process

logger = get_logger(__name__, log_level="INFO")

NEAREST_K = 3
"""k of precision/recall/density/coverage during training (the papers' value)."""


@dataclass
class EvaluationContext:
    """What an evaluation hook gets: the EMA pipeline (on the device), the trained networks as prepared by the
    accelerator (possibly DDP-wrapped), progress, and the run's settings (as in `training_args.json`)."""

    accelerator: Accelerator
    pipeline: TransGANPipeline
    generator: torch.nn.Module
    discriminator: torch.nn.Module
    step: int
    kimg: float
    settings: Mapping[str, Any]


class EvaluationHook(Protocol):
    """Called every `every_steps` steps and after the last step, on every process (it may use collectives);
    returns scalars to log (e.g. `{"fid": 12.3}`, logged as `eval/fid`)."""

    every_steps: int

    def __call__(self, context: EvaluationContext) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class EvaluationSettings:
    """What `MetricEvaluation` computes (the `--eval_*` flags).

    `reference` is an `.npz` of reference statistics or "train": statistics of `training_images` (at `resolution`),
    computed at start-up. `batch_size` is the number of images per generator call on each process.
    """

    every_steps: int
    num_images: int
    metrics: Sequence[str]
    feature_extractor: str = "inception"
    inception_weights: str | None = None
    reference: str = "train"
    training_images: ImageSource | None = None
    resolution: int | None = None
    batch_size: int = 64
    seed: int = 0


class MetricEvaluation:
    """The `--eval_steps` hook: FID/KID/IS, precision/recall/density/coverage (or, on MNIST-5k, the digit-classifier
    metrics) of the EMA generator.

    Every process generates its share of `num_images` images and extracts their features; the features are
    gathered and the main process computes the metrics (`transgan_hf.metrics.evaluate_generator`, which never leaves
    a process waiting). Image `i` is drawn from seed `SeedSequence([seed, i])` at every evaluation, so the numbers
    over training differ only because the generator does. The feature network and the reference statistics are
    loaded when the hook is built, so a missing weights file stops the run before training starts.
    """

    def __init__(self, accelerator: Accelerator, settings: EvaluationSettings) -> None:
        self.every_steps = settings.every_steps
        self.settings = settings
        prdc = [name for name in PRDC_METRICS if name in settings.metrics]
        if prdc and settings.num_images <= NEAREST_K:
            raise CommandError(f"argument --eval_num_images: {', '.join(prdc)} use the {NEAREST_K} nearest neighbours; "
                               f"give more than {NEAREST_K} images, got {settings.num_images}.")
        self.batch_size = settings.batch_size
        try:
            self.feature_extractor = build_feature_extractor(
                settings.feature_extractor, device=accelerator.device,
                weights_path=settings.inception_weights if settings.feature_extractor == "inception" else None,
            )  # fmt: skip
        except (OSError, ValueError, ImportError) as error:
            raise CommandError(f"argument --eval_feature_extractor: {settings.feature_extractor!r}: {error}") from None
        self.reference: ReferenceStatistics | None = None
        if set(REFERENCE_METRICS) & set(settings.metrics):
            needs_features = [name for name in FEATURE_METRICS if name in settings.metrics]
            self.reference = on_main_process(accelerator, lambda: self._load_reference(needs_features))
        self.latest: dict[str, Any] | None = None

    def _load_reference(self, needs_features: list[str]) -> ReferenceStatistics:
        """The reference of FID (mu, sigma) and, when `needs_features` names metrics (KID, precision, ...), its
        features."""
        settings = self.settings
        if settings.reference != "train":
            try:
                reference = load_statistics(settings.reference)
            except (OSError, ValueError) as error:
                raise CommandError(f"argument --eval_reference: {error}") from None
            if needs_features and reference.features is None:
                named = ", ".join(needs_features)
                raise CommandError(f"{named} need reference features, but {settings.reference!r} has only mu/sigma; "
                                   f"make it with `transgan stats ... --save_features` or drop {named} from "
                                   "--eval_metrics.")
            return reference
        try:
            dataset = settings.training_images.load()
            column = find_image_column(dataset, settings.training_images.image_column)
            batches = reference_batches(dataset, column, len(dataset), self.batch_size, settings.resolution)
            return compute_reference_statistics(batches, self.feature_extractor, keep_features=bool(needs_features))
        except (DatasetError, CorruptImageError, ValueError) as error:
            raise CommandError(f"Cannot compute the evaluation reference from the training images: {error}") from None

    def __call__(self, context: EvaluationContext) -> dict[str, float]:
        settings, started = self.settings, time.perf_counter()
        ema_generator = context.pipeline.generator
        pipeline = TransGANPipeline(generator=ema_generator)
        pipeline.set_progress_bar_config(disable=True)

        def generate(generators: list[torch.Generator]) -> torch.Tensor:
            return pipeline(batch_size=len(generators), generator=generators, output_type="pt").images

        result = evaluate_generator(
            generate, settings.num_images, self.feature_extractor, self.reference, accelerator=context.accelerator,
            batch_size=self.batch_size, seed=settings.seed, metrics=settings.metrics, nearest_k=NEAREST_K,
            progress=False,
        )  # fmt: skip
        self.latest = {
            "step": context.step, "kimg": round(context.kimg, 3), "metrics": result["metrics"],
            "protocol": result["protocol"], "feature_extractor": result["feature_extractor"],
            "num_images": result["num_images"], "seed": result["seed"], "reference": settings.reference,
            "seconds": round(time.perf_counter() - started, 2),
        }  # fmt: skip
        summary = ", ".join(f"{name} {value:.4g}" for name, value in result["metrics"].items())
        logger.info(f"Evaluation at step {context.step} ({context.kimg:.1f} kimg): {summary}")  # main process only
        return result["metrics"]
