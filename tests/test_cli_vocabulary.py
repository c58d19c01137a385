"""One flag vocabulary across the `transgan` commands and training/train.py (the former spellings work for a release,
with one notice), the training script's preset table and `--print_recipe`, errors that name the flag of the command
that was run, and output that stays readable: no `transformers` loading bars, no log line glued onto a progress bar.

Elsewhere: progress bars of each command in test_generate_cli.py, test_evaluate_cli.py and test_cli_errors.py
(convert); `python spaces/app.py --help` in test_space.py; misspelt config keywords in test_loading_errors.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import re

import pytest
import transformers

from transgan_hf import TransGANPipeline
from transgan_hf.cli import CommandError, build_parser, main
from transgan_hf.training.args import build_parser as build_training_parser
from transgan_hf.training.args import parse_args
from transgan_hf.training.presets import TRAINING_PRESETS, recipe_fields

RENAMED = [  # command, former spelling, flag, the other flags the command needs
    ("generate", "--outdir", "--output_dir", ["--seeds", "0"]),
    ("stats", "--out", "--output_file", ["--train_data_dir", "images"]),
    ("evaluate", "--output", "--output_file", ["--model", "m"]),
    ("evaluate", "--dataset", "--dataset_name", ["--model", "m"]),
    ("evaluate", "--dataset_split", "--split", ["--model", "m"]),
]


def visible_flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions if action.help != argparse.SUPPRESS for flag in action.option_strings}


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every `transgan` sub-command's parser, and training/train.py's as "train"."""
    subparsers = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    return {**subparsers.choices, "train": build_training_parser()}


# ---------------------------------------------------------------------------------------------------------------------
# One vocabulary
# ---------------------------------------------------------------------------------------------------------------------


def test_every_command_spells_outputs_and_data_as_the_training_script_does():
    parsers = command_parsers()
    for name, parser in parsers.items():
        flags = visible_flags(parser)
        assert {flag for flag in flags if flag.startswith("--out")} <= {"--output_dir", "--output_file"}, name
        assert {flag for flag in flags if re.fullmatch(r"--(\w*dataset\w*|\w*split)", flag)} <= {
            "--dataset_name", "--dataset_config_name", "--split"}, name
        assert not {old for _, old, _, _ in RENAMED} & flags, name
    for name in ("generate", "convert", "train"):  # they write folders
        assert "--output_dir" in visible_flags(parsers[name]), name
    for name in ("stats", "evaluate"):  # they write one file
        assert "--output_file" in visible_flags(parsers[name]), name
    assert {"--dataset_name", "--train_data_dir", "--resolution"} <= visible_flags(parsers["stats"])
    assert {"--dataset_name", "--train_data_dir", "--resolution"} <= visible_flags(parsers["train"])
    for name in ("generate", "convert", "stats", "evaluate"):  # each can run for minutes: a bar, and a way to hide it
        assert "--no_progress" in visible_flags(parsers[name]), name


@pytest.mark.parametrize(("command", "old", "new", "others"), RENAMED, ids=[f"{c} {o}" for c, o, _, _ in RENAMED])
def test_former_spellings_still_work_with_one_notice_naming_the_flag(command, old, new, others, capsys):
    current = build_parser().parse_args([command, *others, new, "x.npz"])
    assert capsys.readouterr().err == ""
    former = build_parser().parse_args([command, *others, old, "x.npz", old, "x.npz"])  # given twice: one notice
    assert vars(former) == vars(current)
    assert capsys.readouterr().err == (f"warning: {old} is deprecated and will be removed in the next release; use "
                                       f"{new}.\n")
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, *others, old, "x.npz", new, "y.npz"])
    assert f"argument {new}: not allowed with argument {old}" in capsys.readouterr().err
    text = command_parsers()[command].format_help()
    assert re.search(rf"{new}(?![a-z_])", text) and not re.search(rf"{old}(?![a-z_])", text)  # listed: the flag only


def test_a_command_run_with_a_former_spelling_does_its_work(pipeline_folder, tmp_path, capsys):
    out = tmp_path / "images"
    assert main(["generate", "--model", str(pipeline_folder), "--seeds", "0-1", "--outdir", str(out),
                 "--no_progress"]) == 0
    assert sorted(path.name for path in out.iterdir()) == ["seed0000.png", "seed0001.png"]
    assert capsys.readouterr().err == ("warning: --outdir is deprecated and will be removed in the next release; use "
                                       "--output_dir.\n")


# ---------------------------------------------------------------------------------------------------------------------
# training/train.py: the presets' defaults in --help, --print_recipe
# ---------------------------------------------------------------------------------------------------------------------


def shown(value) -> str:
    """How the --help table writes a recipe value."""
    if value is None or isinstance(value, bool):
        return {None: "-", True: "yes", False: "no"}[value]
    return f"{value:g}" if isinstance(value, float) else str(value)


def help_table(text: str) -> dict[str, dict[str, str]]:
    """flag -> preset -> value, read back from the --help epilog (a row per flag, or a line per preset below it)."""
    lines = text[text.index("\nrecipe flags:"):].splitlines()
    presets = lines[3].split()
    table: dict[str, dict[str, str]] = {}
    for line in lines[4:]:
        words = line.split()
        if line.startswith("  --"):
            flag = words[0]
            table[flag] = dict(zip(presets, words[1:]))
        elif words and words[0].endswith(":"):
            table[flag][words[0][:-1]] = words[1]
    return table


