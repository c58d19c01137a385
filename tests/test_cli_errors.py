"""Every bad input of every `transgan` command is one `error:` line on stderr, exit code 2, no traceback; nothing is
deleted or half-written, and what is written gets the user's umask permissions."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import StandInFeatures, official_checkpoint_from, reduced_official_args, tiny_pipeline
from PIL import Image

from transgan_hf.cli import CommandError, as_command_error, main
from transgan_hf.convert_official import configs_from_official_args
from transgan_hf.metrics import load_statistics, register_feature_extractor
from transgan_hf.modeling_transgan import TransGANDiscriminator, TransGANGenerator

register_feature_extractor("cli-errors-standin", lambda weights_path=None: StandInFeatures())
STANDIN = ["--feature_extractor", "cli-errors-standin", "--no_progress"]


def error_of(capsys, *argv: str) -> str:
    """Run `transgan *argv` in this process; it must fail with exit code 2 and exactly one `error:` line."""
    code = main(list(argv))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err and err.endswith(lines[0] + "\n"), err
    return lines[0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "pipe"
    tiny_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> tuple[Path, Path]:
    """A small official-format checkpoint and its flags file."""
    folder = tmp_path_factory.mktemp("official")
    args = reduced_official_args("cifar10")
    g_config, d_config = configs_from_official_args(args)
    torch.manual_seed(0)
    checkpoint = official_checkpoint_from(TransGANGenerator(g_config), TransGANDiscriminator(d_config),
                                          args["gen_model"], d_config)
    checkpoint["dis_model"] = args["dis_model"]
    torch.save(checkpoint, folder / "checkpoint.pth")
    (folder / "args.json").write_text(json.dumps(args))
    return folder / "checkpoint.pth", folder / "args.json"


@pytest.fixture()
def umask_027():
    previous = os.umask(0o027)  # neither the usual 022 nor tempfile's 077, so both mistakes show
    yield
    os.umask(previous)


def modes(path: Path) -> set[tuple[str, int]]:
    """(kind, permission bits) of `path` and everything inside it."""
    entries = [path, *path.rglob("*")] if path.is_dir() else [path]
    return {("dir" if entry.is_dir() else "file", entry.stat().st_mode & 0o777) for entry in entries}


# ---------------------------------------------------------------------------------------------------------------------
# The boundary: input errors become one line, bugs keep their traceback
# ---------------------------------------------------------------------------------------------------------------------


def test_input_errors_become_one_line_and_bugs_stay_tracebacks(capsys):
    with pytest.raises(CommandError, match="cannot load: bad\nfile"):
        with as_command_error("cannot load: "):
            raise OSError("bad\nfile")
    with pytest.raises(KeyError):
        with as_command_error("cannot load: "):
            raise KeyError("a bug")



def test_a_message_with_line_breaks_is_printed_on_one_line(capsys, monkeypatch):
    def fail(text):
        raise CommandError("a library's message\n  spread over\nlines")

    monkeypatch.setattr("transgan_hf.commands.generate.parse_seeds", fail)
    assert error_of(capsys, "generate", "--seeds", "0", "--output_dir", "o") == (
        "error: a library's message spread over lines")


def test_argparse_errors_are_usage_and_one_error_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--seeds", "0", "--output_dir", "o", "--batch_size", "abc"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == "transgan generate: error: argument --batch_size: invalid int value: 'abc'"


def test_the_console_script_prints_one_line(tmp_path):
    (tmp_path / "bad.npz").write_text("not statistics")
    result = subprocess.run([sys.executable, "-m", "transgan_hf.cli", "evaluate", "--model", "m", "--reference",
                             str(tmp_path / "bad.npz")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ") and "bad.npz' is not a readable .npz statistics file" in result.stderr


# ---------------------------------------------------------------------------------------------------------------------
# Model folders
# ---------------------------------------------------------------------------------------------------------------------


def truncate_weights(folder: Path) -> None:
    weights = folder / "generator" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def pickle_only(folder: Path) -> None:
    from safetensors.torch import load_file

    for component in ("generator", "discriminator"):
        weights = folder / component / "model.safetensors"
        torch.save(load_file(weights), folder / component / "pytorch_model.bin")
        weights.unlink()


BROKEN_MODELS = {
    "truncated weights": truncate_weights,
    "pickle-only weights": pickle_only,
    "model_index.json not JSON": lambda folder: (folder / "model_index.json").write_text("{not json"),
    "model_index.json a list": lambda folder: (folder / "model_index.json").write_text("[1, 2]"),
    "model_index.json wrong component": lambda folder: (folder / "model_index.json").write_text(
        '{"_class_name": "TransGANPipeline", "generator": 5}'),
    "config.json wrong type": lambda folder: (folder / "generator" / "config.json").write_text('{"latent_dim": "x"}'),
    "no generator folder": lambda folder: shutil.rmtree(folder / "generator"),
    "a file": lambda folder: (shutil.rmtree(folder), folder.write_text("x")),
}


@pytest.mark.parametrize("damage", BROKEN_MODELS.values(), ids=BROKEN_MODELS.keys())
def test_broken_model_folders(damage, model_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    damage(broken)
    line = error_of(capsys, "generate", "--model", str(broken), "--seeds", "0", "--output_dir", str(tmp_path / "out"))
    assert line.startswith(f"error: cannot load --model {str(broken)!r}: ")
    line = error_of(capsys, "evaluate", "--model", str(broken), "--metrics", "is", "--num_images", "4",
                    "--is_splits", "2", *STANDIN)
    assert line.startswith(f"error: cannot load --model {str(broken)!r}: ")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Flags: counts, seeds and output paths, refused before any work
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "--seeds", "-1"], "--seeds: '-1' is not a seed or a range"),
        (["generate", "--seeds", "0", "--batch_size", "0"], "--batch_size must be >= 1, got 0."),
        (["generate", "--seeds", "0", "--num_candidates", "-2"], "--num_candidates must be >= 1, got -2."),
        (["evaluate", "--num_images", "1"], "--num_images must be >= 2, got 1."),
        (["evaluate", "--seed", "-1"], "--seed must be >= 0, got -1."),
        (["evaluate", "--batch_size", "-4"], "--batch_size must be >= 1, got -4."),
        (["evaluate", "--kid_subsets", "0"], "--kid_subsets must be >= 1, got 0."),
        (["evaluate", "--kid_subset_size", "1"], "--kid_subset_size must be >= 2, got 1."),
        (["evaluate", "--is_splits", "0"], "--is_splits must be >= 1, got 0."),
        (["evaluate", "--metrics", "is", "--num_images", "4", "--is_splits", "5"], "--is_splits 5 is more than"),
        (["stats", "--max_images", "1"], "--max_images must be >= 2, got 1."),
        (["stats", "--resolution", "0"], "--resolution must be >= 1, got 0."),
        (["stats", "--batch_size", "0"], "--batch_size must be >= 1, got 0."),
    ],
)
def test_out_of_range_flags(argv, message, model_dir, tmp_path, capsys):
    required = {
        "generate": ["--model", str(model_dir), "--output_dir", str(tmp_path / "out")],
        "evaluate": ["--model", str(model_dir), "--metrics", "is", *STANDIN],
        "stats": ["--train_data_dir", str(tmp_path), "--output_file", str(tmp_path / "s.npz"), *STANDIN],
    }[argv[0]]
    assert message in error_of(capsys, *argv, *required)
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "--seeds", "0", "--output_dir", "{file}"], "--output_dir '{file}' is a file; pass a folder."),
        (["generate", "--seeds", "0", "--output_dir", "{file}/sub"], "cannot be created: '{file}' is a file."),
        (["generate", "--seeds", "0", "--output_dir", "{dir}", "--grid", "s.npz"], "--grid '{dir}/s.npz' is a folder"),
        (["evaluate", "--metrics", "is", "--output_file", "{dir}"],
         "--output_file '{dir}' is a folder; pass a file name."),
        (["evaluate", "--metrics", "is", "--output_file", "{file}/r.json"], "cannot be created: '{file}' is a file."),
        (["stats", "--output_file", "{dir}/s.npz", "--train_data_dir", "{dir}"],
         "--output_file '{dir}/s.npz' is a folder"),
        (["stats", "--output_file", "{file}/s.npz", "--train_data_dir", "{dir}"],
         "cannot be created: '{file}' is a file."),
        (["convert", "--checkpoint", "c", "--preset", "cifar10", "--output_dir", "{file}/out"],
         "--output_dir '{file}/out' cannot be created: '{file}' is a file."),
    ],
)
def test_unusable_output_paths_fail_before_any_work(argv, message, model_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    (tmp_path / "dir" / "s.npz").mkdir(parents=True)
    paths = {"file": str(tmp_path / "file"), "dir": str(tmp_path / "dir")}
    argv = [arg.format(**paths) for arg in argv]
    if argv[0] in ("generate", "evaluate"):
        argv += ["--model", str(model_dir)] + (STANDIN if argv[0] == "evaluate" else [])
    assert message.format(**paths) in error_of(capsys, *argv)
    assert (tmp_path / "file").read_text() == "mine" and sorted(os.listdir(tmp_path / "dir")) == ["s.npz"]


# ---------------------------------------------------------------------------------------------------------------------
# Statistics files and image folders
# ---------------------------------------------------------------------------------------------------------------------

MALFORMED_STATISTICS = {
    "object array": (dict(mu=np.array([None] * 4, dtype=object), sigma=np.eye(4)), "Object arrays cannot be loaded"),
    "strings": (dict(mu=np.array(["a"] * 4), sigma=np.eye(4)), "'mu' must hold real numbers, got dtype <U1"),
    "complex": (dict(mu=np.zeros(4, complex), sigma=np.eye(4)), "'mu' must hold real numbers"),
    "NaN": (dict(mu=np.zeros(4), sigma=np.full((4, 4), np.nan)), "'sigma' contains NaN or infinite values"),
    "shapes": (dict(mu=np.zeros((4, 2)), sigma=np.eye(4)), "mu must be (D,) and sigma (D, D)"),
    "missing keys": (dict(average=np.zeros(4)), "has the arrays ['average']; reference statistics need 'mu'"),
    "num_images array": (dict(mu=np.zeros(4), sigma=np.eye(4), num_images=np.arange(3)), "'num_images' must be one"),
    "feature_extractor number": (dict(mu=np.zeros(4), sigma=np.eye(4), feature_extractor=np.array(3)),
                                 "'feature_extractor' must be one string"),
    "features of another size": (dict(mu=np.zeros(4), sigma=np.eye(4), features=np.zeros((3, 5))),
                                 "features have shape (3, 5); expected (N, 4)"),
}


@pytest.mark.parametrize(("arrays", "message"), MALFORMED_STATISTICS.values(), ids=MALFORMED_STATISTICS.keys())
def test_malformed_statistics_files(arrays, message, tmp_path, capsys):
    path = tmp_path / "reference.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="reference.npz"):
        load_statistics(path)
    line = error_of(capsys, "evaluate", "--model", "m", "--reference", str(path))
    assert str(path) in line and message in line


def test_statistics_files_that_are_not_npz_are_never_unpickled(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "ran",))

    (tmp_path / "pickle.npz").write_bytes(pickle.dumps({"mu": Payload()}))
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    (tmp_path / "folder.npz").mkdir()
    for name, message in [("pickle.npz", "not a zip archive of .npy arrays"), ("single.npz", "not a zip archive"),
                          ("folder.npz", "is a folder"), ("missing.npz", "do not exist")]:
        assert message in error_of(capsys, "evaluate", "--model", "m", "--reference", str(tmp_path / name))
    assert not (tmp_path / "ran").exists()


def test_bad_image_folders_in_stats(tmp_path, capsys, monkeypatch):
    stats = ["stats", "--output_file", str(tmp_path / "s.npz"), "--resolution", "8", *STANDIN, "--train_data_dir"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    line = error_of(capsys, *stats, str(tmp_path / "empty"))
    assert f"No images found in --train_data_dir {str(tmp_path / 'empty')!r}" in line and " .png " in line

    images = tmp_path / "images"
    images.mkdir()
    Image.new("L", (8, 8)).save(images / "small.png")
    Image.new("L", (20, 20)).save(images / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 400 pixels: a decompression bomb by PIL's rule
    line = error_of(capsys, *stats, str(images), "--cache_dir", str(tmp_path / "cache"))
    assert f"Cannot read the image {str(images / 'bomb.png')!r}" in line and "decompression bomb" in line

    (images / "bomb.png").unlink()
    Image.fromarray(np.full((8, 8), -0.5, dtype=np.float32)).save(images / "float.tif")
    line = error_of(capsys, *stats, str(images), "--cache_dir", str(tmp_path / "cache2"))
    assert f"{str(images / 'float.tif')!r}" in line and "(PIL mode 'F') has values from -0.5 to -0.5" in line
    assert not (tmp_path / "s.npz").exists()


# ---------------------------------------------------------------------------------------------------------------------
# `transgan convert`: its inputs survive, bad flags and files are one line
# ---------------------------------------------------------------------------------------------------------------------


def test_convert_never_deletes_its_input(official, tmp_path, capsys):
    checkpoint, args = official
    run = tmp_path / "run"
    run.mkdir()
    inside = {"checkpoint": run / "checkpoint.pth", "args": run / "args.json"}
    shutil.copy(checkpoint, inside["checkpoint"])
    shutil.copy(args, inside["args"])
    (tmp_path / "link").symlink_to(run)
    cases = [
        (inside["checkpoint"], args, run, f"--checkpoint {str(inside['checkpoint'])!r} lies inside --output_dir"),
        (checkpoint, inside["args"], run, f"--official_args {str(inside['args'])!r} lies inside --output_dir"),
        (tmp_path / "link" / "checkpoint.pth", args, run, "lies inside --output_dir"),
        (inside["checkpoint"], args, tmp_path / "link", "lies inside --output_dir"),
    ]
    for source, flags, output, message in cases:
        line = error_of(capsys, "convert", "--checkpoint", str(source), "--official_args", str(flags), "--output_dir",
                        str(output), "--overwrite")
        assert message in line and "write the pipeline to another folder" in line
    assert inside["checkpoint"].read_bytes() == checkpoint.read_bytes()
    assert sorted(os.listdir(run)) == ["args.json", "checkpoint.pth"]
    assert sorted(os.listdir(tmp_path)) == ["link", "run"]
    line = error_of(capsys, "convert", "--checkpoint", str(checkpoint), "--official_args", str(args), "--output_dir",
                    str(checkpoint), "--overwrite")
    assert line == f"error: --output_dir {str(checkpoint)!r} is a file; pass a folder."


def test_convert_overwrite_replaces_the_folder_with_umask_permissions(official, tmp_path, capsys, umask_027):
    checkpoint, args = official
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("from an earlier conversion")
    assert "--overwrite" in error_of(capsys, "convert", "--checkpoint", str(checkpoint), "--official_args", str(args),
                                     "--output_dir", str(out))
    assert main(["convert", "--checkpoint", str(checkpoint), "--official_args", str(args), "--output_dir", str(out),
                 "--overwrite"]) == 0
    assert not (out / "old.txt").exists() and (out / "generator" / "model.safetensors").is_file()
    assert modes(out) == {("dir", 0o750), ("file", 0o640)}
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging or trash folders left


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"latent_dim": "abc"}, "Bad official flags: 'latent_dim' must be an integer, got 'abc'."),
        ({"gf_dim": 64.5}, "'gf_dim' must be an integer, got 64.5"),
        ({"g_depth": [1, "x"]}, "'g_depth' must be comma-separated integers"),
        ({"latent_norm": "yes"}, "'latent_norm' must be true or false, got 'yes'"),
        ({"g_mlp": "nan"}, "'g_mlp' must be a number, got 'nan'"),
        ({"g_windowsize": 8}, "Unknown official flags 'g_windowsize' (did you mean 'g_window_size'?)"),
        ({"gen_model": None}, "'gen_model' must be a string, got None"),
        ({"g_norm": "xyz"}, "describe an invalid model"),
        ({"gf_dim": -64}, "describe an invalid model"),
    ],
)
def test_bad_official_args_values(change, message, official, tmp_path, capsys):
    checkpoint, args = official
    flags = tmp_path / "flags.json"
    flags.write_text(json.dumps({**json.loads(args.read_text()), **change}))
    line = error_of(capsys, "convert", "--checkpoint", str(checkpoint), "--official_args", str(flags), "--output_dir",
                    str(tmp_path / "out"))
    assert message in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"[1, 2]", "must be a JSON object of flag: value pairs, got list"), (b"{\"a\": ", "Cannot read --official_args"),
     (b"\xff\xfe binary", "Cannot read --official_args")],
)
def test_unreadable_official_args_files(content, message, official, tmp_path, capsys):
    (tmp_path / "flags.json").write_bytes(content)
    assert message in error_of(capsys, "convert", "--checkpoint", str(official[0]), "--official_args",
                               str(tmp_path / "flags.json"), "--output_dir", str(tmp_path / "out"))


def test_a_checkpoint_that_does_not_fit_is_summarised_and_listed_in_full_with_verbose(official, tmp_path, capsys):
    argv = ["convert", "--checkpoint", str(official[0]), "--preset", "cifar10", "--output_dir", str(tmp_path / "out")]
    line = error_of(capsys, *argv)  # the fixture is a reduced cifar10 model: hundreds of keys do not fit the preset
    hint = line.index("check --preset / --official_args against the flags the checkpoint was trained with")
    counts = dict(re.findall(r"(missing keys|wrong shapes|unmapped keys) \((\d+)\): ", line))
    assert int(counts["missing keys"]) > 3 and int(counts["wrong shapes"]) > 3, line
    assert hint < line.index("missing keys (") and len(re.findall(r" and \d+ more", line)) == len(counts)
    assert line.endswith("Run again with --verbose to list every key.") and len(line) < 1000

    assert main([*argv, "--verbose"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("error: ") and "--verbose" not in lines[-1]
    headers = [text for text in lines[:-1] if not text.startswith("  ")]
    assert headers == [f"{kind} of the generator ({count}):" for kind, count in counts.items()]
    assert len(lines) - 1 - len(headers) == sum(map(int, counts.values()))  # every key, one per line
    assert not (tmp_path / "out").exists()


class Terminal(io.StringIO):
    """stderr as a terminal, where `transgan convert` draws its stage bar (off a terminal it draws none, tqdm's
    default: the bar starts before the checkpoint is checked, and an error must stay the only line)."""

    def isatty(self) -> bool:
        return True


def test_convert_shows_its_stages_on_a_terminal_unless_no_progress(official, tmp_path, monkeypatch):
    checkpoint, args = official
    argv = ["convert", "--checkpoint", str(checkpoint), "--official_args", str(args)]
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main([*argv, "--output_dir", str(tmp_path / "shown")]) == 0
    for stage in ("convert:", "reading the checkpoint", "mapping the weights", "writing the pipeline"):
        assert stage in terminal.getvalue()
    terminal.seek(0)
    terminal.truncate()
    assert main([*argv, "--output_dir", str(tmp_path / "quiet"), "--no_progress"]) == 0
    assert terminal.getvalue() == ""


def test_foreign_checkpoints_are_read_weights_only(official, tmp_path, capsys):
    checkpoint, args = official

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "ran",))

    torch.save({"gen_state_dict": Payload()}, tmp_path / "code.pth")
    (tmp_path / "text.pth").write_text("hello world")  # the weights-only unpickler fails with a KeyError on this
    damaged = torch.load(checkpoint, weights_only=True)
    damaged["avg_gen_state_dict"]["module.l1.weight"][0, 0] = float("nan")
    torch.save(damaged, tmp_path / "nan.pth")
    torch.save({"avg_gen_state_dict": torch.zeros(1)}, tmp_path / "flat.pth")
    cases = [("code.pth", "a weights-only load refuses it"), ("text.pth", "cannot be read as a PyTorch checkpoint"),
             ("nan.pth", "The generator weights hold NaN or infinite values (1 tensors: l1.weight)"),
             ("flat.pth", "'avg_gen_state_dict' is not a state dict")]
    for name, message in cases:
        assert message in error_of(capsys, "convert", "--checkpoint", str(tmp_path / name), "--official_args",
                                   str(args), "--output_dir", str(tmp_path / "out"))
    assert not (tmp_path / "ran").exists() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Everything written follows the umask
# ---------------------------------------------------------------------------------------------------------------------


def test_generate_stats_and_evaluate_write_with_umask_permissions(model_dir, tmp_path, capsys, umask_027):
    out = tmp_path / "images"
    assert main(["generate", "--model", str(model_dir), "--seeds", "0-1", "--output_dir", str(out), "--grid",
                 "g.png"]) == 0
    assert modes(out) == {("dir", 0o750), ("file", 0o640)}
    (tmp_path / "references").mkdir()
    for index in range(4):
        Image.new("RGB", (16, 16), (index * 60, 0, 0)).save(tmp_path / "references" / f"{index}.png")
    reference = tmp_path / "stats" / "reference.npz"
    assert main(["stats", "--train_data_dir", str(tmp_path / "references"), "--output_file", str(reference),
                 "--resolution", "16", "--save_features", "--cache_dir", str(tmp_path / "cache"), *STANDIN]) == 0
    assert modes(reference) == {("file", 0o640)}
    result = tmp_path / "result.json"
    assert main(["evaluate", "--model", str(model_dir), "--reference", str(reference), "--metrics", "fid,kid,is",
                 "--num_images", "4", "--is_splits", "2", "--output_file", str(result), *STANDIN]) == 0
    assert modes(result) == {("file", 0o640)} and "kid" in json.loads(result.read_text())["metrics"]
    capsys.readouterr()


def test_digit_classifier_cache_follows_the_umask(tmp_path, umask_027):
    from transgan_hf.metrics.digits import DigitClassifier, _save_atomically

    path = tmp_path / "cache" / "digits.safetensors"
    _save_atomically(DigitClassifier(), path, {"version": "1"})
    assert modes(path) == {("file", 0o640)} and os.listdir(path.parent) == ["digits.safetensors"]
