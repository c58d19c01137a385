"""The numeric core (FID, KID, IS, .npz statistics), the digit classifier, and distributed evaluation."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import scipy.linalg
import torch
from helpers import StandInFeatures

from transgan_hf.metrics import (
    ReferenceStatistics,
    compute_metrics,
    compute_statistics,
    evaluate_generator,
    frechet_distance,
    images_to_uint8,
    inception_score,
    kernel_distance,
    load_statistics,
    save_statistics,
    trace_sqrt_product,
)


def random_spd(dim: int, seed: int, condition: float = 10.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (q * np.linspace(1.0, condition, dim)) @ q.T


def features_with_moments(mu: np.ndarray, sigma: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n samples whose sample mean and (N-1) covariance are exactly mu and sigma."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, len(mu)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample covariance = I
    return z @ np.linalg.cholesky(sigma).T + mu


def ttur_reference_fid(mu1, sigma1, mu2, sigma2) -> float:
    """The TTUR formula with scipy's sqrtm, in float64 (the reference the issue asks to agree with)."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real))


# ---------------------------------------------------------------------------------------------------------------------
# FID
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_samples", [500, 20])  # 20 < 64 features: singular covariance
def test_fid_of_a_set_with_itself_is_zero(num_samples):
    features = np.random.default_rng(0).standard_normal((num_samples, 64)) * 3 + 1
    mu, sigma = compute_statistics(features)
    value = frechet_distance(mu, sigma, mu, sigma)
    assert np.isfinite(value) and 0 <= value < 1e-6


def test_fid_identical_rank_one_covariances_is_finite():
    # The official float32 Newton-Schulz code returned NaN here (TransGAN issue #49).
    sigma = np.outer(np.arange(1, 9), np.arange(1, 9)).astype(np.float64)
    value = frechet_distance(np.zeros(8), sigma, np.zeros(8), sigma)
    assert np.isfinite(value) and value < 1e-6


def test_compute_statistics_matches_numpy():
    features = np.random.default_rng(1).standard_normal((50, 6)).astype(np.float32)
    mu, sigma = compute_statistics(torch.from_numpy(features))
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, features.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(features.astype(np.float64), rowvar=False), rtol=1e-12)
    with pytest.raises(ValueError, match="At least 2"):
        compute_statistics(features[:1])
    with pytest.raises(ValueError, match="NaN"):
        compute_statistics(np.full((3, 2), np.nan))


def test_fid_of_gaussian_feature_sets_equals_closed_form():
    dim = 16
    mu1, mu2 = np.zeros(dim), np.linspace(-1, 1, dim)
    sigma1 = random_spd(dim, seed=2)
    scale = 2.25  # sigma2 = scale * sigma1 does not commute trivially with anything but sigma1
    sigma2 = scale * sigma1
    # Closed form: |mu1 - mu2|^2 + (1 - sqrt(scale))^2 tr(sigma1)
    expected = np.sum((mu1 - mu2) ** 2) + (1 - np.sqrt(scale)) ** 2 * np.trace(sigma1)
    set1 = features_with_moments(mu1, sigma1, 400, seed=3)
    set2 = features_with_moments(mu2, sigma2, 300, seed=4)
    value = frechet_distance(*compute_statistics(set1), *compute_statistics(set2))
    assert value == pytest.approx(expected, rel=1e-9)

    # Diagonal covariances: sum of (sqrt(a_i) - sqrt(b_i))^2
    a, b = np.linspace(0.5, 2, dim), np.linspace(3, 0.1, dim)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_fid_agrees_with_scipy_sqrtm_reference():
    dim = 48
    rng = np.random.default_rng(5)
    for seed in range(3):
        mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim)
        sigma1, sigma2 = random_spd(dim, seed=10 + seed), random_spd(dim, seed=20 + seed, condition=50)
        reference = ttur_reference_fid(mu1, sigma1, mu2, sigma2)
        assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(reference, rel=1e-6)
        trace_reference = np.trace(scipy.linalg.sqrtm(sigma1 @ sigma2).real)
        assert trace_sqrt_product(sigma1, sigma2) == pytest.approx(trace_reference, rel=1e-6)
    # Sample statistics of real-looking features (N > D), as in an actual evaluation
    set1, set2 = rng.standard_normal((300, dim)), rng.standard_normal((250, dim)) * 1.3 + 0.2
    stats1, stats2 = compute_statistics(set1), compute_statistics(set2)
    assert frechet_distance(*stats1, *stats2) == pytest.approx(ttur_reference_fid(*stats1, *stats2), rel=1e-6)


