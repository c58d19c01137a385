"""Improved precision/recall and density/coverage: hand-computed cases, an independent brute-force check, chunking,
and the metric names in `compute_metrics`, `evaluate_generator`, `transgan evaluate` and training's --eval_metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import StandInFeatures, tiny_pipeline

from transgan_hf.cli import CommandError, main
from transgan_hf.metrics import (
    METRICS,
    PRDC_METRICS,
    ReferenceStatistics,
    compute_metrics,
    evaluate_generator,
    extract_features,
    image_generators,
    precision_recall,
    register_feature_extractor,
    save_statistics,
)


def column(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)[:, None]


# Reals on a line at 0, 1, 3, 7; fakes at 2, 2.5, 6, 12.
REALS = column(0, 1, 3, 7)
FAKES = column(2, 2.5, 6, 12)


def test_points_on_a_line_k1_by_hand():
    # k = 1. Real radii (nearest other real): 0 -> 1, 1 -> 1, 3 -> 2, 7 -> 4; real balls [-1, 1], [0, 2], [1, 5],
    # [3, 11]. Fake radii (nearest other fake): 2 -> .5, 2.5 -> .5, 6 -> 3.5, 12 -> 6; fake balls [1.5, 2.5], [2, 3],
    # [2.5, 9.5], [6, 18].
    # Real balls holding each fake: 2 -> 2 ([0, 2] on its boundary, [1, 5]), 2.5 -> 1, 6 -> 1, 12 -> 0:
    #   precision 3/4, density (2 + 1 + 1 + 0) / (1 * 4) = 1.
    # Reals in some fake ball: 0 no, 1 no, 3 yes ([2, 3] on its boundary), 7 yes ([2.5, 9.5]): recall 2/4.
    # Nearest fake of each real within its radius: 0 (2 > 1) no, 1 (1 <= 1) yes, 3 (.5) yes, 7 (1) yes: coverage 3/4.
    assert precision_recall(REALS, FAKES, k=1) == {"precision": 0.75, "recall": 0.5, "density": 1.0,
                                                   "coverage": 0.75}


def test_points_on_a_line_k2_by_hand():
    # k = 2. Real radii: 0 -> 3, 1 -> 2, 3 -> 3, 7 -> 6; balls [-3, 3], [-1, 3], [0, 6], [1, 13]. Fake radii:
    # 2 -> 4, 2.5 -> 3.5, 6 -> 4, 12 -> 9.5; balls [-2, 6], [-1, 6], [2, 10], [2.5, 21.5].
    # Real balls holding each fake: 2 -> 4, 2.5 -> 4, 6 -> 2 ([0, 6] boundary, [1, 13]), 12 -> 1: precision 1,
    #   density (4 + 4 + 2 + 1) / (2 * 4) = 1.375 (density is not bounded by 1).
    # Every real lies in a fake ball (7 in [2, 10]): recall 1. Nearest fakes 2, 1, .5, 1 within 3, 2, 3, 6: coverage 1.
    assert precision_recall(REALS, FAKES, k=2) == {"precision": 1.0, "recall": 1.0, "density": 1.375,
                                                   "coverage": 1.0}


def test_the_roles_of_real_and_fake_swap_precision_with_recall():
    forward, backward = precision_recall(REALS, FAKES, k=1), precision_recall(FAKES, REALS, k=1)
    assert (forward["precision"], forward["recall"]) == (backward["recall"], backward["precision"])


def test_a_set_against_itself():
    features = np.random.default_rng(0).standard_normal((300, 12))
    for k in (1, 3, 5):
        values = precision_recall(features, features, k=k)
        assert values["precision"] == values["recall"] == values["coverage"] == 1.0
        # Fake j sits in its own real ball and in the balls of the k reals it is a k-nearest neighbour of:
        # the counts sum to N + k N (no ties in continuous data).
        assert values["density"] == pytest.approx(1 + 1 / k)
    duplicated = np.concatenate([features[:50], features[:50]])  # radius 0 for k = 1: the duplicate is the neighbour
    values = precision_recall(duplicated, duplicated, k=1)
    assert values["precision"] == values["recall"] == values["coverage"] == 1.0


def test_disjoint_sets_score_zero():
    rng = np.random.default_rng(1)
    values = precision_recall(rng.standard_normal((100, 4)), rng.standard_normal((80, 4)) + 100)
    assert values == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """The definitions with full distance matrices (independent of the chunked code)."""
    real_real = np.linalg.norm(real[:, None] - real[None], axis=2)
    fake_fake = np.linalg.norm(fake[:, None] - fake[None], axis=2)
    fake_real = np.linalg.norm(fake[:, None] - real[None], axis=2)  # (M, N)
    np.fill_diagonal(real_real, np.inf)
    np.fill_diagonal(fake_fake, np.inf)
    real_radii = np.sort(real_real, axis=1)[:, k - 1]
    fake_radii = np.sort(fake_fake, axis=1)[:, k - 1]
    inside = fake_real <= real_radii[None, :]
    return {
        "precision": inside.any(axis=1).mean(),
        "recall": (fake_real <= fake_radii[:, None]).any(axis=0).mean(),
        "density": inside.sum() / (k * len(fake)),
        "coverage": (fake_real.min(axis=0) <= real_radii).mean(),
    }


def clustered_sets(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reals in 4 clusters; fakes in 3 of them (one missed: recall < 1), wider, plus outliers (precision < 1)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4, 16)) * 4
    real = centres[rng.integers(0, 4, 400)] + rng.standard_normal((400, 16))
    fake = centres[rng.integers(0, 3, 250)] + 1.3 * rng.standard_normal((250, 16))
    fake[:20] = rng.standard_normal((20, 16)) * 12
    return real, fake


@pytest.mark.parametrize("k", [1, 3, 7])
def test_agrees_with_a_brute_force_computation(k):
    real, fake = clustered_sets()
    values = precision_recall(real, fake, k=k)
    expected = brute_force(real, fake, k)
    assert values == pytest.approx(expected, abs=1e-12)
    if k <= 3:  # (with k = 7 the outliers' wide balls reach the missed cluster)
        assert 0 < values["precision"] < 1 and 0 < values["recall"] < 1 and 0 < values["coverage"] < 1


def test_chunk_size_does_not_change_the_result():
    real, fake = clustered_sets(seed=2)
    results = [precision_recall(real, fake, chunk_size=size) for size in (1, 7, 64, 250, 10_000)]
    assert all(result == results[0] for result in results)


def test_tensors_float32_and_the_device_of_the_input():
    real, fake = clustered_sets(seed=3)
    exact = precision_recall(real, fake)
    single = precision_recall(torch.from_numpy(real).float(), torch.from_numpy(fake).float(), dtype=torch.float32)
    assert single == pytest.approx(exact, abs=0.01)  # float32 rounding may move a point across a ball's boundary


@pytest.mark.parametrize(
    "real,fake,kwargs,message",
    [
        (np.zeros((5, 2)), np.zeros((5, 3)), {}, "Feature sizes differ"),
        (np.zeros(5), np.zeros((5, 3)), {}, "2-D array"),
        (np.zeros((3, 2)), np.zeros((9, 2)), {}, "more than 3 real"),
        (np.zeros((9, 2)), np.zeros((2, 2)), {"k": 2}, "more than 2 fake"),
        (np.zeros((9, 2)), np.full((9, 2), np.nan), {}, "NaN"),
        (np.zeros((9, 2)), np.zeros((9, 2)), {"k": 0}, "k must be a positive integer"),
        (np.zeros((9, 2)), np.zeros((9, 2)), {"chunk_size": 0}, "chunk_size must be a positive integer"),
    ],
)
def test_bad_input_is_one_clear_error(real, fake, kwargs, message):
    with pytest.raises(ValueError, match=message):
        precision_recall(real, fake, **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# The metric names in the evaluation drivers
# ---------------------------------------------------------------------------------------------------------------------


def standin_features(weights_path=None) -> StandInFeatures:
    return StandInFeatures()


register_feature_extractor("standin", standin_features)


def features_of(images: torch.Tensor) -> np.ndarray:
    return extract_features([images], StandInFeatures())[0]


@pytest.fixture(scope="module")
def reference() -> ReferenceStatistics:
    images = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    return ReferenceStatistics.from_features(features_of(images), keep_features=True, feature_extractor="standin")


def test_metrics_list_names_precision_recall_density_coverage():
    assert set(PRDC_METRICS) <= set(METRICS)


def test_compute_metrics_gives_the_four_values(reference):
    fake = features_of(torch.rand(40, 3, 16, 16, generator=torch.Generator().manual_seed(6)) ** 2)
    values = compute_metrics(fake, None, reference, StandInFeatures(), ("fid", *PRDC_METRICS))
    assert set(values) == {"fid", *PRDC_METRICS}
    assert {name: values[name] for name in PRDC_METRICS} == precision_recall(reference.features, fake, k=3)
    two = compute_metrics(fake, None, reference, StandInFeatures(), ("recall",), nearest_k=5)
    assert two == {"recall": precision_recall(reference.features, fake, k=5)["recall"]}


def test_precision_needs_reference_features(reference):
    fake = features_of(torch.rand(8, 3, 16, 16))
    without = ReferenceStatistics(reference.mu, reference.sigma, feature_extractor="standin")
    with pytest.raises(ValueError, match=r"precision, coverage need the reference features.*--save_features"):
        compute_metrics(fake, None, without, StandInFeatures(), ("precision", "coverage"))
    with pytest.raises(ValueError, match="recall need reference statistics"):
        compute_metrics(fake, None, None, StandInFeatures(), ("recall",))


def generate_noise(generators: list[torch.Generator]) -> torch.Tensor:
    return torch.stack([torch.rand(3, 16, 16, generator=g) ** 3 for g in generators])


def test_evaluate_generator_with_precision_and_recall(reference):
    result = evaluate_generator(generate_noise, 30, StandInFeatures(), reference, batch_size=8, seed=4,
                                metrics=("precision", "recall"), progress=False)
    fake = features_of(generate_noise(image_generators(4, 0, 30)))
    expected = precision_recall(reference.features, fake)
    assert result["metrics"] == pytest.approx({"precision": expected["precision"], "recall": expected["recall"]},
                                              abs=1 / 30)  # batch round-off of the network may move one point
    with pytest.raises(ValueError, match="need more than 3 images"):  # before generating anything
        evaluate_generator(lambda generators: pytest.fail("generated"), 3, StandInFeatures(), reference,
                           metrics=("density",), progress=False)


def test_transgan_evaluate_metrics_flag(reference, tmp_path, capsys):
    folder = tmp_path / "pipeline"
    tiny_pipeline().save_pretrained(folder)
    statistics = save_statistics(tmp_path / "reference.npz", reference)
    code = main(["evaluate", "--model", str(folder), "--feature_extractor", "standin", "--reference", str(statistics),
                 "--num_images", "12", "--batch_size", "6", "--metrics", "precision,recall,density,coverage",
                 "--no_progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    values = json.loads(captured.out)["metrics"]
    assert set(values) == set(PRDC_METRICS)
    assert all(0 <= values[name] <= 1 for name in ("precision", "recall", "coverage")) and values["density"] >= 0

    mu_only = save_statistics(tmp_path / "mu_only.npz", ReferenceStatistics(reference.mu, reference.sigma))
    code = main(["evaluate", "--model", str(folder), "--feature_extractor", "standin", "--reference", str(mu_only),
                 "--num_images", "12", "--metrics", "fid,coverage", "--no_progress"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "coverage need the reference features" in errors[0]


def test_training_logs_precision_and_recall(micro_args, run_training_in_process, tmp_path):
    output = tmp_path / "run"
    run_training_in_process(micro_args(output, "--max_train_steps", "2", "--eval_steps", "2", "--eval_num_images",
                                       "8", "--eval_batch_size", "4", "--eval_feature_extractor", "standin",
                                       "--eval_metrics", "fid,precision,recall"))
    rows = [json.loads(line) for line in (output / "training_log.jsonl").read_text().splitlines()]
    evaluations = [row for row in rows if "eval/fid" in row]
    assert evaluations and all(0 <= row[f"eval/{name}"] <= 1 for row in evaluations for name in ("precision", "recall"))
    assert not any("eval/density" in row for row in rows)  # only what was asked for

    with pytest.raises(CommandError, match="--eval_num_images: precision use the 3 nearest neighbours"):
        run_training_in_process(micro_args(tmp_path / "few", "--max_train_steps", "1", "--eval_steps", "1",
                                           "--eval_num_images", "3", "--eval_feature_extractor", "standin",
                                           "--eval_metrics", "precision"))
