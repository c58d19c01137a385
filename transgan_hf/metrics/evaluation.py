"""Evaluation drivers: features of image batches, metrics against reference statistics, and `evaluate_generator`,
which also runs inside a distributed training loop.

`evaluate_generator` is deterministic and independent of the batch size and of the number of processes: image `i` is
always generated from its own `torch.Generator` seeded with `SeedSequence([seed, i])` (pipelines accept one generator
per image), batches are dealt round-robin to the ranks, and the gathered features are put back in image order before
the statistics are computed. So 1 or 8 processes give the same number (up to the float round-off of the networks on
different devices).

No rank can wait forever (the official code's hang, issue #73): every rank makes the same number of generator calls
(ranks with fewer batches make one throw-away call, so even a generator wrapped in DDP, whose forward synchronises
buffers, stays in step), then all ranks take part in the same collectives whatever happens: a gather of "did this rank
fail", the gather of the features, and a broadcast in which rank 0 sends either the metric values or its error
message. A failure on any rank is raised on every rank.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .core import ReferenceStatistics, frechet_distance, inception_score, kernel_distance, load_statistics
from .features import FeatureExtractor, images_to_uint8
from .precision_recall import PRDC_METRICS, precision_recall

METRICS = ("fid", "kid", "is", "confidence", *PRDC_METRICS)
FEATURE_METRICS = ("kid", *PRDC_METRICS)
"""Metrics that need the reference *features* (`transgan stats --save_features`), not only mu and sigma."""
REFERENCE_METRICS = ("fid", *FEATURE_METRICS)
"""Metrics computed against a reference set; IS and the classifier confidence need none."""

GenerateFn = Callable[[list[torch.Generator]], torch.Tensor]
"""`generate_fn(generators) -> images (len(generators), 3, H, W)`, float in [0, 1] (or uint8), on any device; image
`k` of the batch must be drawn from `generators[k]` only (as `TransGANPipeline(generator=[...])` does)."""


def image_generators(seed: int, start: int, count: int) -> list[torch.Generator]:
    """CPU generators of images `start .. start + count - 1` of an evaluation with `seed` (one per image)."""
    states = (np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] for index in
              range(start, start + count))
    return [torch.Generator().manual_seed(int(state)) for state in states]


@torch.no_grad()
def extract_features(
    batches: Iterable,
    feature_extractor: FeatureExtractor,
    with_logits: bool = False,
    progress: bool = False,
    total: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Features (N, D) (and logits (N, K)) of image batches (anything `images_to_uint8` accepts), as float32."""
    device = _module_device(feature_extractor)
    features, logits = [], []
    with tqdm(total=total, unit="img", disable=not progress, desc="features") as bar:
        for batch in batches:
            output = feature_extractor(images_to_uint8(batch).to(device))
            features.append(output.features.float().cpu())
            if with_logits:
                logits.append(_require_logits(output, feature_extractor).float().cpu())
            bar.update(len(output.features))
    if not features:
        raise ValueError("No images to extract features from.")
    return torch.cat(features).numpy(), (torch.cat(logits).numpy() if with_logits else None)


def compute_reference_statistics(
    batches: Iterable,
    feature_extractor: FeatureExtractor,
    keep_features: bool = False,
    progress: bool = False,
    total: int | None = None,
) -> ReferenceStatistics:
    """Statistics of a reference image set (for FID), optionally with its features (needed for KID)."""
    features, _ = extract_features(batches, feature_extractor, progress=progress, total=total)
    return ReferenceStatistics.from_features(features, keep_features, feature_extractor.name)


