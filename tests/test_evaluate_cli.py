"""`transgan stats` / `transgan evaluate` end to end on a converted official fixture, and the `evaluate` modules.

A small stand-in network replaces Inception (whose weights cannot be here); it is plugged in by name
(`register_feature_extractor`) and by import path (`module:factory`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import StandInFeatures, tiny_pipeline
from PIL import Image

from transgan_hf.cli import main
from transgan_hf.metrics import (
    ReferenceStatistics,
    compute_metrics,
    evaluate_module_path,
    extract_features,
    images_to_uint8,
    load_statistics,
    register_feature_extractor,
    save_statistics,
)

FIXTURES = Path("/work/shared/fixtures/official")
NUM_IMAGES = 24


def make_standin(weights_path=None) -> StandInFeatures:
    return StandInFeatures()


register_feature_extractor("standin", make_standin)


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    from transgan_hf.convert_official import convert

    folder = tmp_path_factory.mktemp("fixture") / "pipeline"
    convert(FIXTURES / "cifar_small_checkpoint.pth", folder, official_args=FIXTURES / "cifar_small_args.json")
    return folder


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference_images")
    rng = np.random.default_rng(0)
    for index in range(40):
        pixels = (rng.uniform(0, 1, (32, 32, 3)) ** (1 + index % 3) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")
    return folder


@pytest.fixture(scope="module")
def reference_file(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("stats") / "reference.npz"
    cache = tmp_path_factory.mktemp("datasets_cache")
    code = main(["stats", "--train_data_dir", str(image_folder), "--feature_extractor", "standin", "--save_features",
                 "--resolution", "32", "--output_file", str(out), "--batch_size", "16", "--cache_dir", str(cache),
                 "--no_progress"])
    assert code == 0
    return out


def run_evaluate(capsys, *arguments: str) -> dict:
    code = main(["evaluate", "--feature_extractor", "standin", "--no_progress", *arguments])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_stats_writes_reference_statistics(reference_file):
    statistics = load_statistics(reference_file)
    assert statistics.mu.shape == (8,) and statistics.sigma.shape == (8, 8)
    assert statistics.features.shape == (40, 8)
    assert (statistics.num_images, statistics.feature_extractor) == (40, "standin")


def test_stats_and_evaluate_draw_progress_bars_on_stderr_unless_no_progress(pipeline_dir, image_folder, capsys,
                                                                            tmp_path):
    stats = ["stats", "--train_data_dir", str(image_folder), "--feature_extractor", "standin", "--resolution", "32",
             "--cache_dir", str(tmp_path / "cache"), "--output_file", str(tmp_path / "s.npz")]
    evaluate = ["evaluate", "--model", str(pipeline_dir), "--feature_extractor", "standin", "--metrics", "is",
                "--num_images", "6", "--batch_size", "4", "--is_splits", "2"]
    for argv, bar, count in [(stats, "features: 100%", "40/40"), (evaluate, "evaluate: 100%", "6/6")]:
        assert main([*argv, "--no_progress"]) == 0  # first: stats prepares the image folder (datasets' bars) here
        assert capsys.readouterr().err == ""
        assert main(argv) == 0
        captured = capsys.readouterr()
        final = captured.err.replace("\r", "\n").splitlines()[-1]
        assert final.startswith(bar) and count in final, captured.err
        assert "Loading weights" not in captured.err


def test_evaluate_end_to_end(pipeline_dir, reference_file, capsys, tmp_path):
    output = tmp_path / "result.json"
    report = run_evaluate(
        capsys, "--model", str(pipeline_dir), "--reference", str(reference_file), "--num_images", str(NUM_IMAGES),
        "--metrics", "fid,kid,is", "--kid_subset_size", "10", "--kid_subsets", "5", "--is_splits", "2",
        "--batch_size", "8", "--seed", "3", "--output_file", str(output),
    )  # fmt: skip
    assert set(report["metrics"]) == {"fid", "kid", "kid_std", "is", "is_std"}
    assert np.isfinite(report["metrics"]["fid"]) and report["metrics"]["fid"] > 0
    assert 1 <= report["metrics"]["is"] <= 5  # the stand-in has 5 classes
    assert report["num_images"] == NUM_IMAGES and report["seed"] == 3
    assert report["weights"] == {"kind": "ema", "path": str(pipeline_dir / "generator")}  # from the model card
    assert report["feature_extractor"] == "standin" and report["protocol"] == "test stand-in network"
    assert json.loads(output.read_text()) == report

    # The value is what the numeric core gives on the pipeline's own images for the same seeds.
    from transgan_hf import TransGANPipeline
    from transgan_hf.metrics import image_generators

    pipeline = TransGANPipeline.from_pretrained(pipeline_dir)
    images = pipeline(batch_size=NUM_IMAGES, generator=image_generators(3, 0, NUM_IMAGES), output_type="pt").images
    features, _ = extract_features([images], StandInFeatures())
    expected = compute_metrics(features, None, load_statistics(reference_file), StandInFeatures(), ("fid",))
    assert report["metrics"]["fid"] == pytest.approx(expected["fid"], rel=1e-4)  # batch round-off, see below


def test_evaluate_is_deterministic_and_independent_of_batch_size(pipeline_dir, reference_file, capsys):
    common = ["--model", str(pipeline_dir), "--reference", str(reference_file), "--num_images", "12"]
    first = run_evaluate(capsys, *common, "--batch_size", "12")
    second = run_evaluate(capsys, *common, "--batch_size", "5", "--feature_extractor", "test_evaluate_cli:make_standin")
    other_seed = run_evaluate(capsys, *common, "--seed", "1")
    # Same images; only float round-off of batched matmuls differs (it can move a pixel by one uint8 level).
    assert second["metrics"]["fid"] == pytest.approx(first["metrics"]["fid"], rel=1e-4)
    assert other_seed["metrics"]["fid"] != pytest.approx(first["metrics"]["fid"], rel=1e-2)


def test_evaluate_updates_the_model_card(pipeline_dir, reference_file, capsys, tmp_path):
    import shutil

    from huggingface_hub import ModelCard

    folder = tmp_path / "pipeline"
    shutil.copytree(pipeline_dir, folder)
    report = run_evaluate(capsys, "--model", str(folder), "--reference", str(reference_file), "--num_images", "12",
                          "--update_model_card", "--dataset_name", "synthetic-noise", "--split", "train")
    card = ModelCard.load(folder / "README.md")
    results = {result.metric_type: result for result in card.data.eval_results}
    assert results["fid"].metric_value == pytest.approx(report["metrics"]["fid"])
    assert results["fid"].dataset_name == "synthetic-noise" and results["fid"].dataset_split == "train"
    assert "test stand-in network" in card.text


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--num_images", "8"], "need --reference"),
        (["--metrics", "fid,sharpness"], "choose from"),
        (["--metrics", "is", "--update_model_card"], "needs --dataset_name"),
        (["--metrics", "is", "--feature_extractor", "no_such_network"], "Unknown feature network"),
        (["--metrics", "is", "--feature_extractor", "no_such_module:factory"], "Cannot import"),
        (["--reference", "missing.npz"], "transgan stats"),
    ],
)
def test_evaluate_errors(pipeline_dir, capsys, arguments, message):
    code = main(["evaluate", "--model", str(pipeline_dir), "--feature_extractor", "standin", *arguments])
    assert code == 2
    assert message in capsys.readouterr().err


def test_evaluate_refuses_statistics_of_another_network(pipeline_dir, tmp_path, capsys):
    other = ReferenceStatistics(np.zeros(8), np.eye(8), feature_extractor="inception")
    path = save_statistics(tmp_path / "inception.npz", other)
    code = main(["evaluate", "--model", str(pipeline_dir), "--feature_extractor", "standin", "--reference", str(path),
                 "--num_images", "4", "--no_progress"])
    assert code == 2 and "cannot be compared" in capsys.readouterr().err


def test_missing_inception_weights_are_one_clear_error(pipeline_dir, reference_file, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("TRANSGAN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    code = main(["evaluate", "--model", str(pipeline_dir), "--reference", str(reference_file)])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1
    assert "pt_inception-2015-12-05-6726825d.pth" in error and "--inception_weights" in error
    code = main(["stats", "--train_data_dir", str(tmp_path), "--resolution", "32", "--output_file",
                 str(tmp_path / "s.npz")])
    error = capsys.readouterr().err
    assert code == 2 and "pt_inception-2015-12-05-6726825d.pth" in error and "--inception_weights" in error


def test_stats_errors(tmp_path, capsys):
    assert main(["stats", "--train_data_dir", str(tmp_path), "--output_file", "stats.txt"]) == 2
    assert "must end in .npz" in capsys.readouterr().err
    assert main(["stats", "--train_data_dir", str(tmp_path / "none"), "--feature_extractor", "standin",
                 "--resolution", "8", "--output_file", str(tmp_path / "s.npz")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert not (tmp_path / "s.npz").exists()


def test_stats_measures_images_at_the_model_resolution_never_their_own(tmp_path, capsys):
    """--resolution, else the image size of --model's generator; without either the command asks for one (images
    at their own size would not match generated ones)."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for index, size in enumerate([(24, 20), (20, 24), (30, 30), (21, 27)]):  # none 16 px, no two alike
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(images / f"{index}.png")
    model = tmp_path / "model"
    tiny_pipeline().save_pretrained(model)  # a 16 px generator
    common = ["stats", "--train_data_dir", str(images), "--feature_extractor", "standin", "--save_features",
              "--cache_dir", str(tmp_path / "cache"), "--no_progress"]

    assert main([*common, "--output_file", str(tmp_path / "native.npz")]) == 2
    error = capsys.readouterr().err
    assert "give --resolution N" in error and "--model" in error and not (tmp_path / "native.npz").exists()

    assert main([*common, "--model", str(model), "--output_file", str(tmp_path / "model.npz")]) == 0
    assert json.loads(capsys.readouterr().out)["resolution"] == 16
    assert main([*common, "--resolution", "16", "--output_file", str(tmp_path / "given.npz")]) == 0
    capsys.readouterr()
    from_model, given = load_statistics(tmp_path / "model.npz"), load_statistics(tmp_path / "given.npz")
    assert from_model.features.shape == (4, 8) and np.array_equal(from_model.features, given.features)

    assert main([*common, "--model", str(model), "--resolution", "32", "--output_file", str(tmp_path / "x.npz")]) == 2
    assert "--resolution 32 differs from the 16 px images of --model" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# evaluate metric modules
