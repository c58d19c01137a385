"""Time to quality: `fdd_mnist` against training wall-clock for `train.py` recipes and the DCGAN reference (issue 18).

All recipes run at once, as subprocesses with `--threads_each` threads each (OMP_NUM_THREADS / MKL_NUM_THREADS, and
`--threads` for the reference), so they are compared at equal time, not equal steps:

    python benchmarks/time_to_quality.py --minutes 15 --threads_each 1 --dcgan --recipe "main=" \
        --recipe "fast=--n_critic 1 --gp_interval 2" --output_dir docs/quality

A recipe is `name=<training/train.py flags>` (the empty flags are the default main job). Each writes into
`<output_dir>/<name>/`; the curves go to `time_to_quality.json` / `.csv`, the plot to `time_to_quality.png`, and a
Markdown table is printed. train.py recipes evaluate with `--eval_steps` (5,000 images, fid+confidence on the digit
network: `fdd_mnist`); their training minutes are `progress/train_seconds` of the log rows if present, otherwise summed
from the logged `speed/sec_per_kimg` (which leaves evaluation, checkpoints and sample grids out, as the reference does).
If train.py has no `--max_train_minutes`, the harness stops it once its log shows `--minutes` of training and the
next logged step (so an evaluation at the step that crossed the limit is kept; no evaluation at the limit itself).
`--replot curves.json` redraws the plot and table of an earlier run without training.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SECONDS_KEYS = ("progress/train_seconds",)
FIELDS = ("minutes", "steps", "kimg", "fdd_mnist", "digit_confidence")
REAL_DATA_FLOOR = 6.7  # fdd_mnist of real digits (issue 18)

Curve = list[dict[str, float]]


def parse_recipe(text: str) -> tuple[str, list[str]]:
    """`"name=--flag value ..."` -> (name, flags)."""
    name, separator, flags = text.partition("=")
    name = name.strip()
    if not separator or not name or not name.replace("-", "").replace("_", "").isalnum() or name == "dcgan":
        raise argparse.ArgumentTypeError(f"recipe {text!r}: expected NAME=FLAGS with a name of letters, digits, - and "
                                         "_ (not 'dcgan')")
    return name, shlex.split(flags)


def train_log_curve(rows: Iterable[dict]) -> Curve:
    """The evaluation points of a `training_log.jsonl` (rows in file order) with their training minutes."""
    points, seconds, last_kimg, rate = [], 0.0, 0.0, 0.0
    for row in rows:
        kimg = float(row.get("progress/kimg", last_kimg))
        if "speed/sec_per_kimg" in row:
            rate = float(row["speed/sec_per_kimg"])
            seconds, last_kimg = seconds + rate * (kimg - last_kimg), kimg
        if "eval/fdd_mnist" in row:
            explicit = next((row[key] for key in TRAIN_SECONDS_KEYS if key in row), None)
            elapsed = float(explicit) if explicit is not None else seconds + rate * (kimg - last_kimg)
            points.append({"minutes": elapsed / 60, "steps": int(row["step"]), "kimg": kimg,
                           "fdd_mnist": float(row["eval/fdd_mnist"]),
                           "digit_confidence": float(row.get("eval/digit_confidence_mnist", float("nan")))})
    return points


def train_minutes(rows: Iterable[dict]) -> float:
    """Training minutes reached according to a (partial) `training_log.jsonl`."""
    seconds, last_kimg = 0.0, 0.0
    for row in rows:
        explicit = next((row[key] for key in TRAIN_SECONDS_KEYS if key in row), None)
        if explicit is not None:
            seconds = float(explicit)
        elif "speed/sec_per_kimg" in row:
            kimg = float(row["progress/kimg"])
            seconds, last_kimg = seconds + float(row["speed/sec_per_kimg"]) * (kimg - last_kimg), kimg
    return seconds / 60


def dcgan_curve(lines: Iterable[str]) -> Curve:
    """The JSON evaluation lines that `dcgan_reference.py` prints (other output is skipped)."""
    points = []
    for line in lines:
        if line.startswith("{"):
            row = json.loads(line)
            if "fdd_mnist" in row:
                points.append({field: row[field] for field in FIELDS})
    return points


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass  # a row being written
    return rows


def value_at(curve: Curve, minute: float) -> dict[str, float] | None:
    """The last point evaluated by `minute` (1 % + 3 s of slack for the step that crosses it), or None."""
    before = [point for point in curve if point["minutes"] <= minute * 1.01 + 0.05]
    return before[-1] if before else None


def write_curves(curves: dict[str, Curve], output_dir: Path) -> tuple[Path, Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = output_dir / "time_to_quality.json", output_dir / "time_to_quality.csv"
    json_path.write_text(json.dumps(curves, indent=1) + "\n")
    with csv_path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(("recipe", *FIELDS))
        for name, curve in curves.items():
            writer.writerows((name, *(point[field] for field in FIELDS)) for point in curve)
    return json_path, csv_path


def plot_curves(curves: dict[str, Curve], path: Path, title: str = "", floor: float | None = REAL_DATA_FLOOR) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (fdd_axis, confidence_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, curve in curves.items():
        minutes = [point["minutes"] for point in curve]
        fdd_axis.plot(minutes, [point["fdd_mnist"] for point in curve], marker="o", markersize=3, label=name)
        confidence_axis.plot(minutes, [point["digit_confidence"] for point in curve], marker="o", markersize=3)
    if floor is not None:
        fdd_axis.axhline(floor, color="grey", linestyle="--", linewidth=1, label=f"real data ({floor:g})")
    fdd_axis.set(yscale="log", xlabel="training wall-clock (minutes)", ylabel="fdd_mnist (lower is better)")
    confidence_axis.set(xlabel="training wall-clock (minutes)", ylabel="digit confidence (higher is better)")
    for axis in (fdd_axis, confidence_axis):
        axis.grid(alpha=0.3, which="both")
    fdd_axis.legend(fontsize=8)
    figure.suptitle(title or "fdd_mnist against training wall-clock (MNIST-5k, 5,000 samples)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def format_table(curves: dict[str, Curve], minutes: Sequence[float]) -> str:
    """Markdown: `fdd_mnist` by each of `minutes` (last evaluation by then), and the final point of each recipe."""
    header = ["recipe", *(f"fdd @ {m:g} min" for m in minutes), "final min", "steps", "kimg", "fdd_mnist", "conf."]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, curve in curves.items():
        cells = [name]
        for minute in minutes:
            point = value_at(curve, minute)
            cells.append(f"{point['fdd_mnist']:.1f}" if point else "–")
        last = curve[-1] if curve else None
        cells += ([f"{last['minutes']:.1f}", str(last["steps"]), f"{last['kimg']:.0f}", f"{last['fdd_mnist']:.1f}",
                   f"{last['digit_confidence']:.2f}"] if last else ["–"] * 5)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wait(jobs: dict[str, tuple[subprocess.Popen, Path]], args: argparse.Namespace, by_minutes: bool) -> None:
    """Wait for the jobs; stop a train.py job that has trained `--minutes` (without `--max_train_minutes`)."""
    deadline, last_step = time.monotonic() + args.timeout_minutes * 60, {}
    while any(process.poll() is None for process, _ in jobs.values()):
        time.sleep(2)
        for name, (process, log) in jobs.items():
            over_time = False
            if name != "dcgan" and not by_minutes and process.poll() is None:
                rows = read_jsonl(log)
                if rows and name not in last_step and train_minutes(rows) >= args.minutes:
                    last_step[name] = rows[-1]["step"]  # let an evaluation at this step finish first
                over_time = bool(rows) and name in last_step and rows[-1]["step"] > last_step[name]
            if process.poll() is None and (over_time or time.monotonic() > deadline):
                print(f"stopping {name} ({'training time reached' if over_time else 'timeout'})", flush=True)
                process.terminate()


def launch(args: argparse.Namespace) -> dict[str, Curve]:
    """Run every recipe at once; return their curves."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads_each), "MKL_NUM_THREADS": str(args.threads_each)}
    env.setdefault("HF_HUB_OFFLINE", "1")
    by_minutes = bool(args.recipe)  # training/train.py ends itself with --max_train_minutes
    jobs: dict[str, tuple[subprocess.Popen, Path]] = {}
    for name, flags in [*args.recipe, *([("dcgan", [])] if args.dcgan else [])]:
        folder = args.output_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        if name == "dcgan":
            command = [sys.executable, str(ROOT / "benchmarks/dcgan_reference.py"), "--minutes", str(args.minutes),
                       "--threads", str(args.threads_each), "--eval_minutes", args.eval_minutes,
                       "--seed", str(args.seed), "--output_dir", str(folder)]
            log = folder / "output.log"
        else:
            extra = {"--eval_steps": str(args.eval_steps), "--eval_num_images": "5000",
                     "--eval_metrics": "fid,confidence", "--report_to": "none", "--seed": str(args.seed)}
            if by_minutes:
                extra["--max_train_minutes"] = str(args.minutes)
            if not {"--max_train_steps", "--max_train_kimg"} & set(flags):
                extra["--max_train_steps"] = "10000000"  # the time limit ends the run
            command = [sys.executable, str(ROOT / "training/train.py"), *flags, "--output_dir", str(folder / "run"),
                       "--overwrite_output_dir", *(item for key, value in extra.items() if key not in flags
                                                   for item in (key, value))]
            log = folder / "run" / "training_log.jsonl"
            log.unlink(missing_ok=True)  # a previous run's log would read as this run's progress
        (folder / "command.txt").write_text(shlex.join(command) + "\n")
        with (folder / "output.log").open("w") as output:
            jobs[name] = (subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=ROOT), log)
        print(f"started {name}: {shlex.join(command)}", flush=True)
    try:
        wait(jobs, args, by_minutes)
    finally:  # also on Ctrl-C: no training left running
        for process, _ in jobs.values():
            if process.poll() is None:
                process.terminate()
                process.wait()
    curves = {}
    for name, (process, log) in jobs.items():
        if name == "dcgan":
            curves[name] = dcgan_curve(log.read_text().splitlines())
        else:
            curves[name] = train_log_curve(read_jsonl(log))
        print(f"{name}: exit {process.returncode}, {len(curves[name])} evaluations", flush=True)
    return curves


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", action="append", type=parse_recipe, default=[], metavar="NAME=FLAGS",
                        help="a training/train.py recipe (repeat); 'main=' is the default main job")
    parser.add_argument("--dcgan", action="store_true", help="also run benchmarks/dcgan_reference.py")
    parser.add_argument("--minutes", type=float, default=15.0, help="training wall-clock of each recipe")
    parser.add_argument("--threads_each", type=int, default=1)
    parser.add_argument("--eval_minutes", default="1,2,5,10,15", help="the reference's evaluation minutes; also the "
                                                                      "table's columns")
    parser.add_argument("--eval_steps", type=int, default=200, help="train.py recipes evaluate every N steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout_minutes", type=float, help="stop everything after this (default: 4x --minutes + 10)")
    parser.add_argument("--output_dir", type=Path, default=Path("runs/time_to_quality"))
    parser.add_argument("--plot", type=Path, help="plot path (default: <output_dir>/time_to_quality.png)")
    parser.add_argument("--replot", type=Path, metavar="CURVES.json", help="plot and tabulate saved curves only")
    args = parser.parse_args(argv)
    if not args.replot and not (args.recipe or args.dcgan):
        parser.error("give at least one --recipe or --dcgan (or --replot)")
    names = [name for name, _ in args.recipe]
    if len(set(names)) != len(names):
        parser.error(f"recipe names must differ: {names}")
    args.timeout_minutes = args.timeout_minutes or 4 * args.minutes + 10
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Curve]:
    args = parse_args(argv)
    curves = json.loads(args.replot.read_text()) if args.replot else launch(args)
    if not args.replot:
        write_curves(curves, args.output_dir)
    plot = plot_curves(curves, args.plot or args.output_dir / "time_to_quality.png",
                       f"fdd_mnist against training wall-clock ({args.threads_each} thread(s) each, side by side)")
    print(format_table(curves, [float(m) for m in args.eval_minutes.split(",") if m.strip()]))
    print(f"plot: {plot}")
    return curves


if __name__ == "__main__":
    main()
