"""`transgan report`: figures, report.json and report.md of a synthetic run folder; runs without evaluations or with
one row; one-line errors for a missing or empty log."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transgan_hf.cli import main

pytest.importorskip("matplotlib", reason="transgan report needs the [report] extra")

KIMG_PER_STEP = 0.032


def log_row(step: int, **values) -> dict:
    return {"step": step, "progress/kimg": round(step * KIMG_PER_STEP, 3), **values}


def training_row(step: int) -> dict:
    return log_row(step, **{
        "loss/discriminator": 2.0 / step, "loss/gradient_penalty": 0.1 * step, "loss/r1_penalty": 0.01 * step,
        "logits/real": 1.0, "logits/fake": -1.0 * step, "loss/generator": float(step), "ema/beta": 1 - 0.5 / step,
        "lr": 1e-4, "speed/sec_per_kimg": 20.0 + step, "progress/train_seconds": 0.6 * step,
    })  # fmt: skip


EVALUATIONS = {  # step: metrics; best fid (lower) at 6, best precision (higher) at 3, kid tie at 3 and 6 -> 3
    3: {"eval/fid": 50.0, "eval/kid": 0.02, "eval/kid_std": 0.005, "eval/precision": 0.7},
    6: {"eval/fid": 40.0, "eval/kid": 0.02, "eval/kid_std": 0.004, "eval/precision": 0.6},
}


def write_log(folder: Path, rows: list[dict], extra_text: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "training_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows) + extra_text)
    return folder


def write_grid(folder: Path, step: int, color: tuple[int, int, int], size: int) -> None:
    (folder / "samples").mkdir(exist_ok=True)
    Image.new("RGB", (size, size), color).save(folder / "samples" / f"step_{step:06d}.png")


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """Six logged steps, evaluations at steps 3 and 6 (rows of their own, as training writes them), a row torn by a
    killed run, and two sample grids of different sizes."""
    rows = []
    for step in range(1, 7):
        rows.append(training_row(step))
        if step in EVALUATIONS:
            rows.append(log_row(step, **EVALUATIONS[step]))
    folder = write_log(tmp_path / "run", rows, extra_text='{"step": 7, "loss/discrimin')
    write_grid(folder, 3, (255, 0, 0), 16)
    write_grid(folder, 6, (0, 0, 255), 24)
    return folder


def run_report(capsys, *arguments: str) -> tuple[int, str, str]:
    code = main(["report", *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


FIGURES = ["losses.png", "logits.png", "ema_beta.png", "speed.png", "quality.png", "other.png", "progress.png"]


def test_report_of_a_run(run_dir, tmp_path, capsys):
    out = tmp_path / "report"
    code, stdout, stderr = run_report(capsys, "--run_dir", str(run_dir), "--output_dir", str(out))
    assert code == 0, stderr
    assert stdout.split() == [str(out / name) for name in [*FIGURES, "report.json", "report.md"]]
    assert "skipped 1 unreadable row" in stderr
    for name in FIGURES:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 100

    report = json.loads((out / "report.json").read_text())
    assert report["best"] == {
        "fid": {"value": 40.0, "step": 6, "kimg": 0.192, "better": "lower"},
        "kid": {"value": 0.02, "step": 3, "kimg": 0.096, "better": "lower", "std": 0.005},
        "precision": {"value": 0.7, "step": 3, "kimg": 0.096, "better": "higher"},
    }
    assert report["last"]["eval/fid"] == {"value": 40.0, "step": 6}
    assert report["last"]["loss/r1_penalty"] == {"value": 0.06, "step": 6}
    assert report["last"]["progress/kimg"] == {"value": 0.192, "step": 6}
    assert (report["rows"], report["skipped_rows"], report["evaluations"]) == (8, 1, 2)
    assert report["steps"] == {"first": 1, "last": 6} and report["kimg"] == 0.192 and report["x_axis"] == "kimg"
    assert report["sample_grids"] == {"count": 2, "shown": [3, 6]}
    assert report["figures"] == FIGURES

    markdown = (out / "report.md").read_text()
    for name in FIGURES:
        assert f"]({name})" in markdown
    assert "| `fid` | 40 | 6 (0.2 kimg) | 40 (step 6) | lower |" in markdown


def test_progress_montage_shows_the_grids_in_order(run_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert run_report(capsys, "--run_dir", str(run_dir), "--output_dir", str(out))[0] == 0
    with Image.open(out / "progress.png") as image:
        montage = np.asarray(image.convert("RGB"))
    # Two tiles 256 px high (the 16- and 24-px grids scaled), 8 px apart, under an 18-px label line.
    assert montage.shape == (18 + 256, 256 + 8 + 256, 3)
    assert tuple(montage[18 + 128, 128]) == (255, 0, 0)  # step 3 first
    assert tuple(montage[18 + 128, 256 + 8 + 128]) == (0, 0, 255)  # then step 6


def test_num_grids_spreads_the_grids_over_training(tmp_path, capsys):
    folder = write_log(tmp_path / "run", [training_row(step) for step in range(1, 11)])
    for step in range(1, 11):
        write_grid(folder, step, (step * 20, 0, 0), 8)
    code, _, stderr = run_report(capsys, "--run_dir", str(folder), "--num_grids", "3")
    assert code == 0, stderr
    report = json.loads((folder / "report" / "report.json").read_text())  # default --output_dir: <run_dir>/report
    assert report["sample_grids"] == {"count": 10, "shown": [1, 5, 10]}


def test_a_run_without_evaluations_or_grids(tmp_path, capsys):
    folder = write_log(tmp_path / "run", [training_row(step) for step in range(1, 5)])
    out = tmp_path / "report"
    code, _, stderr = run_report(capsys, "--run_dir", str(folder), "--output_dir", str(out))
    assert code == 0, stderr
    report = json.loads((out / "report.json").read_text())
    assert report["best"] == {} and report["evaluations"] == 0
    assert "quality.png" not in report["figures"] and "progress.png" not in report["figures"]
    assert not (out / "quality.png").exists() and (out / "losses.png").is_file()
    markdown = (out / "report.md").read_text()
    assert "No evaluations" in markdown and "No sample grids" in markdown


def test_a_run_with_one_row(tmp_path, capsys):
    folder = write_log(tmp_path / "run", [training_row(10)])
    out = tmp_path / "report"
    code, _, stderr = run_report(capsys, "--run_dir", str(folder), "--output_dir", str(out))
    assert code == 0, stderr
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == {"first": 10, "last": 10} and report["last"]["loss/generator"]["value"] == 10.0
    assert (out / "losses.png").is_file()


def test_a_log_without_kimg_is_plotted_against_steps_and_nan_is_null(tmp_path, capsys):
    rows = [{"step": step, "loss/generator": float(step), "eval/fid": 30.0 - step} for step in (1, 2)]
    rows.append({"step": 3, "loss/generator": float("nan"), "eval/fid": float("inf")})  # a diverging run
    folder = write_log(tmp_path / "run", rows)
    out = tmp_path / "report"
    code, _, stderr = run_report(capsys, "--run_dir", str(folder), "--output_dir", str(out))
    assert code == 0, stderr
    report = json.loads((out / "report.json").read_text())  # strict JSON: no NaN
    assert report["x_axis"] == "step" and report["kimg"] is None
    assert report["best"] == {"fid": {"value": 28.0, "step": 2, "better": "lower"}}
    assert report["last"]["loss/generator"] == {"value": None, "step": 3}


def test_kimg_of_steps_without_it_follows_the_logged_rate(tmp_path):
    from transgan_hf.commands.report import KimgAxis

    axis = KimgAxis([log_row(10), {"step": 20}, log_row(30)])
    assert axis.name == "kimg" and axis(10) == 0.32 and axis(20) == pytest.approx(0.64)


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "training_log.jsonl' does not exist"),
        ("", "it is empty"),
        ("\n  \n", "it is empty"),
        ("not json\n[1, 2]\n", "no readable rows (2 unreadable lines)"),
    ],
)
def test_missing_or_empty_log_is_one_clear_error(tmp_path, capsys, content, message):
    folder = tmp_path / "run"
    folder.mkdir()
    if content is not None:
        (folder / "training_log.jsonl").write_text(content)
    code, stdout, stderr = run_report(capsys, "--run_dir", str(folder), "--output_dir", str(tmp_path / "out"))
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and message in stderr
    assert not (tmp_path / "out").exists()


def test_bad_flags_are_one_clear_error(tmp_path, run_dir, capsys):
    (tmp_path / "file").write_text("")
    for arguments, message in [
        (["--run_dir", str(tmp_path / "missing")], "is not a folder"),
        (["--run_dir", str(run_dir), "--output_dir", str(tmp_path / "file")], "is a file"),
        (["--run_dir", str(run_dir), "--num_grids", "0"], "--num_grids must be >= 1"),
    ]:
        code, _, stderr = run_report(capsys, *arguments)
        assert code == 2 and stderr.count("\n") == 1 and message in stderr


def test_without_matplotlib_the_error_names_the_extra(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, _, stderr = run_report(capsys, "--run_dir", str(run_dir), "--output_dir", str(tmp_path / "out"))
    assert code == 2 and "pip install 'transgan-hf[report]'" in stderr and stderr.count("\n") == 1