def test_fid_rejects_mismatched_statistics():
    with pytest.raises(ValueError, match="different feature sizes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="sigma"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))


# ---------------------------------------------------------------------------------------------------------------------
# KID and IS
# ---------------------------------------------------------------------------------------------------------------------


def hand_kid(x: np.ndarray, y: np.ndarray) -> float:
    d, m, n = x.shape[1], len(x), len(y)

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_a_hand_computation():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 3)) + 0.5
    # One subset of the full sets: a permutation of each set, which the MMD does not depend on.
    mean, std = kernel_distance(x, y, num_subsets=1, subset_size=5)
    assert mean == pytest.approx(hand_kid(x, y), rel=1e-10)
    assert std == 0.0
    # Several subsets: the mean of the hand values on the same subsets (same seeded draws).
    draws = np.random.default_rng(7)
    expected = []
    for _ in range(4):
        i, j = draws.choice(5, 3, replace=False), draws.choice(5, 3, replace=False)
        expected.append(hand_kid(x[i], y[j]))
    mean, std = kernel_distance(x, y, num_subsets=4, subset_size=3, seed=7)
    assert mean == pytest.approx(np.mean(expected), rel=1e-10)
    assert std == pytest.approx(np.std(expected), rel=1e-10)


def test_kid_subset_size_is_capped_at_the_set_sizes():
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((12, 4)), rng.standard_normal((9, 4)) + 1
    mean, _ = kernel_distance(x, y, num_subsets=1, subset_size=1000)  # capped at 9
    draws = np.random.default_rng(0)
    i, j = draws.choice(12, 9, replace=False), draws.choice(9, 9, replace=False)
    assert mean == pytest.approx(hand_kid(x[i], y[j]), rel=1e-10)


def test_inception_score_bounds():
    probabilities = np.tile([0.1, 0.2, 0.7], (30, 1))
    mean, std = inception_score(probabilities, splits=3)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    num_classes = 7
    one_hot = np.eye(num_classes)[np.arange(10 * num_classes) % num_classes]  # every split uses all classes equally
    mean, std = inception_score(one_hot, splits=10)
    assert mean == pytest.approx(num_classes, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="probabilities"):
        inception_score(np.ones((20, 3)), splits=2)
    with pytest.raises(ValueError, match="splits"):
        inception_score(one_hot[:5], splits=10)


# ---------------------------------------------------------------------------------------------------------------------
# .npz statistics
# ---------------------------------------------------------------------------------------------------------------------


def test_statistics_npz_round_trip(tmp_path):
    features = np.random.default_rng(9).standard_normal((30, 4))
    statistics = ReferenceStatistics.from_features(features, keep_features=True, feature_extractor="standin")
    path = save_statistics(tmp_path / "stats.npz", statistics)
    assert sorted(os.listdir(tmp_path)) == ["stats.npz"]  # no temporary file left behind
    with np.load(path) as data:
        assert {"mu", "sigma"} <= set(data.files)
        assert data["mu"].dtype == np.float64 and data["sigma"].shape == (4, 4)
    loaded = load_statistics(path)
    np.testing.assert_array_equal(loaded.mu, statistics.mu)
    np.testing.assert_array_equal(loaded.sigma, statistics.sigma)
    np.testing.assert_array_equal(loaded.features, features.astype(np.float32))
    assert (loaded.num_images, loaded.feature_extractor) == (30, "standin")


def test_statistics_files_of_other_tools(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3)
    np.savez(tmp_path / "ttur.npz", mu=mu, sigma=sigma)  # the official fid_stat layout
    np.savez(tmp_path / "torch.npz", mean=mu, cov=sigma)  # also accepted by the official torch reader
    for name in ("ttur.npz", "torch.npz"):
        loaded = load_statistics(tmp_path / name)
        np.testing.assert_array_equal(loaded.mu, mu)
        assert loaded.features is None and loaded.feature_extractor is None
    np.savez(tmp_path / "bad.npz", m=mu)
    with pytest.raises(ValueError, match="'mu' and 'sigma'"):
        load_statistics(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="transgan stats"):
        load_statistics(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match=r"\.npz"):
        save_statistics(tmp_path / "stats.txt", load_statistics(tmp_path / "ttur.npz"))


