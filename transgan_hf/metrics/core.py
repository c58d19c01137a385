"""The numeric core of FID, KID and IS, in NumPy float64, plus `.npz` reference-statistics files.

Everything here works on feature vectors / class probabilities that a feature network already produced, so it is
independent of the network (Inception for paper numbers, the digit classifier for the MNIST demo, anything in tests).

Conventions (those of the TTUR code the TransGAN paper reports with):
- statistics are the mean and the unbiased (N - 1) covariance of the features, in float64;
- FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).
  The trace of the matrix square root is computed as tr((R S2 R)^(1/2)) with R = S1^(1/2): the product R S2 R is
  symmetric positive semi-definite (same eigenvalues as S1 S2), so a symmetric eigen-decomposition gives real,
  non-negative eigenvalues. This cannot produce NaN or complex values, also for identical or rank-deficient sets
  (the official code's FID = NaN, issue #49, came from a float32 Newton-Schulz iteration on the non-symmetric S1 S2);
- KID = unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets;
- IS = exp(E_x KL(p(y|x) || p(y))), computed on consecutive splits (10 by default), mean and std over splits.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic_files import atomic_write

STATISTICS_KEYS = ("mu", "sigma")
# The official torch FID reader also accepts these names.
ALTERNATIVE_STATISTICS_KEYS = ("mean", "cov")


@dataclass
class ReferenceStatistics:
    """Reference statistics of a data set: `mu` (D,), `sigma` (D, D) and, for KID, optionally the features (N, D)."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None = None
    num_images: int | None = None
    feature_extractor: str | None = None

    def __post_init__(self) -> None:
        self.mu = np.asarray(self.mu, dtype=np.float64)
        self.sigma = np.asarray(self.sigma, dtype=np.float64)
        _check_statistics(self.mu, self.sigma, "reference statistics")
        if self.features is not None:
            self.features = np.asarray(self.features)
            if self.features.ndim != 2 or self.features.shape[1] != self.mu.shape[0]:
                raise ValueError(
                    f"Reference features have shape {self.features.shape}; expected (N, {self.mu.shape[0]})."
                )

    @classmethod
    def from_features(cls, features, keep_features: bool = False, feature_extractor: str | None = None):
        features = _as_float64_matrix(features, "features")
        mu, sigma = compute_statistics(features)
        return cls(mu, sigma, features.astype(np.float32) if keep_features else None, len(features), feature_extractor)


def _as_float64_matrix(features, name: str) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (num_samples, num_features), got shape {features.shape}.")
    if not np.all(np.isfinite(features)):
        raise ValueError(f"{name} contain NaN or infinite values; the feature network or the images are broken.")
    return features


def _check_statistics(mu: np.ndarray, sigma: np.ndarray, name: str) -> None:
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{name}: mu must be (D,) and sigma (D, D); got {mu.shape} and {sigma.shape}.")


def compute_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of `features` (N, D), both float64, as in the TTUR code."""
    features = _as_float64_matrix(features, "features")
    if features.shape[0] < 2:
        raise ValueError(f"At least 2 feature vectors are needed for a covariance, got {features.shape[0]}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues clipped to 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((sigma1 sigma2)^(1/2)) for covariance matrices, via the symmetric form (see the module docstring)."""
    root1 = _psd_sqrt(np.asarray(sigma1, dtype=np.float64))
    product = root1 @ np.asarray(sigma2, dtype=np.float64) @ root1
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (FID when the statistics are Inception features)."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    _check_statistics(mu1, sigma1, "first statistics")
    _check_statistics(mu2, sigma2, "second statistics")
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"The statistics have different feature sizes ({mu1.shape[0]} vs {mu2.shape[0]}): they come from "
            "different feature networks."
        )
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    if not np.isfinite(value):
        raise ValueError("The statistics contain NaN or infinite values.")
    # Mathematically >= 0; clip the round-off of (nearly) identical statistics.
    return float(max(value, 0.0))


def kernel_distance(
    features1,
    features2,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    degree: int = 3,
    coef: float = 1.0,
) -> tuple[float, float]:
    """KID: mean and std over `num_subsets` random subsets of the unbiased polynomial-kernel MMD^2.

    `subset_size` is capped at the smaller set size, so that short evaluations during training still give a value.
    Subsets are drawn without replacement from a seeded NumPy generator; the MMD^2 is torchmetrics' `poly_mmd`.
    """
    from torchmetrics.image.kid import poly_mmd

    features1 = torch.from_numpy(_as_float64_matrix(features1, "features1"))
    features2 = torch.from_numpy(_as_float64_matrix(features2, "features2"))
    if features1.shape[1] != features2.shape[1]:
        raise ValueError(f"Feature sizes differ: {features1.shape[1]} vs {features2.shape[1]}.")
    subset_size = min(subset_size, len(features1), len(features2))
    if subset_size < 2:
        raise ValueError("KID needs at least 2 samples in each set.")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        subset1 = torch.from_numpy(rng.choice(len(features1), subset_size, replace=False))
        subset2 = torch.from_numpy(rng.choice(len(features2), subset_size, replace=False))
        values.append(float(poly_mmd(features1[subset1], features2[subset2], degree=degree, coef=coef)))
    return float(np.mean(values)), float(np.std(values))


