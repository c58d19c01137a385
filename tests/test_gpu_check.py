"""benchmarks/gpu_check.sh, the checks for a lent GPU, in its CPU mode: the `tiny` preset, eager only (compiling takes
minutes on a CPU), one timed step."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT, SUBPROCESS_ENV

FIXTURES = ROOT.parent / "shared" / "fixtures" / "official"


def test_gpu_check_runs_on_a_cpu_and_prints_one_json_line_per_figure():
    quick = ["--device", "cpu", "--tiny", "--compile", "off", "--steps", "1", "--warmup", "0", "--peak_tflops", "0.5"]
    if (FIXTURES / "cifar_small_io.npz").is_file():
        command = ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(FIXTURES), *quick]
    else:  # the product does not ship the fixtures: the parity figure is then skipped
        command = ["python", str(ROOT / "benchmarks" / "gpu_check.py"), *quick]
    finished = subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-4000:]
    records = [json.loads(line) for line in finished.stdout.splitlines() if line.startswith("{")]
    assert [record["check"] for record in records] == ["parity", "train", "sample", "summary"]
    parity, train, sample, summary = records
    assert parity.get("ok") is True or "skipped" in parity
    assert (train["preset"], train["compile"], train["batch_d_g"], train["n_critic"]) == ("tiny", False, [32, 16], 1)
    assert train["img_per_s"] * train["s_per_kimg"] == pytest.approx(1000, rel=0.01)
    assert train["img_per_s"] == pytest.approx(2 * 16 / train["step_s"], rel=0.01)  # 2 D iterations of 16 per step
    assert train["tflop_per_step"] > 0 and train["peak_mem_mb"] > 0
    assert train["mfu"] == pytest.approx(train["tflops"] / 0.5, rel=0.01)
    assert sample["img_per_s"] > 0 and sample["batch_size"] == 16
    assert summary["failed"] == [] and summary["device"] == "cpu"


def test_gpu_check_wants_the_fixture_folder(tmp_path: Path):
    finished = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=SUBPROCESS_ENV,
                              capture_output=True, text=True, timeout=60)
    assert finished.returncode == 2 and "usage: bash benchmarks/gpu_check.sh FIXTURE_DIR" in finished.stderr
    finished = subprocess.run(["python", str(ROOT / "benchmarks" / "gpu_check.py"), "--fixtures", str(tmp_path),
                               "--device", "cpu", "--tiny"], env=SUBPROCESS_ENV, capture_output=True, text=True,
                              timeout=120)
    assert finished.returncode == 2 and "has no cifar_small_io.npz" in finished.stderr.splitlines()[-1]