# ---------------------------------------------------------------------------------------------------------------------
# Images and feature networks
# ---------------------------------------------------------------------------------------------------------------------


def test_images_to_uint8_formats():
    float_images = torch.tensor([0.0, 0.5, 1.0, 1.2]).view(1, 1, 2, 2)
    quantised = images_to_uint8(float_images)
    assert quantised.dtype == torch.uint8 and quantised.shape == (1, 3, 2, 2)
    assert quantised[0, 0].flatten().tolist() == [0, 128, 255, 255]  # round(x * 255), clamped
    channels_last = np.zeros((2, 5, 5, 3), dtype=np.uint8)
    assert images_to_uint8(channels_last).shape == (2, 3, 5, 5)
    from PIL import Image

    assert images_to_uint8([Image.new("L", (4, 4), 7)]).flatten().unique().tolist() == [7]
    with pytest.raises(ValueError, match="channels"):
        images_to_uint8(torch.zeros(1, 5, 4, 4))


def test_compute_metrics_refuses_statistics_of_another_network():
    extractor = StandInFeatures()
    features = np.random.default_rng(0).standard_normal((10, 8))
    reference = ReferenceStatistics.from_features(features, feature_extractor="inception")
    with pytest.raises(ValueError, match="cannot be compared"):
        compute_metrics(features, None, reference, extractor, ("fid",))
    reference.feature_extractor = "standin"
    with pytest.raises(ValueError, match="--save_features"):
        compute_metrics(features, None, reference, extractor, ("kid",))
    assert compute_metrics(features, None, reference, extractor, ("fid",))["fid"] < 1e-6


# ---------------------------------------------------------------------------------------------------------------------
# Digit classifier
# ---------------------------------------------------------------------------------------------------------------------


def test_digit_classifier_training_is_reproducible():
    from transgan_hf.metrics import digits

    data = digits.mnist_5k_tensors()
    assert data[0].shape == (5000, 3, 32, 32) and data[0].min() == -1 and data[0].max() == 1
    first, _ = digits.train_digit_classifier(seed=3, epochs=1, num_train=256, data=data)
    second, _ = digits.train_digit_classifier(seed=3, epochs=1, num_train=256, data=data)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


def test_digit_classifier_is_cached_as_safetensors(tmp_path, monkeypatch):
    from transgan_hf.metrics import digits

    calls = []
    train = digits.train_digit_classifier
    images, labels = torch.rand(600, 3, 32, 32) * 2 - 1, torch.arange(600) % 10

    def quick_training():
        calls.append(1)
        return train(epochs=1, num_train=64, data=(images, labels))

    monkeypatch.setenv(digits.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(digits, "train_digit_classifier", quick_training)
    first = digits.load_digit_classifier()
    path = tmp_path / f"digit_classifier_v{digits.DIGIT_CLASSIFIER_VERSION}.safetensors"
    assert path.is_file() and 0.0 <= digits.digit_classifier_accuracy(path) <= 1.0
    second = digits.load_digit_classifier()
    assert len(calls) == 1  # the second call read the cache
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    path.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="delete it to retrain"):
        digits.load_digit_classifier()