def inception_score(probabilities, splits: int = 10) -> tuple[float, float]:
    """IS mean and std over `splits` consecutive splits of class probabilities (N, K) (softmax outputs)."""
    probabilities = _as_float64_matrix(probabilities, "probabilities")
    if np.any(probabilities < 0) or not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("inception_score expects class probabilities (non-negative rows summing to 1); apply softmax.")
    if len(probabilities) < splits:
        raise ValueError(f"{len(probabilities)} samples cannot be split into {splits} splits.")
    scores = []
    for part in np.array_split(probabilities, splits):
        marginal = part.mean(axis=0, keepdims=True)
        # p log(p / marginal) with 0 log 0 = 0 (one-hot predictions are valid input)
        ratio = np.divide(part, marginal, out=np.ones_like(part), where=part > 0)
        kl = (part * np.log(ratio)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


# ---------------------------------------------------------------------------------------------------------------------
# .npz statistics files (TTUR / official TransGAN `fid_stat` format)
# ---------------------------------------------------------------------------------------------------------------------


def load_statistics(path: str | os.PathLike) -> ReferenceStatistics:
    """Read reference statistics from `.npz` with `mu`/`sigma` (or `mean`/`cov`); optional `features` for KID.

    Never unpickles (`allow_pickle=False`), and every array is checked before use, so a malformed file is a
    `ValueError` naming the file and the array rather than a wrong number later.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Reference statistics {str(path)!r} {'is a folder' if path.is_dir() else 'do not exist'}; create them "
            "with `transgan stats --dataset_name ... --output_file FILE.npz` or use the official fid_stat/*.npz file."
        )
    try:
        data = np.load(path, allow_pickle=False) if zipfile.is_zipfile(path) else None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("not a zip archive of .npy arrays")
        with data:
            contents = {key: data[key] for key in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{str(path)!r} is not a readable .npz statistics file ({error}).") from None
    for mu_key, sigma_key in (STATISTICS_KEYS, ALTERNATIVE_STATISTICS_KEYS):
        if mu_key in contents and sigma_key in contents:
            break
    else:
        raise ValueError(
            f"{str(path)!r} has the arrays {sorted(contents)}; reference statistics need 'mu' and 'sigma' "
            "(or 'mean' and 'cov')."
        )
    arrays = {key: _real_array(contents, key, path) for key in (mu_key, sigma_key, "features") if key in contents}
    num_images = contents.get("num_images")
    if num_images is not None and (num_images.shape != () or num_images.dtype.kind not in "iu" or num_images < 0):
        raise ValueError(f"{str(path)!r}: 'num_images' must be one non-negative integer, got {num_images!r}.")
    extractor = contents.get("feature_extractor")
    if extractor is not None and (extractor.shape != () or extractor.dtype.kind != "U"):
        raise ValueError(f"{str(path)!r}: 'feature_extractor' must be one string, got {extractor!r}.")
    try:
        return ReferenceStatistics(
            arrays[mu_key], arrays[sigma_key], arrays.get("features"),
            None if num_images is None else int(num_images), None if extractor is None else str(extractor),
        )  # fmt: skip
    except ValueError as error:
        raise ValueError(f"{str(path)!r}: {error}") from None


def _real_array(contents: dict[str, np.ndarray], key: str, path: Path) -> np.ndarray:
    array = contents[key]
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{str(path)!r}: {key!r} must hold real numbers, got dtype {array.dtype}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{str(path)!r}: {key!r} contains NaN or infinite values; recreate the file.")
    return array


def save_statistics(path: str | os.PathLike, statistics: ReferenceStatistics) -> Path:
    """Write `mu`, `sigma` (+ `features`, `num_images`, `feature_extractor` when known) atomically to `.npz`."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"Statistics files end in .npz, got {str(path)!r}.")
    arrays = {"mu": statistics.mu, "sigma": statistics.sigma}
    if statistics.features is not None:
        arrays["features"] = statistics.features
    if statistics.num_images is not None:
        arrays["num_images"] = np.asarray(statistics.num_images)
    if statistics.feature_extractor is not None:
        arrays["feature_extractor"] = np.asarray(statistics.feature_extractor)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as temporary, open(temporary, "wb") as file:
        np.savez(file, **arrays)
    return path