def compute_metrics(
    features: np.ndarray,
    logits: np.ndarray | None,
    reference: ReferenceStatistics | str | None,
    feature_extractor: FeatureExtractor,
    metrics: Sequence[str] = ("fid",),
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
    seed: int = 0,
    nearest_k: int = 3,
) -> dict[str, float]:
    """Metric values from generated-image features/logits, named as the feature network names them (precision,
    recall, density and coverage keep their names unless the network's `metric_names` renames them; `nearest_k` is
    their k, computed on the feature network's device)."""
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"Unknown metrics {unknown}; choose from {list(METRICS)}.")
    names = feature_extractor.metric_names
    results: dict[str, float] = {}
    if set(REFERENCE_METRICS) & set(metrics):
        reference = _check_reference(reference, feature_extractor, metrics)
    if "fid" in metrics:
        mu = features.astype(np.float64).mean(axis=0)
        sigma = np.cov(features.astype(np.float64), rowvar=False)
        results[names["fid"]] = frechet_distance(mu, sigma, reference.mu, reference.sigma)
    if "kid" in metrics:
        mean, std = kernel_distance(features, reference.features, kid_subsets, kid_subset_size, seed=seed)
        results[names["kid"]], results[names["kid"] + "_std"] = mean, std
    if "is" in metrics:
        probabilities = torch.from_numpy(logits).double().softmax(dim=1).numpy()
        mean, std = inception_score(probabilities, splits=is_splits)
        results[names["is"]], results[names["is"] + "_std"] = mean, std
    if "confidence" in metrics:
        if "confidence" not in names:
            raise ValueError(f"The feature network {feature_extractor.name!r} has no classifier-confidence metric.")
        probabilities = torch.from_numpy(logits).double().softmax(dim=1)
        results[names["confidence"]] = float(probabilities.max(dim=1).values.mean())
    if set(PRDC_METRICS) & set(metrics):
        values = precision_recall(reference.features, features, k=nearest_k, device=_module_device(feature_extractor))
        results.update({names.get(name, name): values[name] for name in PRDC_METRICS if name in metrics})
    return results


def _check_reference(reference, feature_extractor: FeatureExtractor, metrics: Sequence[str]) -> ReferenceStatistics:
    if reference is None:
        needing = ", ".join(name for name in REFERENCE_METRICS if name in metrics)
        raise ValueError(f"{needing} need reference statistics (an .npz from `transgan stats`, or reference images).")
    if not isinstance(reference, ReferenceStatistics):
        reference = load_statistics(reference)
    if reference.feature_extractor is not None and reference.feature_extractor != feature_extractor.name:
        raise ValueError(
            f"The reference statistics were computed with the feature network {reference.feature_extractor!r}, "
            f"but this evaluation uses {feature_extractor.name!r}; their values cannot be compared."
        )
    needing = [name for name in FEATURE_METRICS if name in metrics]
    if needing and reference.features is None:
        raise ValueError(
            f"{', '.join(needing)} need the reference features, but the statistics file has only mu/sigma; recreate "
            "it with `transgan stats ... --save_features`."
        )
    return reference


def _require_logits(output, feature_extractor: FeatureExtractor) -> torch.Tensor:
    if output.logits is None:
        raise ValueError(f"The feature network {feature_extractor.name!r} has no classifier logits; IS needs them.")
    return output.logits


