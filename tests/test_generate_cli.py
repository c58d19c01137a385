"""`transgan generate`: seed parsing, images and grid, batch-size invariance, Hub ids offline, one-line errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import place_in_hub_cache, seeds, tiny_pipeline
from PIL import Image

from transgan_hf.cli import CommandError, main
from transgan_hf.commands.generate import parse_seeds


def read(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


def error_line(stderr: str) -> str:
    """The single `error:` line of a failed command (progress bars of model loading may precede it)."""
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert stderr.endswith(lines[0] + "\n")
    return lines[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0-3,7", [0, 1, 2, 3, 7]), ("5", [5]), ("2-2", [2]), (" 4 , 0-1 ", [4, 0, 1]), ("0-2,1,2-3", [0, 1, 2, 3])],
)
def test_parse_seeds(text, expected):
    assert parse_seeds(text) == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [("", "not a seed"), ("a", "not a seed"), ("-1", "not a seed"), ("1-", "not a seed"), ("1--2", "not a seed"),
     ("0-3,,4", "not a seed"), ("1.5", "not a seed"), ("5-1", "write it as 1-5"), ("0-99999999999", "split the work"),
     (str(2**63), "below 2\\*\\*63")],
)
def test_bad_seeds(text, match):
    with pytest.raises(CommandError, match=match):
        parse_seeds(text)


def test_writes_one_png_per_seed_and_the_grid(pipeline_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["generate", "--model", str(pipeline_folder), "--seeds", "0-3,9", "--output_dir", str(out),
                 "--grid", "grid.png", "--batch_size", "4", "--device", "cpu"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png"] + [f"seed{s:04d}.png" for s in (0, 1, 2, 3, 9)]
    assert "Wrote 5 images" in capsys.readouterr().out
    pipe = tiny_pipeline()
    for seed in (0, 9):
        expected = np.asarray(pipe(generator=seeds(seed)).images[0], dtype=np.int16)
        assert np.abs(read(out / f"seed{seed:04d}.png") - expected).max() <= 1  # batch of 4 vs 1: round-off only
    grid = read(out / "grid.png")
    assert grid.shape == (32, 48, 3)  # 5 images -> 2 rows x 3 columns of 16 px
    for (row, column), seed in {(0, 0): 0, (0, 2): 2, (1, 0): 3, (1, 1): 9}.items():
        cell = grid[16 * row:16 * (row + 1), 16 * column:16 * (column + 1)]
        assert np.array_equal(cell, read(out / f"seed{seed:04d}.png"))
    assert not grid[16:, 32:].any()  # the empty last cell


def test_images_do_not_depend_on_batch_size_truncation_and_candidates_included(pipeline_folder, tmp_path):
    common = ["--model", str(pipeline_folder), "--seeds", "3,1,8", "--truncation", "0.7", "--num_candidates", "3"]
    assert main(["generate", *common, "--output_dir", str(tmp_path / "one"), "--batch_size", "1"]) == 0
    assert main(["generate", *common, "--output_dir", str(tmp_path / "three"), "--batch_size", "3"]) == 0
    for seed in (1, 3, 8):
        name = f"seed{seed:04d}.png"
        assert np.abs(read(tmp_path / "one" / name) - read(tmp_path / "three" / name)).max() <= 1
    plain = tmp_path / "plain"
    assert main(["generate", "--model", str(pipeline_folder), "--seeds", "3", "--output_dir", str(plain)]) == 0
    assert not np.array_equal(read(plain / "seed0003.png"), read(tmp_path / "one" / "seed0003.png"))


def test_bfloat16_images_are_within_a_few_levels_of_float32(pipeline_folder, tmp_path):
    common = ["--model", str(pipeline_folder), "--seeds", "0-7", "--batch_size", "8"]
    assert main(["generate", *common, "--output_dir", str(tmp_path / "fp32")]) == 0
    assert main(["generate", *common, "--output_dir", str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    names = [f"seed{seed:04d}.png" for seed in range(8)]
    differences = np.abs(np.stack([read(tmp_path / "fp32" / name) - read(tmp_path / "bf16" / name) for name in names]))
    assert differences.any()  # really computed in bfloat16
    assert differences.mean() < 1 and differences.max() <= 12  # measured: 0.4 and 5 levels


CLI_SCRIPT = """
import sys
from transgan_hf.cli import main
out = sys.argv[1]
cached = main(["generate", "--model", "org/transgan-tiny", "--seeds", "0-1", "--output_dir", out])
missing = main(["generate", "--model", "org/not-cached", "--seeds", "0-1", "--output_dir", out + "-missing"])
print(cached, missing)
"""


def test_loads_a_hub_id_from_the_cache_with_hf_hub_offline(pipeline_folder, tmp_path):
    """The real environment variables, in a fresh process: HF_HOME and HF_HUB_OFFLINE=1."""
    place_in_hub_cache(pipeline_folder, tmp_path / "home" / "hub", "org/transgan-tiny")
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run([sys.executable, "-c", CLI_SCRIPT, str(tmp_path / "out")], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.stdout.split("\n")[-2] == "0 2", result.stderr[-3000:]
    assert (tmp_path / "out" / "seed0000.png").is_file() and (tmp_path / "out" / "seed0001.png").is_file()
    error = error_line(result.stderr)
    assert error.startswith("error: cannot load --model 'org/not-cached'") and "HF_HUB_OFFLINE" in error
    assert not (tmp_path / "out-missing").exists()


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--seeds", "7-3"], "goes backwards"),
        (["--truncation", "2"], r"\(0, 1\]"),
        (["--num_candidates", "0"], "num_candidates"),
        (["--batch_size", "0"], "batch_size"),
        (["--device", "tpu9"], "--device"),
        (["--grid", "grid.txt"], "image file extension"),
    ],
)
def test_bad_arguments_are_one_line_errors(pipeline_folder, tmp_path, capsys, extra, match):
    args = {"--model": str(pipeline_folder), "--seeds": "0-1", "--output_dir": str(tmp_path / "out")}
    for flag, value in zip(extra[::2], extra[1::2]):
        args[flag] = value
    assert main(["generate", *[item for pair in args.items() for item in pair]]) == 2
    assert re.search(match, error_line(capsys.readouterr().err))
    assert not (tmp_path / "out").exists()


def test_model_and_output_problems_are_one_line_errors(tmp_path, capsys):
    no_discriminator = tmp_path / "no_d"
    tiny_pipeline(with_discriminator=False).save_pretrained(no_discriminator)
    (tmp_path / "file").write_text("x")
    capsys.readouterr()
    cases = [
        (["--model", str(tmp_path / "missing")], "is not a folder"),
        (["--model", str(tmp_path)], "no model_index.json"),
        (["--model", str(no_discriminator), "--num_candidates", "2"], "has none"),
        (["--model", str(no_discriminator), "--output_dir", str(tmp_path / "file")], "is a file"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--model", str(no_discriminator), "--device", "cuda"], "CUDA is not available"))
    for extra, match in cases:
        args = ["generate", "--seeds", "0", "--output_dir", str(tmp_path / "out"), *extra]
        assert main(args) == 2, extra
        assert match in error_line(capsys.readouterr().err), extra
    assert not (tmp_path / "out").exists()


def test_help_reads_well(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("--model ORG/NAME_OR_DIR", "--seeds", "--truncation T", "--num_candidates K", "--grid PATH",
                   "--device", "--batch_size", "examples:", "HF_HUB_OFFLINE"):
        assert phrase in text
    assert "default: the bundled MNIST demo model" in " ".join(text.split())  # --model is optional
    with pytest.raises(SystemExit):
        main(["generate", "--seeds", "0"])  # --output_dir is required
    assert "one of the arguments --output_dir is required" in capsys.readouterr().err


def test_a_progress_bar_counts_the_images_on_stderr_unless_no_progress(pipeline_folder, tmp_path, capsys):
    common = ["generate", "--model", str(pipeline_folder), "--seeds", "0-4", "--batch_size", "2"]
    assert main([*common, "--output_dir", str(tmp_path / "shown")]) == 0
    captured = capsys.readouterr()
    final = captured.err.replace("\r", "\n").splitlines()[-1]
    assert final.startswith("generate: 100%") and "5/5" in final, captured.err
    assert "generate:" not in captured.out and "Loading weights" not in captured.err
    assert main([*common, "--output_dir", str(tmp_path / "quiet"), "--no_progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.startswith("Wrote 5 images")
