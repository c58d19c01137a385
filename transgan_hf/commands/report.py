"""`transgan report`: figures and a summary of any training run, from its `training_log.jsonl` and sample grids.

    transgan report --run_dir runs/x --output_dir report/

Every numeric key of the log is plotted against kimg (thousands of real images shown to the discriminator), one
figure per key group (the part before `/`): `losses.png` (`loss/*`: discriminator, generator and the regularisers
`loss/gradient_penalty`, `loss/r1_penalty`, `loss/r2_penalty`), `logits.png`, `ema_beta.png`, `speed.png`,
`grad_norms.png`, `quality.png` (every `--eval_steps` metric `eval/*`, with its `_std` as a band), and one figure for
any other group. `progress.png` is a montage of the fixed-noise grids `samples/step_*.png` over training.
`report.json` holds the last value of every key and the best value of every evaluation metric with its step;
`report.md` shows both and embeds the figures.

Nothing here depends on the dataset or the feature network: keys are read from the log as they come.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..atomic_files import atomic_write, write_text_atomically
from ..cli import CommandError, as_command_error, check_output_path

LOG_FILE = "training_log.jsonl"  # `transgan_hf.training.reporting.TrainingLog.FILE` (not imported: no accelerate)
SAMPLES_FOLDER = "samples"
KIMG_KEY = "progress/kimg"
SKIPPED_GROUPS = ("progress",)
"""Key groups that are not plotted (kimg is the x axis); their last values are still reported."""

FIGURES = {  # group: (file, title); other groups get `<group>.png`
    "loss": ("losses.png", "Losses and regularisers"),
    "logits": ("logits.png", "Discriminator logits (batch means)"),
    "ema": ("ema_beta.png", "EMA of the generator"),
    "speed": ("speed.png", "Training speed"),
    "grad_norm": ("grad_norms.png", "Gradient norms (before clipping)"),
    "eval": ("quality.png", "Evaluation metrics (--eval_steps)"),
    "other": ("other.png", "Other logged values"),
}
SHARED_PANEL_GROUPS = ("logits",)
"""Groups drawn as one panel (real and fake logits share a scale); the others get one panel per key."""
PANEL_ORDER = ("loss/discriminator", "loss/generator", "loss/gradient_penalty", "loss/r1_penalty", "loss/r2_penalty")
LOWER_IS_BETTER = ("fid", "kid", "fdd", "kdd")
"""First word of the evaluation metrics where lower is better (distances); for the others (IS, confidence,
precision, recall, density, coverage) higher is better."""
PROGRESS_TILE = 256
"""Height in pixels of each sample grid in `progress.png`."""

EXAMPLES = """\
examples:
  transgan report --run_dir runs/cifar10 --output_dir runs/cifar10/report
  transgan report --run_dir runs/demo-mnist --output_dir report/ --num_grids 8

The run folder is the --output_dir of `training/train.py`: training_log.jsonl (required) and samples/step_*.png
(optional). Needs matplotlib (pip install 'transgan-hf[report]').
"""


# ---------------------------------------------------------------------------------------------------------------------
# Reading the run
# ---------------------------------------------------------------------------------------------------------------------


def read_training_log(run_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """The rows of `<run_dir>/training_log.jsonl` (objects with an integer `step`) and how many lines were skipped
    (a row torn by a killed run cannot be read). A missing, empty or unreadable log is a `ValueError`."""
    path = run_dir / LOG_FILE
    if not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist; --run_dir must be the output_dir of a training run "
                         "(`training/train.py --output_dir ...`).")
    rows, skipped = [], 0
    for line in filter(str.strip, path.read_text(encoding="utf-8", errors="replace").splitlines()):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool):
            rows.append(row)
        else:
            skipped += 1
    if not rows:
        raise ValueError(f"{str(path)!r} has no readable rows" + (f" ({skipped} unreadable lines)" if skipped else
                         " (it is empty: the run has not logged a step yet)") + ".")
    return sorted(rows, key=lambda row: row["step"]), skipped  # stable: a step's log row stays before its evaluation


def numeric_keys(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Keys with a number in some row (not `step`), in first-seen order."""
    keys: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if key != "step" and is_number(value):
                keys.setdefault(key)
    return list(keys)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite(value: Any) -> bool:
    return is_number(value) and math.isfinite(value)