def _module_device(module: torch.nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _needs_logits(metrics: Sequence[str]) -> bool:
    return bool({"is", "confidence"} & set(metrics))


@torch.no_grad()
def evaluate_generator(
    generate_fn: GenerateFn,
    num_images: int,
    feature_extractor: FeatureExtractor,
    reference: ReferenceStatistics | str | None = None,
    accelerator=None,
    batch_size: int = 64,
    seed: int = 0,
    metrics: Sequence[str] = ("fid",),
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
    nearest_k: int = 3,
    progress: bool = True,
) -> dict:
    """Generate `num_images` images, extract features and compute `metrics` (on every rank when distributed).

    `generate_fn(generators)` returns one image in [0, 1] per generator, e.g.
    `lambda generators: pipeline(batch_size=len(generators), generator=generators, output_type="pt").images`;
    during training build it on the *unwrapped* EMA generator.
    `accelerator` (an `accelerate.Accelerator`) is optional; without it a `torch.distributed` process group is used
    if one is initialised. The feature network must already be on this process's device.

    Returns `{"metrics": {name: value}, "num_images", "feature_extractor", "protocol", "seed"}` on every rank.
    """
    if num_images < 2:
        raise ValueError(f"num_images must be at least 2, got {num_images}.")
    if set(PRDC_METRICS) & set(metrics) and num_images <= nearest_k:
        raise ValueError(f"Precision/recall/density/coverage with k = {nearest_k} need more than {nearest_k} images, "
                         f"got {num_images}.")
    rank, world_size = _process_layout(accelerator)
    local_error = None
    if rank == 0 and set(REFERENCE_METRICS) & set(metrics):
        # A reference that cannot be used fails now, not after generating every image. Only the main process holds
        # it (the metrics are computed there); the error reaches the other ranks through the gather below.
        try:
            reference = _check_reference(reference, feature_extractor, metrics)
        except (OSError, ValueError) as error:
            local_error = error
    device = _module_device(feature_extractor)
    with_logits = _needs_logits(metrics)
    num_batches = math.ceil(num_images / batch_size)
    steps = math.ceil(num_batches / world_size)

    rows = steps * batch_size
    local_indices = torch.full((rows,), -1, dtype=torch.long, device=device)
    local_features = local_logits = None
    with tqdm(total=num_images, unit="img", disable=not progress or rank != 0, desc="evaluate") as bar:
        try:
            for step in range(steps if local_error is None else 0):
                batch_index = step * world_size + rank
                real_batch = batch_index < num_batches
                start = batch_index * batch_size
                size = min(batch_size, num_images - start) if real_batch else batch_size
                # Surplus calls draw images past the end (index >= num_images); they are never used.
                images = generate_fn(image_generators(seed, start, size))
                if len(images) != size:
                    raise ValueError(f"generate_fn returned {len(images)} images for {size} generators.")
                output = feature_extractor(images_to_uint8(images).to(device))
                if local_features is None:
                    local_features = torch.zeros(rows, output.features.shape[1], device=device)
                    if with_logits:
                        num_classes = _require_logits(output, feature_extractor).shape[1]
                        local_logits = torch.zeros(rows, num_classes, device=device)
                if not real_batch:
                    continue
                rows_of_batch = slice(step * batch_size, step * batch_size + size)
                local_features[rows_of_batch] = output.features.float()
                if with_logits:
                    local_logits[rows_of_batch] = _require_logits(output, feature_extractor).float()
                local_indices[rows_of_batch] = torch.arange(start, start + size, device=device)
                bar.update(min(size * world_size, num_images - bar.n))
        except Exception as error:  # reported to all ranks below instead of leaving them waiting in the gather
            local_error = error

    features, logits, indices = local_features, local_logits, local_indices
    if world_size > 1:
        failed = _gather(torch.tensor([int(local_error is not None)], device=device), accelerator)
        if failed.any():
            if local_error is not None:
                raise local_error
            raise RuntimeError(f"Evaluation failed on rank(s) {failed.nonzero().flatten().tolist()}; see their log.")
        features, indices = _gather(features, accelerator), _gather(indices, accelerator)
        logits = _gather(logits, accelerator) if with_logits else None
    elif local_error is not None:
        raise local_error

    payload, error = None, None
    if rank == 0:
        try:
            keep = indices >= 0
            order = torch.argsort(indices[keep])
            all_features = features[keep][order].cpu().numpy()
            all_logits = logits[keep][order].cpu().numpy() if with_logits else None
            payload = compute_metrics(
                all_features, all_logits, reference, feature_extractor, metrics,
                kid_subsets, kid_subset_size, is_splits, seed, nearest_k,
            )  # fmt: skip
        except Exception as caught:  # sent to the other ranks instead of leaving them waiting
            error, payload = caught, f"{type(caught).__name__}: {caught}"
    if world_size > 1:
        payload = _broadcast(payload, accelerator)
    if error is not None:
        raise error
    if isinstance(payload, str):
        raise RuntimeError(f"Evaluation failed on rank 0: {payload}")
    return {
        "metrics": payload,
        "num_images": num_images,
        "feature_extractor": feature_extractor.name,
        "protocol": feature_extractor.protocol,
        "seed": seed,
    }


def _process_layout(accelerator) -> tuple[int, int]:
    if accelerator is not None:
        return accelerator.process_index, accelerator.num_processes
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gather(tensor: torch.Tensor, accelerator) -> torch.Tensor:
    if accelerator is not None:
        return accelerator.gather(tensor)
    parts = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, tensor)
    return torch.cat(parts)


def _broadcast(payload, accelerator):
    objects = [payload]
    if accelerator is not None:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(objects, from_process=0)
    else:
        torch.distributed.broadcast_object_list(objects, src=0)
    return objects[0]
