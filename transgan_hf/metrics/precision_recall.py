"""Improved precision and recall (Kynkäänniemi et al. 2019) and density and coverage (Naeem et al. 2020).

All four compare generated ("fake") feature vectors with real ones through k-nearest-neighbour balls, on any feature
network (Inception for paper-style numbers, the digit classifier for the MNIST demo). Real vector x_i gets the radius
r_i, the distance to its k-th nearest *other* real vector; fake vector y_j likewise gets s_j among the fakes. With N
reals, M fakes and closed balls (a point at distance exactly r_i is inside B(x_i, r_i)):

- precision = fraction of fakes inside at least one real ball B(x_i, r_i)          (are the fakes realistic?)
- recall    = fraction of reals inside at least one fake ball B(y_j, s_j)          (is the real variety produced?)
- density   = (1 / (k M)) * sum_j #{i : y_j in B(x_i, r_i)}   (not bounded by 1; about 1 when both sets match)
- coverage  = fraction of reals whose ball holds at least one fake, i.e. whose nearest fake is within r_i

So a set compared with itself has precision = recall = coverage = 1. The values depend on k and on the set sizes (the
papers use k = 3 and 50,000 images each; recall and coverage fall when fewer fakes than reals are drawn), so only
figures with the same k, sizes and feature network are comparable.

Memory stays bounded for 50,000 x 50,000: distances are computed `chunk_size` rows at a time against the whole other
set, and only what the metrics need is kept (the k-th neighbour radii, each fake's count of real balls, and two flags
per real). A block of squared distances |a|^2 + |b|^2 - 2 a.b is one matrix product; the pair (a, b) gives the same
value in any block, so the chunk size does not change the result. Squared distances are compared with squared radii,
in float64 by default.
"""

from __future__ import annotations

import numpy as np
import torch

PRDC_METRICS = ("precision", "recall", "density", "coverage")
"""The metric names `precision_recall` returns (and `evaluate_generator(metrics=...)` accepts)."""

DEFAULT_CHUNK_SIZE = 512
"""Rows per block: a block of 512 x 50,000 float64 distances is 205 MB."""


def _as_matrix(features, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    elif not isinstance(features, torch.Tensor):
        features = torch.as_tensor(np.asarray(features))
    if features.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (num_samples, num_features), got shape {tuple(features.shape)}.")
    if features.is_complex() or features.dtype == torch.bool:
        raise ValueError(f"{name} must hold real numbers, got dtype {features.dtype}.")
    features = features.detach().to(device=device, dtype=dtype)
    if not torch.isfinite(features).all():
        raise ValueError(f"{name} contain NaN or infinite values; the feature network or the images are broken.")
    return features


def _squared_distances(rows: torch.Tensor, rows_norms: torch.Tensor, others: torch.Tensor,
                       others_norms: torch.Tensor) -> torch.Tensor:
    """(len(rows), len(others)) squared Euclidean distances; round-off below 0 is clipped."""
    return (rows_norms[:, None] + others_norms[None, :]).addmm_(rows, others.T, alpha=-2).clamp_min_(0)


def _squared_norms(features: torch.Tensor) -> torch.Tensor:
    return (features * features).sum(dim=1)


def kth_neighbour_radii(features: torch.Tensor, k: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Squared distance of every row of `features` (N, D) to its k-th nearest other row (the row itself excluded by
    index, so a duplicate of it counts as a neighbour at distance 0)."""
    norms = _squared_norms(features)
    radii = torch.empty(len(features), dtype=features.dtype, device=features.device)
    for start in range(0, len(features), chunk_size):
        stop = min(start + chunk_size, len(features))
        distances = _squared_distances(features[start:stop], norms[start:stop], features, norms)
        rows = torch.arange(stop - start, device=features.device)
        distances[rows, rows + start] = float("inf")
        radii[start:stop] = distances.topk(k, dim=1, largest=False).values[:, k - 1]
    return radii


def precision_recall(
    real_features,
    fake_features,
    k: int = 3,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> dict[str, float]:
    """Precision, recall, density and coverage of `fake_features` (M, D) against `real_features` (N, D).

    Arrays or tensors; `device` defaults to that of `real_features` when it is a tensor, else the CPU. `dtype`
    float32 halves memory and time (on a GPU, much more) at the cost of rounding near the ball boundaries.
    Returns `{"precision", "recall", "density", "coverage"}` as floats (see the module docstring).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    if device is None:
        device = real_features.device if isinstance(real_features, torch.Tensor) else torch.device("cpu")
    real = _as_matrix(real_features, "real_features", torch.device(device), dtype)
    fake = _as_matrix(fake_features, "fake_features", torch.device(device), dtype)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"Feature sizes differ: real {real.shape[1]} vs fake {fake.shape[1]}; they come from "
                         "different feature networks.")
    for name, features in (("real", real), ("fake", fake)):
        if len(features) <= k:
            raise ValueError(f"k = {k} nearest neighbours need more than {k} {name} feature vectors, got "
                             f"{len(features)}.")

    real_radii = kth_neighbour_radii(real, k, chunk_size)
    fake_radii = kth_neighbour_radii(fake, k, chunk_size)
    real_norms, fake_norms = _squared_norms(real), _squared_norms(fake)
    balls_per_fake = torch.empty(len(fake), dtype=torch.long, device=real.device)  # real balls holding fake j
    real_covered = torch.zeros(len(real), dtype=torch.bool, device=real.device)  # a fake lies in real i's ball
    real_recalled = torch.zeros(len(real), dtype=torch.bool, device=real.device)  # real i lies in some fake's ball
    for start in range(0, len(fake), chunk_size):
        stop = min(start + chunk_size, len(fake))
        distances = _squared_distances(fake[start:stop], fake_norms[start:stop], real, real_norms)
        in_real_balls = distances <= real_radii[None, :]
        balls_per_fake[start:stop] = in_real_balls.sum(dim=1)
        real_covered |= in_real_balls.any(dim=0)
        real_recalled |= (distances <= fake_radii[start:stop, None]).any(dim=0)
    return {
        "precision": float((balls_per_fake > 0).double().mean()),
        "recall": float(real_recalled.double().mean()),
        "density": float(balls_per_fake.sum().double() / (k * len(fake))),
        "coverage": float(real_covered.double().mean()),
    }
