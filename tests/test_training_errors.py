"""training/train.py on bad input and at the end of a run: one `error:` line (exit code 2) for every bad flag, path,
checkpoint or dataset, once with several processes; an existing run is never overwritten by mistake; the final
checkpoint and pipeline survive a failing end-of-run extra. Micro models and 16 images, as in test_training.py."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import SUBPROCESS_ENV, TRAIN_SCRIPT, assert_same_weights
from PIL import Image

from transgan_hf import TransGANPipeline
from transgan_hf.cli import CommandError
from transgan_hf.training.args import build_parser, parse_args
from transgan_hf.training.checkpointing import ARGS_FILE, list_checkpoints
from transgan_hf.training.ema import ema_beta
from transgan_hf.training.loop import cli_main
from transgan_hf.training.losses import gradient_penalty_weight
from transgan_hf.training.reporting import SampleWriter, TrainingLog
from transgan_hf.training.trainer import GANTrainer

pytestmark = pytest.mark.usefixtures("single_thread")


def cli(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """`python training/train.py ARGV` in this process: the exit code and stderr."""
    from accelerate.state import AcceleratorState, GradientState

    monkeypatch.setattr(sys, "argv", ["train.py", *argv])
    try:
        code = cli_main()
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return code, capsys.readouterr().err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# ---------------------------------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------------------------------


def test_every_numeric_flag_has_a_range_checking_type():
    """A plain `type=int`/`type=float` would accept negative or NaN values; each number goes through `number`."""
    numeric = [action for action in build_parser()._actions if action.type is not None]
    assert {action.dest for action in numeric} >= {"learning_rate", "seed", "adam_beta1", "max_grad_norm", "ema_decay"}
    assert not [action.dest for action in numeric if action.type in (int, float)]


@pytest.mark.parametrize(("flags", "message"), [
    (["--learning_rate", "-1"], "argument --learning_rate: must be > 0, got -1"),
    (["--learning_rate", "0"], "argument --learning_rate: must be > 0, got 0"),
    (["--learning_rate", "nan"], "argument --learning_rate: must be a finite number, got nan"),
    (["--seed", "-1"], "argument --seed: must be in [0, 4294967295], got -1"),
    (["--seed", "4294967296"], "argument --seed: must be in [0, 4294967295]"),
    (["--adam_beta1", "-0.1"], "argument --adam_beta1: must be in [0, 1), got -0.1"),
    (["--adam_beta2", "1"], "argument --adam_beta2: must be in [0, 1), got 1"),
    (["--adam_epsilon", "0"], "argument --adam_epsilon: must be > 0"),
    (["--ema_decay", "1"], "argument --ema_decay: must be in [0, 1), got 1"),
    (["--ema_decay", "-0.5"], "argument --ema_decay: must be in [0, 1)"),
    (["--ema_kimg", "0"], "argument --ema_kimg: must be > 0"),
    (["--ema_warmup", "1.5"], "argument --ema_warmup: must be in [0, 1]"),
    (["--ema_kimg", "10", "--ema_decay", "0.9"], "argument --ema_decay: not allowed with argument --ema_kimg"),
    (["--max_grad_norm", "-1"], "argument --max_grad_norm: must be >= 0, got -1"),
    (["--phi", "0"], "argument --phi: must be > 0"),
    (["--diffaug_policy", "translation,blur"], "argument --diffaug_policy: Unknown DiffAugment policy 'blur'"),
    (["--train_batch_size", "0"], "argument --train_batch_size: must be >= 1, got 0"),
    (["--gen_gradient_accumulation_steps", "-2"], "argument --gen_gradient_accumulation_steps: must be >= 1"),
    (["--max_train_steps", "0"], "argument --max_train_steps: must be >= 1"),
    (["--max_train_kimg", "-1"], "argument --max_train_kimg: must be > 0"),
    (["--max_train_minutes", "0"], "argument --max_train_minutes: must be > 0, got 0"),
    (["--max_train_minutes", "inf"], "argument --max_train_minutes: must be a finite number"),
    (["--checkpointing_steps", "1.5"], "argument --checkpointing_steps: expected an integer, got '1.5'"),
    (["--checkpoints_total_limit", "0"], "argument --checkpoints_total_limit: must be >= 1"),
    (["--num_sample_images", "10"], "argument --num_sample_images: must be a square"),
    (["--num_sample_images", "4096"], "argument --num_sample_images: must be in [1, 1024]"),
    (["--eval_num_images", "1"], "argument --eval_num_images: must be >= 2"),
    (["--eval_batch_size", "0"], "argument --eval_batch_size: must be >= 1"),
    (["--dataloader_num_workers", "-1"], "argument --dataloader_num_workers: must be >= 0"),
    (["--resolution", "0"], "argument --resolution: must be >= 1"),
    (["--report_to", "nonsense"], "argument --report_to: 'nonsense' is not a tracker"),
    (["--overwrite_output_dir", "--resume_from_checkpoint", "latest"],
     "argument --resume_from_checkpoint: not allowed with argument --overwrite_output_dir"),
    (["--push_to_hub"], "argument --push_to_hub: needs --hub_model_id"),
    (["--no_such_flag"], "unrecognized arguments: --no_such_flag"),
])
def test_out_of_range_flags_are_refused_at_parse_time(flags, message):
    with pytest.raises(CommandError) as caught:
        parse_args(flags)
    assert str(caught.value).startswith(message)


def test_parsed_values_are_normalised():
    args = parse_args(["--diffaug_policy", " Translation , color ", "--max_grad_norm", "0", "--report_to",
                             "none"])
    assert (args.diffaug_policy, args.max_grad_norm, args.report_to) == ("translation,color", 0.0, None)
    assert parse_args(["--ema_decay", "0"]).ema_decay == 0.0  # no averaging: a legal choice


def test_max_grad_norm_zero_turns_clipping_off_but_still_measures_the_norm():
    def clipped(max_grad_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
        model = torch.nn.Linear(2, 1)
        model.weight.grad, model.bias.grad = torch.full((1, 2), 3.0), torch.full((1,), 4.0)
        stub = SimpleNamespace(accelerator=SimpleNamespace(unscale_gradients=lambda optimizer: None),
                               recipe=SimpleNamespace(max_grad_norm=max_grad_norm))
        norm = GANTrainer._clip(stub, model, optimizer=None)
        return norm, torch.cat([model.weight.grad.flatten(), model.bias.grad])

    norm, gradients = clipped(0.0)
    assert norm.item() == pytest.approx(math.sqrt(3**2 + 3**2 + 4**2))
    assert gradients.tolist() == [3.0, 3.0, 4.0]  # untouched (clip_grad_norm_ with 0 would zero them)
    norm, gradients = clipped(1.0)
    assert gradients.norm().item() == pytest.approx(1.0, rel=1e-4)


def test_library_functions_refuse_what_the_flags_refuse():
    with pytest.raises(ValueError, match=r"ema_decay must lie in \[0, 1\)"):
        ema_beta(0, 16, ema_kimg=None, ema_decay=1.0)
    with pytest.raises(ValueError, match="finite and non-negative"):
        ema_beta(0, 16, ema_kimg=float("nan"))
    with pytest.raises(ValueError, match="positive and finite"):
        gradient_penalty_weight(float("nan"))


def test_a_bad_flag_is_one_error_line_without_traceback():
    """The script as a user runs it (a subprocess, so nothing of pytest's output capture is involved)."""
    finished = subprocess.run([sys.executable, str(TRAIN_SCRIPT), "--learning_rate", "-1"], env=SUBPROCESS_ENV,
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 2
    assert finished.stderr.strip().splitlines() == ["error: argument --learning_rate: must be > 0, got -1"]


# ---------------------------------------------------------------------------------------------------------------------
# --output_dir
# ---------------------------------------------------------------------------------------------------------------------


def listing(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in sorted(folder.rglob("*"))}


def test_an_earlier_run_is_refused_unless_resumed_or_overwritten(micro_args, run_training_in_process, tmp_path,
                                                                 monkeypatch, capsys):
    output = tmp_path / "run"
    run_training_in_process(micro_args(output, "--max_train_steps", "2", "--checkpointing_steps", "1"))
    (output / "notes.txt").write_text("the user's own file")
    before = listing(output)

    code, stderr = cli(micro_args(output, "--max_train_steps", "2"), monkeypatch, capsys)
    assert code == 2 and len(error_lines(stderr)) == 1
    assert "holds a previous run (checkpoint-1, checkpoint-2, pipeline, samples, ...)" in stderr
    assert "--resume_from_checkpoint latest" in stderr and "--overwrite_output_dir" in stderr
    assert listing(output) == before  # nothing written, nothing deleted

    result = run_training_in_process(micro_args(output, "--max_train_steps", "1", "--overwrite_output_dir",
                                                "--seed", "5"))
    assert result.step == 1
    assert [p.name for _, p in list_checkpoints(output)] == ["checkpoint-1"]  # the old checkpoint-2 is gone
    assert sorted(p.name for p in (output / "samples").iterdir()) == ["step_000001.png"]
    assert [row["step"] for row in read_log(output)] == [1]
    assert (output / "notes.txt").read_text() == "the user's own file"
    assert "| seed | 5 |" in (output / "pipeline" / "README.md").read_text()


def test_output_dir_that_is_a_file_is_refused(micro_args, tmp_path, monkeypatch, capsys):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    code, stderr = cli(micro_args(not_a_folder), monkeypatch, capsys)
    assert (code, error_lines(stderr)) == (2, [f"error: argument --output_dir: '{not_a_folder}' is a file; pass a "
                                               "folder."])
    code, stderr = cli(micro_args(not_a_folder / "run"), monkeypatch, capsys)
    assert code == 2 and "cannot be created" in stderr


def test_leftovers_of_interrupted_saves_are_removed_at_start(micro_args, run_training_in_process, tmp_path):
    output = tmp_path / "run"
    for folder in (".pipeline.staging.x1", ".pipeline.old.x2", "checkpoint-7.tmp", "checkpoint-3.old"):
        (output / folder).mkdir(parents=True)
    (output / "samples").mkdir()
    (output / "samples" / ".step_000001.png.x3.tmp").write_bytes(b"half a png")
    with pytest.raises(CommandError, match="holds a previous run"):  # unfinished checkpoints belong to a run
        run_training_in_process(micro_args(output, "--max_train_steps", "1"))
    run_training_in_process(micro_args(output, "--max_train_steps", "1", "--resume_from_checkpoint", "latest"))
    assert sorted(path.name for path in output.iterdir()) == ["checkpoint-1", "pipeline", "samples",
                                                               "training_log.jsonl"]
    assert sorted(path.name for path in (output / "samples").iterdir()) == ["step_000001.png"]


def test_saved_files_get_the_umask_permissions(micro_args, run_training_in_process, tmp_path):
    old_mask = os.umask(0o027)
    try:
        output = tmp_path / "run"
        run_training_in_process(micro_args(output, "--max_train_steps", "2", "--checkpointing_steps", "1"))
        run_training_in_process(micro_args(output, "--max_train_steps", "3", "--resume_from_checkpoint", "latest"))
    finally:
        os.umask(old_mask)
    paths = [output / "checkpoint-3", *(output / "checkpoint-3").rglob("*"), output / "samples" / "step_000003.png",
             output / "training_log.jsonl"]
    modes = {path.name: path.stat().st_mode & 0o777 for path in paths}
    assert modes == {path.name: 0o750 if path.is_dir() else 0o640 for path in paths}


# ---------------------------------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------------------------------


def read_log(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / TrainingLog.FILE).read_text().splitlines()]


def test_resuming_another_architecture_names_what_differs(training_workspace, micro_args, run_training_in_process,
                                                          tmp_path, monkeypatch, capsys):
    output = tmp_path / "run"
    run_training_in_process(micro_args(output, "--max_train_steps", "2", "--checkpointing_steps", "2"))
    wider = json.loads((training_workspace / "generator.json").read_text()) | {"hidden_size": 128}
    (tmp_path / "wider.json").write_text(json.dumps(wider))
    before = listing(output)
    argv = micro_args(output, "--max_train_steps", "4", "--resume_from_checkpoint", "latest",
                      "--generator_config", str(tmp_path / "wider.json"))
    code, stderr = cli(argv, monkeypatch, capsys)
    assert code == 2 and len(error_lines(stderr)) == 1
    assert f"cannot resume from {output / 'checkpoint-2'} (checkpoint -> this run: generator hidden_size 64 -> 128)" \
        in stderr
    assert listing(output) == before


def test_damaged_checkpoints_give_one_error_line(training_workspace, micro_args, run_training_in_process, tmp_path,
                                                 monkeypatch, capsys):
    output = tmp_path / "run"
    run_training_in_process(micro_args(output, "--max_train_steps", "1"))
    resume = micro_args(output, "--max_train_steps", "2", "--resume_from_checkpoint", "latest")
    state_file = output / "checkpoint-1" / "training_state_0.pt"
    state_file.write_bytes(state_file.read_bytes()[:100])  # truncated
    code, stderr = cli(resume, monkeypatch, capsys)
    assert code == 2 and error_lines(stderr) and "cannot read the checkpoint" in stderr
    (output / "checkpoint-1" / ARGS_FILE).write_text('{"seed": 0')  # torn
    code, stderr = cli(resume, monkeypatch, capsys)
    assert code == 2 and "is not a readable checkpoint of this training script" in stderr
    code, stderr = cli(micro_args(output, "--resume_from_checkpoint", str(training_workspace)), monkeypatch, capsys)
    assert code == 2 and "is not a readable checkpoint" in stderr
    assert "Traceback" not in stderr


def test_a_torn_last_log_row_is_dropped_on_resume(micro_args, run_training_in_process, tmp_path, caplog):
    output = tmp_path / "run"
    run_training_in_process(micro_args(output, "--max_train_steps", "2", "--checkpointing_steps", "2"))
    with (output / TrainingLog.FILE).open("a") as log:
        log.write('{"step": 3, "loss/discrim')  # killed while writing step 3's row
    run_training_in_process(micro_args(output, "--max_train_steps", "3", "--resume_from_checkpoint", "latest"))
    assert [row["step"] for row in read_log(output)] == [1, 2, 3]
    assert "dropped 1 unreadable row(s)" in caplog.text


# ---------------------------------------------------------------------------------------------------------------------
# The end of a run
# ---------------------------------------------------------------------------------------------------------------------


class FailingHook:
    every_steps = 100

    def __call__(self, context):
        raise RuntimeError("the metric network ran out of memory")


def test_a_failing_final_grid_and_evaluation_keep_the_saved_run(micro_args, run_training_in_process, tmp_path,
                                                                monkeypatch, capsys):
    """The issue's lost run: the final sample grid was refused by the memory pre-check after training. The final
    checkpoint and the pipeline are written before it, and its failure is only a warning."""

    def refuse(self, *args, **kwargs):
        raise ValueError("64 samples need about 5.4 GiB on cpu, but only 4.6 GiB are free")

    monkeypatch.setattr(TransGANPipeline, "__call__", refuse)
    output = tmp_path / "run"
    result = run_training_in_process(micro_args(output, "--max_train_steps", "2"),
                                     evaluation_hooks=[FailingHook()])
    assert (result.step, result.samples_image) == (2, None)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert warnings[0].startswith("warning: the final sample grid failed (ValueError: 64 samples need about 5.4 GiB")
    assert warnings[1].startswith("warning: the final evaluation failed (RuntimeError: the metric network")
    assert f"the run is saved in {output / 'checkpoint-2'} and {output / 'pipeline'}" in warnings[0]
    assert_same_weights(output / "pipeline" / "generator", output / "checkpoint-2" / "generator_ema")
    card = (output / "pipeline" / "README.md").read_text()
    assert "| steps (generator updates) | 2 |" in card and "samples.png" not in card
    assert not (output / "pipeline" / "samples.png").exists()


def test_sample_grids_are_generated_in_batches_that_do_not_change_the_grid(micro_args, run_training_in_process,
                                                                           tmp_path, monkeypatch):
    calls = []
    original = TransGANPipeline.__call__

    def recording(self, *args, **kwargs):
        calls.append(len(kwargs["latents"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TransGANPipeline, "__call__", recording)
    output = tmp_path / "run"
    result = run_training_in_process(micro_args(output, "--max_train_steps", "1", "--num_sample_images", "16"))
    assert calls == [4, 4, 4, 4]  # the generator's training batch (--gen_batch_size 4), not all 16 at once
    assert Image.open(result.samples_image).size == (64, 64)

    pipeline = TransGANPipeline.from_pretrained(output / "pipeline")
    stub = SimpleNamespace(is_main_process=True, device=torch.device("cpu"), trackers=[],
                           wait_for_everyone=lambda: None)
    grids = []
    for batch_size in (16, 3):
        folder = tmp_path / f"batch{batch_size}"
        writer = SampleWriter(stub, pipeline, folder, num_images=16, seed=0, batch_size=batch_size)
        grids.append(np.asarray(Image.open(writer(1)), dtype=np.int16))
    assert np.abs(grids[0] - grids[1]).max() <= 1  # the same images, up to batched round-off


# ---------------------------------------------------------------------------------------------------------------------
# Data errors, also with two processes
# ---------------------------------------------------------------------------------------------------------------------


def test_a_folder_without_images_is_one_error_line(micro_args, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    output = tmp_path / "run"
    code, stderr = cli(micro_args(output, "--train_data_dir", str(empty)), monkeypatch, capsys)
    assert code == 2 and len(error_lines(stderr)) == 1 and "No images found in --train_data_dir" in stderr
    assert not output.exists()  # refused before anything was written


def test_two_processes_print_an_error_once(micro_args, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    command = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(TRAIN_SCRIPT),
               *micro_args(tmp_path / "run", "--train_data_dir", str(empty))]
    finished = subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert finished.returncode != 0
    assert len(error_lines(finished.stderr)) == 1, finished.stderr[-4000:]
    assert "No images found" in error_lines(finished.stderr)[0]
    assert "[rank1]" not in finished.stderr and "process 1:" not in finished.stderr
