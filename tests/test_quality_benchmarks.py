"""Issue 18's measuring tools: the DCGAN reference (`benchmarks/dcgan_reference.py`) and the time-to-quality harness
(`benchmarks/time_to_quality.py`). Fast: one-step training on random tensors, curve handling on synthetic data."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dcgan = load("dcgan_reference")
harness = load("time_to_quality")


pytestmark = pytest.mark.usefixtures("single_thread")  # small convolutions: one thread is as fast


def test_dcgan_networks_have_about_a_million_parameters() -> None:
    generator, discriminator = dcgan.Generator(), dcgan.Discriminator()
    for model in (generator, discriminator):
        assert 0.9e6 <= dcgan.count_parameters(model) <= 1.2e6
    images = generator(torch.randn(2, dcgan.LATENT_DIM))
    assert images.shape == (2, 3, 32, 32) and images.abs().max() <= 1
    assert discriminator(images).shape == (2,)


def test_one_step_changes_both_networks_and_the_ema() -> None:
    trainer = dcgan.DCGANTrainer(seed=0)
    before = [
        [parameter.detach().clone() for parameter in model.parameters()]
        for model in (trainer.generator, trainer.discriminator, trainer.ema)
    ]
    logs = trainer.step(torch.rand(8, 3, 32, 32) * 2 - 1)
    assert all(math.isfinite(value) for value in logs.values())
    for old, model in zip(before, (trainer.generator, trainer.discriminator, trainer.ema)):
        assert any(not torch.equal(a, b) for a, b in zip(old, model.parameters()))
    assert trainer.steps == 1


def test_r1_is_applied_on_every_fourth_discriminator_step() -> None:
    torch.manual_seed(0)
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    trainer = dcgan.DCGANTrainer(seed=0)
    penalized = ["loss/r1" in trainer.step(real) for _ in range(9)]
    assert penalized == [True, False, False, False, True, False, False, False, True]

    def discriminator_after_one_step(gamma: float, start_step: int) -> list[torch.Tensor]:
        trainer = dcgan.DCGANTrainer(seed=0, r1_gamma=gamma)
        trainer.steps = start_step
        trainer.step(real)
        return [parameter.detach().clone() for parameter in trainer.discriminator.parameters()]

    # the penalty enters the D update on a penalized step, and only there
    penalized_step = zip(discriminator_after_one_step(0.0, 0), discriminator_after_one_step(10.0, 0))
    assert any(not torch.equal(a, b) for a, b in penalized_step)
    plain_step = zip(discriminator_after_one_step(0.0, 1), discriminator_after_one_step(10.0, 1))
    assert all(torch.equal(a, b) for a, b in plain_step)


@pytest.fixture(scope="module")
def mnist():
    return dcgan.training_images()


def test_dcgan_script_prints_one_json_line_per_evaluation(mnist, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(dcgan, "training_images", lambda seed=0: mnist)  # decoded once for the module
    results = dcgan.main(["--max_steps", "2", "--batch_size", "16", "--num_eval_images", "256",
                          "--output_dir", str(tmp_path)])  # fmt: skip
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == len(results) == 1
    row = json.loads(lines[0])
    assert set(row) == {"minutes", "steps", "kimg", "fdd_mnist", "digit_confidence"}
    assert row["steps"] == 2 and row["kimg"] == 0.032 and row["fdd_mnist"] > 0 and 0 < row["digit_confidence"] <= 1
    assert (tmp_path / "samples.png").stat().st_size > 0
    assert harness.dcgan_curve(lines) == [row]


def test_training_data_are_the_tensors_train_py_feeds(mnist) -> None:
    images, raw = mnist
    assert images.shape == (5000, 3, 32, 32) and len(raw) == 5000
    assert images.min() == -1 and images.max() == 1
    assert torch.equal(images[:, 0], images[:, 1])  # greyscale digits as RGB


def log_rows(train_seconds: bool) -> list[dict]:
    """A training_log.jsonl: logging every 10 steps (1 kimg at 6 s/kimg), evaluations at steps 20 and 30."""
    rows = []
    for step in (10, 20, 30):
        kimg = step / 10
        rows.append({"step": step, "progress/kimg": kimg, "speed/sec_per_kimg": 6.0, "loss/generator": 1.0})
        if step in (20, 30):
            row = {"step": step, "progress/kimg": kimg, "eval/fdd_mnist": 100.0 / step,
                   "eval/digit_confidence_mnist": 0.5}
            if train_seconds:
                row["progress/train_seconds"] = 7.0 * kimg
            rows.append(row)
    return rows


def test_train_log_curve_uses_logged_train_seconds_or_sums_the_speed() -> None:
    summed = harness.train_log_curve(log_rows(train_seconds=False))
    assert [point["steps"] for point in summed] == [20, 30]
    assert [point["minutes"] for point in summed] == pytest.approx([12 / 60, 18 / 60])
    assert [point["fdd_mnist"] for point in summed] == pytest.approx([5.0, 100 / 30])
    assert summed[0]["kimg"] == 2.0 and summed[0]["digit_confidence"] == 0.5
    explicit = harness.train_log_curve(log_rows(train_seconds=True))
    assert [point["minutes"] for point in explicit] == pytest.approx([14 / 60, 21 / 60])
    assert harness.train_minutes(log_rows(train_seconds=False)) == pytest.approx(18 / 60)
    assert harness.train_minutes(log_rows(train_seconds=True)) == pytest.approx(21 / 60)


def test_recipes_parse_and_names_are_checked() -> None:
    assert harness.parse_recipe("main=") == ("main", [])
    assert harness.parse_recipe("fast=--n_critic 1 --loss 'a b'") == ("fast", ["--n_critic", "1", "--loss", "a b"])
    for bad in ("no-equals", "=--flag", "dcgan=", "a/b=--x"):
        with pytest.raises(argparse.ArgumentTypeError):
            harness.parse_recipe(bad)


CURVES = {
    "dcgan": [{"minutes": 1.002, "steps": 280, "kimg": 17.9, "fdd_mnist": 120.0, "digit_confidence": 0.7},
              {"minutes": 2.001, "steps": 560, "kimg": 35.8, "fdd_mnist": 60.0, "digit_confidence": 0.8}],
    "main": [{"minutes": 0.8, "steps": 100, "kimg": 3.2, "fdd_mnist": 900.0, "digit_confidence": 0.5},
             {"minutes": 1.7, "steps": 200, "kimg": 6.4, "fdd_mnist": 400.0, "digit_confidence": 0.6}],
}


def test_value_at_table_csv_and_plot(tmp_path) -> None:
    assert harness.value_at(CURVES["dcgan"], 1)["steps"] == 280  # the step that crosses the minute counts
    assert harness.value_at(CURVES["dcgan"], 0.5) is None
    assert harness.value_at(CURVES["main"], 2)["fdd_mnist"] == 400.0
    table = harness.format_table(CURVES, [0.5, 1, 2])
    lines = table.splitlines()
    assert len(lines) == 4 and "fdd @ 2 min" in lines[0]
    assert lines[2].startswith("| dcgan | – | 120.0 | 60.0 | 2.0 | 560 |")
    assert lines[3].startswith("| main | – | 900.0 | 400.0 | 1.7 | 200 |")
    json_path, csv_path = harness.write_curves(CURVES, tmp_path)
    assert json.loads(json_path.read_text()) == CURVES
    assert csv_path.read_text().splitlines()[0] == "recipe,minutes,steps,kimg,fdd_mnist,digit_confidence"
    assert len(csv_path.read_text().splitlines()) == 5
    plot = harness.plot_curves(CURVES, tmp_path / "plot.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_harness_replots_saved_curves(tmp_path, capsys) -> None:
    saved = tmp_path / "curves.json"
    saved.write_text(json.dumps(CURVES))
    argv = ["--replot", str(saved), "--plot", str(tmp_path / "replot.png"), "--eval_minutes", "1,2"]
    assert harness.main(argv) == CURVES
    assert (tmp_path / "replot.png").stat().st_size > 0
    assert "| dcgan | 120.0 | 60.0 |" in capsys.readouterr().out