def test_train_help_shows_every_preset_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    table = help_table(capsys.readouterr().out)
    assert set(table) == {f"--{name}" for name in recipe_fields()}
    for name in recipe_fields():
        assert table[f"--{name}"] == {preset: shown(getattr(recipe, name)) for preset, recipe in
                                      TRAINING_PRESETS.items()}, name
    assert table["--learning_rate"]["tiny"] == "0.0008" and table["--n_critic"]["stl10"] == "5"
    assert table["--checkpointing_steps"]["tiny"] == "1000" and table["--center_crop"]["cifar10"] == "yes"
    assert table["--diffaug_policy"]["celeba_hq_256"] == "filter,translation,erase_ratio,color,hue"


def test_print_recipe_prints_the_resolved_recipe_and_exits_without_training(tmp_path, capsys, monkeypatch):
    from transgan_hf.training.loop import main as train

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        train(["--preset", "stl10", "--learning_rate", "3e-4", "--no-center_crop", "--max_train_kimg", "10",
               "--print_recipe"])
    assert exit_info.value.code == 0
    expected = TRAINING_PRESETS["stl10"].replace(learning_rate=3e-4, center_crop=False,
                                                 max_train_steps=math.ceil(10_000 / (32 * 1 * 5)))
    assert json.loads(capsys.readouterr().out) == {"preset": "stl10", **dataclasses.asdict(expected)}
    assert list(tmp_path.iterdir()) == []  # no runs/transgan-stl10, nothing trained


# ---------------------------------------------------------------------------------------------------------------------
# Errors name the flag of the command that was run
# ---------------------------------------------------------------------------------------------------------------------


def test_missing_inception_weights_name_the_flag_of_the_command(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TRANSGAN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    training = ["--eval_steps", "2", "--eval_feature_extractor", "inception", "--output_dir", str(tmp_path / "run")]
    given = ["--eval_inception_weights", str(tmp_path / "no.pth")]
    for extra, problem in [([], "were not found"), (given, "--eval_inception_weights points to")]:
        with pytest.raises(CommandError) as error:
            parse_args([*training, *extra])
        message = str(error.value)
        assert message.startswith("argument --eval_inception_weights: ") and problem in message
        assert "pass --eval_inception_weights PATH" in message
        assert not re.search(r"(?<!eval_)--inception_weights", message)  # the flag of `transgan evaluate`

    assert main(["evaluate", "--model", "m", "--metrics", "is", "--inception_weights", str(tmp_path / "no.pth")]) == 2
    message = capsys.readouterr().err
    assert "--inception_weights points to" in message and "pass --inception_weights PATH" in message
    assert "--eval_inception_weights" not in message


# ---------------------------------------------------------------------------------------------------------------------
# Output: no loading bars per component, log lines beside the training bar
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture()
def transformers_bars_on():
    """transformers' progress bars on (training turns them off for the process), then as they were."""
    was_on = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.enable_progress_bar()
    yield
    if not was_on:
        transformers.utils.logging.disable_progress_bar()


def test_loading_and_saving_draw_no_transformers_bars_and_keep_the_setting(pipeline_folder, tmp_path, capsys,
                                                                         transformers_bars_on):
    pipeline = TransGANPipeline.from_pretrained(pipeline_folder)
    pipeline.save_pretrained(tmp_path / "copy")
    err = capsys.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err and "%|" not in err, err
    assert transformers.utils.logging.is_progress_bar_enabled()  # restored for the user's own loads

    transformers.utils.logging.disable_progress_bar()
    TransGANPipeline.from_pretrained(tmp_path / "copy")
    assert not transformers.utils.logging.is_progress_bar_enabled()  # turned off before: stays off


class LoggingHook:
    """An evaluation hook that logs a warning at every step (the evaluation of step 1 runs inside the loop)."""

    every_steps = 1

    def __call__(self, context):
        logging.getLogger("transgan_hf.training.test").warning("hook message at step %d", context.step)
        return {}


def test_training_log_lines_are_never_glued_onto_the_progress_bar(micro_args, run_training_in_process, tmp_path,
                                                                 capsys, monkeypatch):
    # pytest's log capture handlers would keep the script's logging set-up (logging.basicConfig) from installing.
    monkeypatch.setattr(logging.root, "handlers", [])
    monkeypatch.setattr(logging.root, "level", logging.root.level)
    run_training_in_process(micro_args(tmp_path / "run", "--max_train_steps", "2"), evaluation_hooks=[LoggingHook()])
    err = capsys.readouterr().err
    assert "steps:" in err  # the bar was drawn
    pieces = [piece for piece in re.split(r"[\r\n]", err) if "hook message" in piece]
    assert len(pieces) == 2, err
    for piece in pieces:  # each log line starts a line of its own, not after the bar's text
        assert re.fullmatch(r"\d{4}-\d\d-\d\d [\d:,]+ WARNING hook message at step \d", piece), repr(err)
