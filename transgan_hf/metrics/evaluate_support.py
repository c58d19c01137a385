"""Shared behaviour of the packaged `evaluate` metric modules (fid, kid, inception_score).

`evaluate` stores inputs as row-aligned Arrow columns, so a generated set of N images and a reference set of M images
cannot both be columns. The modules therefore have one column, `predictions` (images, stored as PNG through
`datasets.Image`, i.e. uint8 as the protocol wants), and take the reference as a `compute` argument:
`reference_statistics` (an `.npz` path, a `ReferenceStatistics`, or a dict with `mu`/`sigma` [+ `features`]) or
`references` (reference images, turned into statistics with the same feature network).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from .core import ReferenceStatistics, load_statistics
from .evaluation import compute_metrics, compute_reference_statistics, extract_features
from .features import FeatureExtractor, build_feature_extractor, images_to_uint8

COMMON_INPUTS_DESCRIPTION = """
Args:
    predictions: generated images: a float tensor/array in [0, 1] (B, 3, H, W) or (B, H, W, 3) as pipelines return
        them with `output_type="pt"`/`"np"`, uint8 arrays, or a list of PIL images. Quantised to uint8.
    reference_statistics: `.npz` path (`mu`/`sigma`, as written by `transgan stats` or the official fid_stat files),
        a `transgan_hf.metrics.ReferenceStatistics`, or a dict with `mu` and `sigma` (and `features` for KID).
    references: reference images instead of statistics (any number, any of the image formats above).
    feature_extractor: "inception" (default; TTUR FID network, needs its weights file), "digits" (MNIST demo
        network: metric names become fdd_mnist/kdd_mnist/digit_is_mnist), "module:factory", or an instance.
    inception_weights: path of pt_inception-2015-12-05-6726825d.pth (else $TRANSGAN_INCEPTION_WEIGHTS or the torch
        hub cache).
    batch_size: feature-network batch size (default 50). device: e.g. "cuda" (default CPU).
"""


def _image_batches(images, batch_size: int) -> Iterator:
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size]


class TransGANImageMetric:
    """Mixin for `evaluate.Metric` subclasses: image inputs in any common format, and `references=` of any length."""

    metric_ids: Sequence[str] = ()
    metric_description: str = ""
    metric_citation: str = ""
    metric_inputs_description: str = COMMON_INPUTS_DESCRIPTION
    metric_reference_urls: Sequence[str] = ()

    def _info(self):
        import datasets
        import evaluate

        return evaluate.MetricInfo(
            description=self.metric_description,
            citation=self.metric_citation,
            inputs_description=self.metric_inputs_description,
            features=datasets.Features({"predictions": datasets.Image()}),
            reference_urls=list(self.metric_reference_urls),
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of generated images (any format `images_to_uint8` accepts)."""
        if references is not None:
            raise ValueError("Pass reference images to `compute(references=...)`, not to `add_batch`.")
        if predictions is not None:
            predictions = list(images_to_uint8(predictions).permute(0, 2, 3, 1).numpy())
        return super().add_batch(predictions=predictions, **kwargs)

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Compute the metric; `references` (reference images) may have any length."""
        # `references` is not row-aligned with the predictions: pass it to `_compute` as an ordinary argument.
        if references is not None:
            kwargs["reference_images"] = references
        return super().compute(predictions=predictions, **kwargs)

    def _evaluate(
        self,
        predictions,
        reference_statistics=None,
        reference_images=None,
        feature_extractor: str | FeatureExtractor = "inception",
        inception_weights: str | None = None,
        batch_size: int = 50,
        device: str | None = None,
        **metric_options,
    ) -> dict[str, float]:
        extractor = build_feature_extractor(
            feature_extractor, weights_path=inception_weights if feature_extractor == "inception" else None,
            device=device,
        )  # fmt: skip
        images = images_to_uint8(list(predictions))
        features, logits = extract_features(
            _image_batches(images, batch_size), extractor, with_logits="is" in self.metric_ids
        )
        reference = None
        if {"fid", "kid"} & set(self.metric_ids):
            reference = self._reference(reference_statistics, reference_images, extractor, batch_size)
        return compute_metrics(features, logits, reference, extractor, self.metric_ids, **metric_options)

    def _reference(self, statistics, images, extractor: FeatureExtractor, batch_size: int) -> ReferenceStatistics:
        if (statistics is None) == (images is None):
            raise ValueError("Give exactly one of `reference_statistics` and `references` (reference images).")
        if images is not None:
            batches = _image_batches(images_to_uint8(images), batch_size)
            return compute_reference_statistics(batches, extractor, keep_features="kid" in self.metric_ids)
        if isinstance(statistics, ReferenceStatistics):
            return statistics
        if isinstance(statistics, Mapping):
            return ReferenceStatistics(
                np.asarray(statistics["mu"]), np.asarray(statistics["sigma"]), statistics.get("features")
            )
        return load_statistics(statistics)