class KimgAxis:
    """The x value of a step: its logged `progress/kimg`, else step x (kimg per step), since every step shows D the
    same number of images (a resumed run keeps its batch sizes); plain steps for a log without kimg."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.logged: dict[int, float] = {}
        for row in rows:
            if finite(row.get(KIMG_KEY)):
                self.logged.setdefault(row["step"], float(row[KIMG_KEY]))
        ratios = [kimg / step for step, kimg in self.logged.items() if step > 0]
        self.per_step = float(np.median(ratios)) if ratios else None
        self.name = "step" if self.per_step is None else "kimg"
        self.label = "step" if self.per_step is None else "kimg (thousands of real images seen by D)"

    def __call__(self, step: int) -> float:
        if self.per_step is None:
            return float(step)
        return self.logged.get(step, step * self.per_step)


def series(rows: list[dict[str, Any]], key: str, axis: KimgAxis) -> tuple[np.ndarray, np.ndarray]:
    """(x, values) of `key` over the rows that have it; non-finite values become NaN (gaps in the plot)."""
    points = [(axis(row["step"]), float(row[key]) if finite(row[key]) else math.nan)
              for row in rows if is_number(row.get(key))]
    return (np.array([x for x, _ in points]), np.array([y for _, y in points])) if points else (np.zeros(0),) * 2


def sample_grids(run_dir: Path) -> list[tuple[int, Path]]:
    """`(step, path)` of `samples/step_*.png`, in step order."""
    grids = []
    for path in (run_dir / SAMPLES_FOLDER).glob("step_*.png"):
        match = re.fullmatch(r"step_(\d+)\.png", path.name)
        if match and path.is_file():
            grids.append((int(match.group(1)), path))
    return sorted(grids)


# ---------------------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------------------


def key_groups(keys: list[str]) -> dict[str, list[str]]:
    """Plotted keys by group (`loss/generator` -> `loss`; keys without a group, such as `lr`, -> `other`); `_std`
    keys of evaluations are drawn as bands of their metric, not as panels."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        group = key.split("/", 1)[0] if "/" in key else "other"
        if group in SKIPPED_GROUPS or (group == "eval" and key.endswith("_std") and key[:-4] in keys):
            continue
        groups.setdefault(group, []).append(key)
    for members in groups.values():
        members.sort(key=lambda key: (PANEL_ORDER.index(key) if key in PANEL_ORDER else len(PANEL_ORDER)))
    order = list(FIGURES)
    return dict(sorted(groups.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))