def test_digit_probabilities_trains_the_classifier_on_first_use(tmp_path, monkeypatch):
    """`digit_probabilities` runs under no_grad; the first-use training inside it must still get gradients."""
    from transgan_hf.metrics import digits

    train = digits.train_digit_classifier
    images, labels = torch.rand(600, 3, 32, 32) * 2 - 1, torch.arange(600) % 10
    monkeypatch.setenv(digits.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(digits, "train_digit_classifier",
                        lambda: train(epochs=1, num_train=64, data=(images, labels)))
    probabilities = digits.digit_probabilities(torch.rand(4, 3, 32, 32))
    assert probabilities.shape == (4, 10) and torch.allclose(probabilities.sum(1), torch.ones(4))
    assert digits.digit_classifier_path().is_file()


@pytest.mark.slow
def test_digit_classifier_recognises_held_out_digits(tmp_path, monkeypatch):
    from transgan_hf.metrics import digits

    monkeypatch.setenv(digits.CACHE_ENV, str(tmp_path))
    classifier = digits.load_digit_classifier()  # the full (cached) training run
    accuracy = digits.digit_classifier_accuracy(digits.digit_classifier_path())
    assert accuracy >= 0.95
    images, labels = digits.mnist_5k_tensors()
    probabilities = digits.digit_probabilities((images[::50] + 1) / 2, classifier)  # pipeline-style [0, 1] input
    assert probabilities.shape == (100, 10)
    assert (probabilities.argmax(1) == labels[::50]).float().mean() >= 0.95
    assert probabilities.max(1).values.mean() >= 0.9


# ---------------------------------------------------------------------------------------------------------------------
# evaluate_generator: one process, two processes
# ---------------------------------------------------------------------------------------------------------------------


def synthetic_generate(generators: list[torch.Generator]) -> torch.Tensor:
    """Images in [0, 1], image k drawn from generators[k] only (like the pipeline with a list of generators)."""
    return torch.stack([torch.rand(3, 16, 16, generator=g) ** 2 for g in generators])


def reference_for_standin() -> ReferenceStatistics:
    images = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        features = StandInFeatures()(images_to_uint8(images)).features.numpy()
    return ReferenceStatistics.from_features(features, keep_features=True, feature_extractor="standin")


EVAL_KWARGS = dict(num_images=45, batch_size=4, seed=11, metrics=("fid", "kid", "is"), kid_subset_size=20,
                   kid_subsets=5, is_splits=3, progress=False)


@pytest.fixture
def one_thread():
    """Same thread count as the distributed workers (and restored afterwards: other tests compare bitwise)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_evaluation_is_independent_of_batch_size(one_thread):
    reference = reference_for_standin()
    a = evaluate_generator(synthetic_generate, feature_extractor=StandInFeatures(), reference=reference, **EVAL_KWARGS)
    kwargs = {**EVAL_KWARGS, "batch_size": 7}
    b = evaluate_generator(synthetic_generate, feature_extractor=StandInFeatures(), reference=reference, **kwargs)
    assert a["metrics"] == pytest.approx(b["metrics"], rel=1e-6)
    assert a["metrics"]["fid"] > 0 and a["num_images"] == 45 and a["seed"] == 11
    assert set(a["metrics"]) == {"fid", "kid", "kid_std", "is", "is_std"}


def _distributed_worker(rank: int, world_size: int, port: int, queue) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    reference = reference_for_standin()
    result = evaluate_generator(synthetic_generate, feature_extractor=StandInFeatures(), reference=reference,
                                accelerator=accelerator, **EVAL_KWARGS)
    queue.put(("ok", rank, result["metrics"]))

    def failing_on_rank_1(generators):
        if rank == 1:
            raise ValueError("generator exploded")
        return synthetic_generate(generators)

    try:  # a failure on one rank must reach every rank instead of leaving them waiting
        evaluate_generator(failing_on_rank_1, feature_extractor=StandInFeatures(), reference=reference,
                           accelerator=accelerator, **EVAL_KWARGS)
        queue.put(("no error", rank, None))
    except (ValueError, RuntimeError) as error:
        queue.put(("raised", rank, str(error)))
    accelerator.end_training()


def test_two_process_evaluation_equals_one_process(one_thread):
    single = evaluate_generator(synthetic_generate, feature_extractor=StandInFeatures(),
                                reference=reference_for_standin(), **EVAL_KWARGS)["metrics"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = torch.multiprocessing.get_context("spawn")
    queue = context.SimpleQueue()
    processes = [context.Process(target=_distributed_worker, args=(rank, 2, port, queue)) for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    alive = [process for process in processes if process.is_alive()]
    for process in alive:
        process.kill()
    assert not alive, "a rank hung"
    assert all(process.exitcode == 0 for process in processes)
    messages = [queue.get() for _ in range(4)]
    results = {rank: metrics for kind, rank, metrics in messages if kind == "ok"}
    assert set(results) == {0, 1}
    for metrics in results.values():
        assert metrics == pytest.approx(single, rel=1e-6)
    failures = {rank: text for kind, rank, text in messages if kind == "raised"}
    assert set(failures) == {0, 1}
    assert "generator exploded" in failures[1] and "rank(s) [1]" in failures[0]
