"""FID, KID, IS, precision/recall and density/coverage for TransGAN: the numeric core, the feature networks, and
evaluation drivers.

```python
from transgan_hf.metrics import compute_statistics, frechet_distance, precision_recall

mu1, sigma1 = compute_statistics(features1)  # (N, D) -> (D,), (D, D), float64
fid = frechet_distance(mu1, sigma1, mu2, sigma2)
precision_recall(real_features, fake_features, k=3)  # {"precision", "recall", "density", "coverage"}
```

Paper-comparable numbers use the FID Inception network (`feature_extractor="inception"`, weights file
`pt_inception-2015-12-05-6726825d.pth`, see `inception.py`); the MNIST demo uses the digit classifier
(`"digits"`, metric `fdd_mnist`, see `digits.py`). `evaluate` metric modules live in `evaluate_modules/`
(`evaluate.load(transgan_hf.metrics.evaluate_module_path("fid"))`).
"""

from pathlib import Path

from .core import (
    ReferenceStatistics,
    compute_statistics,
    frechet_distance,
    inception_score,
    kernel_distance,
    load_statistics,
    save_statistics,
    trace_sqrt_product,
)
from .digits import (
    DigitClassifier,
    DigitFeatureExtractor,
    digit_probabilities,
    load_digit_classifier,
    train_digit_classifier,
)
from .evaluation import (
    FEATURE_METRICS,
    METRICS,
    REFERENCE_METRICS,
    compute_metrics,
    compute_reference_statistics,
    evaluate_generator,
    extract_features,
    image_generators,
)
from .features import (
    FeatureExtractor,
    FeatureOutput,
    available_feature_extractors,
    build_feature_extractor,
    images_to_uint8,
    register_feature_extractor,
)
from .inception import (
    INCEPTION_WEIGHTS_ENV,
    INCEPTION_WEIGHTS_FILENAME,
    INCEPTION_WEIGHTS_URL,
    FIDInceptionFeatureExtractor,
    FIDInceptionV3,
    InceptionWeightsNotFoundError,
    load_fid_inception,
    resolve_inception_weights,
    tf1_bilinear_resize,
)
from .precision_recall import PRDC_METRICS, kth_neighbour_radii, precision_recall
from .reference import reference_batches

EVALUATE_MODULES = ("fid", "kid", "inception_score")


def evaluate_module_path(name: str) -> str:
    """Path of the packaged `evaluate` metric module `name` (fid, kid, inception_score), for `evaluate.load`."""
    if name not in EVALUATE_MODULES:
        raise ValueError(f"Unknown metric module {name!r}; choose from {list(EVALUATE_MODULES)}.")
    return str(Path(__file__).parent / "evaluate_modules" / name / f"{name}.py")


__all__ = [
    "FEATURE_METRICS",
    "METRICS",
    "PRDC_METRICS",
    "REFERENCE_METRICS",
    "DigitClassifier",
    "DigitFeatureExtractor",
    "EVALUATE_MODULES",
    "FIDInceptionFeatureExtractor",
    "FIDInceptionV3",
    "FeatureExtractor",
    "FeatureOutput",
    "INCEPTION_WEIGHTS_ENV",
    "INCEPTION_WEIGHTS_FILENAME",
    "INCEPTION_WEIGHTS_URL",
    "InceptionWeightsNotFoundError",
    "ReferenceStatistics",
    "available_feature_extractors",
    "build_feature_extractor",
    "compute_metrics",
    "compute_reference_statistics",
    "compute_statistics",
    "digit_probabilities",
    "evaluate_generator",
    "evaluate_module_path",
    "extract_features",
    "frechet_distance",
    "image_generators",
    "images_to_uint8",
    "inception_score",
    "kernel_distance",
    "kth_neighbour_radii",
    "load_digit_classifier",
    "load_fid_inception",
    "load_statistics",
    "precision_recall",
    "reference_batches",
    "register_feature_extractor",
    "resolve_inception_weights",
    "save_statistics",
    "tf1_bilinear_resize",
    "trace_sqrt_product",
    "train_digit_classifier",
]