# ---------------------------------------------------------------------------------------------------------------------


def test_evaluate_modules_load_offline_and_agree_with_the_core(reference_file, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import evaluate

    generated = torch.rand(20, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    extractor = StandInFeatures()
    features, logits = extract_features([generated], extractor, with_logits=True)
    reference = load_statistics(reference_file)

    fid = evaluate.load(evaluate_module_path("fid"))
    result = fid.compute(predictions=generated, reference_statistics=str(reference_file), feature_extractor="standin")
    expected = compute_metrics(features, None, reference, extractor, ("fid",))
    assert result["fid"] == pytest.approx(expected["fid"], rel=1e-6)
    # references= of another length (not row-aligned), given as PIL images; a set against itself is 0
    pil_images = [Image.fromarray(image) for image in images_to_uint8(generated).permute(0, 2, 3, 1).numpy()]
    assert fid.compute(predictions=generated, references=pil_images, feature_extractor=extractor)["fid"] < 1e-6
    assert fid.compute(predictions=generated, references=pil_images[:7], feature_extractor=extractor)["fid"] > 0
    with pytest.raises(ValueError, match="exactly one"):
        fid.compute(predictions=generated, feature_extractor=extractor)

    kid = evaluate.load(evaluate_module_path("kid"))
    result = kid.compute(predictions=generated, reference_statistics=reference, feature_extractor=extractor,
                         kid_subsets=4, kid_subset_size=10)
    expected = compute_metrics(features, None, reference, extractor, ("kid",), kid_subsets=4, kid_subset_size=10)
    assert result == pytest.approx(expected, rel=1e-6)

    inception_score = evaluate.load(evaluate_module_path("inception_score"))
    inception_score.add_batch(predictions=generated[:10])
    inception_score.add_batch(predictions=generated[10:])
    result = inception_score.compute(feature_extractor=extractor, is_splits=2)
    expected = compute_metrics(features, logits, None, extractor, ("is",), is_splits=2)
    assert result == pytest.approx(expected, rel=1e-6)