def figure_file(group: str) -> tuple[str, str]:
    if group in FIGURES:
        return FIGURES[group]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", group) + ".png", f"{group}/*"


def rolling_median(values: np.ndarray) -> np.ndarray | None:
    """A rolling median over about 1 % of the points (robust to a GAN's one-interval spikes); None when too few."""
    if len(values) < 50:
        return None
    window = max(5, len(values) // 100) | 1
    padded = np.pad(values, (window // 2, window // 2), mode="edge")
    with warnings.catch_warnings():  # windows of NaN only (a diverged run) give NaN, which is what is wanted
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(np.lib.stride_tricks.sliding_window_view(padded, window), axis=1)


def draw_series(axis, x: np.ndarray, values: np.ndarray, label: str | None = None, smoothed: bool = True) -> bool:
    """One key on `axis`: long series raw (faint) + rolling median; short ones and evaluations (`smoothed=False`:
    every value is a measurement) with markers. Returns whether it was smoothed."""
    smooth = rolling_median(values) if smoothed else None
    if smooth is None:
        axis.plot(x, values, marker="o", markersize=3, label=label)
        return False
    (line,) = axis.plot(x, values, alpha=0.25, linewidth=0.8)
    axis.plot(x, smooth, linewidth=1.5, color=line.get_color(), label=label)
    return True


def clip_spikes(axis, values: np.ndarray) -> bool:
    """Limit the y range to the 0.5-99.5 percentiles of `values` (+10 %) when rare spikes reach further out: they
    would otherwise flatten the curve. Returns True when it did."""
    values = values[np.isfinite(values)]
    if not len(values):
        return False
    low, high = np.percentile(values, [0.5, 99.5])
    margin = 0.1 * (high - low)
    if high > low and (values.min() < low - margin or values.max() > high + margin):
        axis.set_ylim(low - margin, high + margin)
        return True
    return False


def plot_group(rows: list[dict[str, Any]], group: str, keys: list[str], axis: KimgAxis, path: Path) -> None:
    from matplotlib.figure import Figure

    _, title = figure_file(group)
    panels = [keys] if group in SHARED_PANEL_GROUPS else [[key] for key in keys]
    logged = keys_of(rows)
    columns = min(3, len(panels))
    figure_rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(4.4 * columns, 3.3 * figure_rows + 0.4))
    figure.suptitle(title)
    for index, panel_keys in enumerate(panels):
        panel = figure.add_subplot(figure_rows, columns, index + 1)
        smoothed = []
        for key in panel_keys:
            x, values = series(rows, key, axis)
            label = key.split("/", 1)[-1] if len(panel_keys) > 1 else None
            if draw_series(panel, x, values, label=label, smoothed=group != "eval"):
                smoothed.append(values)
            std_key = key + "_std"
            if group == "eval" and std_key in logged:
                std_x, std = series(rows, std_key, axis)
                if len(std_x) == len(x) and np.array_equal(std_x, x):
                    panel.fill_between(x, values - std, values + std, alpha=0.2, label="± std")
                    panel.legend(fontsize=8)
        if len(panel_keys) > 1:
            panel.legend(fontsize=8)
        name = panel_keys[0] if len(panel_keys) == 1 else group
        if group == "eval":
            name += f" ({better_direction(panel_keys[0][len('eval/'):])} is better)"
        clipped = bool(smoothed) and clip_spikes(panel, np.concatenate(smoothed))
        panel.set_title(name + (" (spikes clipped)" if clipped else ""), fontsize=10)
        panel.set_xlabel(axis.label)
        panel.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_write(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)


def keys_of(rows: list[dict[str, Any]]) -> set[str]:
    return {key for row in rows for key in row}


def progress_montage(grids: list[tuple[int, Path]], axis: KimgAxis, count: int) -> tuple[Image.Image | None, list[int]]:
    """Up to `count` grids evenly spread over training (first and last included), each scaled to `PROGRESS_TILE`
    pixels high and labelled with its step (and kimg), in rows of up to 4; unreadable grids are left out."""
    shown = min(count, len(grids))
    picks = sorted({round(i * (len(grids) - 1) / max(shown - 1, 1)) for i in range(shown)})
    tiles, steps = [], []
    for step, path in (grids[index] for index in picks):
        try:
            with Image.open(path) as image:
                image.load()
                grid = image.convert("RGB")
        except OSError as error:
            print(f"warning: skipping the unreadable sample grid {path}: {error}", file=sys.stderr)
            continue
        width = max(1, round(grid.width * PROGRESS_TILE / grid.height))
        resample = Image.NEAREST if grid.height <= PROGRESS_TILE else Image.LANCZOS  # small pixels stay sharp
        tiles.append(grid.resize((width, PROGRESS_TILE), resample))
        label = f"step {step}" + (f" ({axis(step):.1f} kimg)" if axis.name == "kimg" else "")
        steps.append((step, label))
    if not tiles:
        return None, []
    label_height, gap, per_row = 18, 8, 4
    layout = [list(range(start, min(start + per_row, len(tiles)))) for start in range(0, len(tiles), per_row)]
    width = max(sum(tiles[i].width for i in line) + gap * (len(line) - 1) for line in layout)
    canvas = Image.new("RGB", (width, len(layout) * (PROGRESS_TILE + label_height + gap) - gap), "white")
    draw = ImageDraw.Draw(canvas)
    for line_index, line in enumerate(layout):
        x, y = 0, line_index * (PROGRESS_TILE + label_height + gap)
        for index in line:
            draw.text((x + 2, y + 3), steps[index][1], fill="black")
            canvas.paste(tiles[index], (x, y + label_height))
            x += tiles[index].width + gap
    return canvas, [step for step, _ in steps]


# ---------------------------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------------------------


def better_direction(metric: str) -> str:
    """'lower' for distances (fid, kid, fdd_mnist, kdd_mnist, ...), else 'higher'."""
    return "lower" if metric.split("_", 1)[0] in LOWER_IS_BETTER else "higher"


def json_number(value: Any) -> float | int | None:
    """Numbers as JSON can hold them: NaN and infinities (a diverging run) become null."""
    return value if finite(value) else None


def summarise(rows: list[dict[str, Any]], axis: KimgAxis) -> dict[str, Any]:
    keys = numeric_keys(rows)
    last = {}
    for key in keys:
        row = next(row for row in reversed(rows) if is_number(row.get(key)))
        last[key] = {"value": json_number(row[key]), "step": row["step"]}
    best = {}
    for key in keys:
        if not key.startswith("eval/") or (key.endswith("_std") and key[:-4] in keys):
            continue
        metric = key[len("eval/"):]
        direction = better_direction(metric)
        candidates = [row for row in rows if finite(row.get(key))]
        if not candidates:
            continue
        sign = 1 if direction == "lower" else -1
        row = min(candidates, key=lambda row: sign * row[key])  # the earliest of equal values
        best[metric] = {"value": row[key], "step": row["step"], "better": direction}
        if axis.name == "kimg":
            best[metric]["kimg"] = axis(row["step"])
        if finite(row.get(key + "_std")):
            best[metric]["std"] = row[key + "_std"]
    steps = [row["step"] for row in rows]
    return {
        "rows": len(rows),
        "steps": {"first": min(steps), "last": max(steps)},
        "kimg": axis(max(steps)) if axis.name == "kimg" else None,
        "x_axis": axis.name,
        "evaluations": len({row["step"] for row in rows if any(key.startswith("eval/") for key in row)}),
        "best": best,
        "last": last,
    }


def markdown(summary: dict[str, Any], figures: list[tuple[str, str]]) -> str:
    def number(value) -> str:
        return "n/a" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)

    steps = summary["steps"]
    lines = [f"# Training report: `{summary['run_dir']}`", "", "| | |", "|---|---|",
             f"| steps | {steps['first']:,} to {steps['last']:,} ({summary['rows']:,} rows of `{LOG_FILE}`"
             + (f"; {summary['skipped_rows']} unreadable rows skipped" if summary["skipped_rows"] else "") + ") |"]
    if summary["kimg"] is not None:
        lines.append(f"| kimg | {summary['kimg']:.1f} |")
    lines += [f"| evaluations | {summary['evaluations']} |",
              f"| sample grids | {summary['sample_grids']['count']}"
              + (f" (shown: steps {', '.join(map(str, summary['sample_grids']['shown']))})"
                 if summary["sample_grids"]["shown"] else "") + " |", ""]
    if summary["best"]:
        lines += ["## Evaluation metrics", "", "| metric | best | at step | last | better |", "|---|---|---|---|---|"]
        for metric, best in summary["best"].items():
            last = summary["last"][f"eval/{metric}"]
            lines.append(f"| `{metric}` | {number(best['value'])} | {best['step']:,}"
                         + (f" ({best['kimg']:.1f} kimg)" if "kimg" in best else "")
                         + f" | {number(last['value'])} (step {last['step']:,}) | {best['better']} |")
        lines.append("")
    else:
        lines += ["No evaluations in the log (train with `--eval_steps N` to get metrics over training).", ""]
    lines += ["## Last values", "", "| key | value | step |", "|---|---|---|"]
    lines += [f"| `{key}` | {number(last['value'])} | {last['step']:,} |" for key, last in summary["last"].items()]
    lines += ["", "## Figures", ""]
    for file, title in figures:
        lines += [f"### {title}", "", f"![{title}]({file})", ""]
    if not summary["sample_grids"]["count"]:
        lines += [f"No sample grids (`{SAMPLES_FOLDER}/step_*.png`) in the run folder.", ""]
    return "\n".join(lines)


def write_report(run_dir: str | Path, output_dir: str | Path, num_grids: int = 6) -> dict[str, Any]:
    """Write the figures, `report.json` and `report.md` of the run in `run_dir` into `output_dir`; returns the
    summary (as in report.json). Raises `ValueError` for a missing or empty log, `ImportError` without matplotlib."""
    import matplotlib  # noqa: F401  (fail before reading anything)

    rows, skipped = read_training_log(Path(run_dir))
    return render_report(Path(run_dir), rows, skipped, Path(output_dir), num_grids)


def render_report(run_dir: Path, rows: list[dict[str, Any]], skipped: int, output_dir: Path,
                  num_grids: int) -> dict[str, Any]:
    """`write_report` for the rows of a log already read (`read_training_log`)."""
    axis = KimgAxis(rows)
    summary = {"run_dir": str(run_dir), **summarise(rows, axis), "skipped_rows": skipped}
    if skipped:
        print(f"warning: skipped {skipped} unreadable row(s) of {run_dir / LOG_FILE}.", file=sys.stderr)
    output_dir.mkdir(parents=True, exist_ok=True)

    figures = []
    for group, keys in key_groups(numeric_keys(rows)).items():
        file, title = figure_file(group)
        plot_group(rows, group, keys, axis, output_dir / file)
        figures.append((file, title))
    grids = sample_grids(run_dir)
    montage, shown = progress_montage(grids, axis, num_grids) if grids else (None, [])
    if montage is not None:
        with atomic_write(output_dir / "progress.png") as temporary:
            montage.save(temporary, format="PNG")
        figures.append(("progress.png", "Samples over training (fixed noise, EMA generator)"))
    summary["sample_grids"] = {"count": len(grids), "shown": shown}
    summary["figures"] = [file for file, _ in figures]
    write_text_atomically(output_dir / "report.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    write_text_atomically(output_dir / "report.md", markdown(summary, figures))
    return summary


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="figures and a summary of a training run",
        description="Plot a training run's losses, regularisers, logits, EMA beta, speed and evaluation metrics "
        "against kimg, and its sample grids over training; write report.json and report.md.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run_dir", required=True, help="the training run's --output_dir (has training_log.jsonl)")
    parser.add_argument("--output_dir", help="folder for the report (default: <run_dir>/report)")
    parser.add_argument("--num_grids", type=int, default=6,
                        help="sample grids shown in progress.png, spread over training (default: 6)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.num_grids < 1:
        raise CommandError(f"--num_grids must be >= 1, got {args.num_grids}.")
    if not Path(args.run_dir).is_dir():
        raise CommandError(f"--run_dir {args.run_dir!r} is not a folder; give the output_dir of a training run.")
    output_dir = check_output_path(args.output_dir or Path(args.run_dir) / "report", "--output_dir", folder=True)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CommandError("transgan report needs matplotlib: pip install 'transgan-hf[report]'.") from None
    run_dir = Path(args.run_dir)
    with as_command_error():
        rows, skipped = read_training_log(run_dir)
    try:
        summary = render_report(run_dir, rows, skipped, output_dir, args.num_grids)
    except OSError as error:
        raise CommandError(f"cannot write the report into --output_dir {str(output_dir)!r}: {error}") from None
    for file in [*summary["figures"], "report.json", "report.md"]:
        print(output_dir / file)
    for metric, best in summary["best"].items():
        print(f"best {metric}: {best['value']:.6g} at step {best['step']}", file=sys.stderr)
    return 0
