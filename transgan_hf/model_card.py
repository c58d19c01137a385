"""Model cards of TransGAN pipelines: `huggingface_hub.ModelCard` filled from the template `model_card.md`.

`TransGANPipeline.save_pretrained` / `push_to_hub` write the card as the folder's `README.md` (`save_model_card`);
`update_model_card_metrics` puts new evaluation results into an existing card (`transgan evaluate
--update_model_card`).

Metadata for the Hub: `license`, `library_name: diffusers`, `pipeline_tag: unconditional-image-generation`, `tags`,
`datasets`, `base_model` and `model-index`. The library is diffusers rather than transformers because a pipeline
folder is diffusers' layout (`model_index.json` at the root, one subfolder per component). There is no root
`config.json`, so transformers' Auto classes cannot load the repo. `DiffusionPipeline.from_pretrained(repo,
trust_remote_code=True)` can, because every push carries the pipeline code.

Evaluation results are written in three places, all from one list of metrics:
- `model-index` in the YAML front matter (`huggingface_hub.EvalResult`): metric type, name and value, dataset and
  split, and `args` with the protocol, the generator weights (`ema`/`raw`), the number of images and the seed;
- a Markdown table between two HTML comments, which is replaced without touching the rest of the card;
- `.eval_results/transgan-<metric>-<dataset>-<hash>.yaml`, the Hub's newer eval-results format
  (`huggingface_hub.EvalResultEntry`), one file per result::

      - dataset:
          id: uoft-cs/cifar10   # Hub dataset id
          task_id: fid          # the metric type
        value: 9.3
        notes: 'FID; split train; ema weights; 50000 images; seed 0; protocol: ...'

  The Hub adds these files to the benchmark dataset's leaderboard. They are written only for datasets with a Hub id
  (`org/name`), and never for an unverified Inception network.

A result is identified by its metric type, dataset, split, protocol and generator weights. A new result replaces the
old one with the same identity; a re-run with more images or another seed replaces it, and EMA and raw weights get
separate rows.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Any

import yaml
from huggingface_hub import EvalResult, EvalResultEntry, ModelCard, ModelCardData, eval_result_entries_to_yaml
from huggingface_hub.constants import EVAL_RESULTS_FOLDER
from huggingface_hub.utils import validate_repo_id

from .atomic_files import atomic_write, write_text_atomically
from .convert_official import OFFICIAL_LICENSE_NOTE
from .metrics.inception import UNVERIFIED_INCEPTION_PROTOCOL

if TYPE_CHECKING:
    from .pipeline_transgan import TransGANPipeline

TEMPLATE_PATH = Path(__file__).with_name("model_card.md")
"""The template; `transgan_hf/model_card.md` links to `model_card.md` at the repository root."""

TASK = "unconditional-image-generation"
LIBRARY_NAME = "diffusers"
TAGS = ["transgan", "gan", TASK, "transgan_hf", "pytorch", "arxiv:2102.07074"]
PAPER_URL = "https://arxiv.org/abs/2102.07074"
DEFAULT_LICENSE = "apache-2.0"
OFFICIAL_LICENSE_NAME = "transgan-non-commercial"
OFFICIAL_LICENSE_LINK = "https://github.com/VITA-Group/TransGAN/blob/master/LICENSE.txt"
OFFICIAL_TRAINING_DATA = (
    "The official TransGAN checkpoint's training set (CIFAR-10, STL-10, CelebA-HQ or LSUN Church, depending on the "
    "checkpoint; see the paper and https://github.com/VITA-Group/TransGAN)."
)
LOCAL_FOLDER = "<local folder>"
"""What a card shows instead of a path outside the working directory (a path on one machine, useless to others)."""
WEIGHTS_ROW = "Generator weights"
"""The Training-table row that says whether the generator holds EMA or raw weights (`weights_kind_from_card`)."""

METRICS_START = "<!-- transgan-metrics:start -->"
METRICS_END = "<!-- transgan-metrics:end -->"
METRIC_REQUIRED = {"name": str, "type": str, "value": (int, float), "dataset": str}
METRIC_OPTIONAL = {"protocol": str, "weights": str, "num_images": int, "seed": int, "split": str}
METRIC_ARGS = ("protocol", "weights", "num_images", "seed")
"""Optional metric keys stored as the `model-index` metric's `args`."""
METRIC_DISPLAY_NAMES = {
    "fid": "FID",
    "kid": "KID",
    "inception_score": "Inception Score",
    "fdd_mnist": "Fréchet Digit Distance (MNIST classifier, not FID)",
    "kdd_mnist": "Kernel Digit Distance (MNIST classifier, not KID)",
    "digit_is_mnist": "Digit Inception Score (MNIST classifier)",
    "digit_confidence_mnist": "Digit classifier confidence",
}
"""Names shown in the card for the metric keys of `transgan_hf.metrics.evaluate_generator`."""
UNVERIFIED_SUFFIX = " (unverified Inception weights)"
EVAL_RESULTS_PREFIX = "transgan-"
"""Files of `.eval_results/` this package writes (and replaces); other files there are left alone."""
HUB_DATASET_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def make_model_card(
    pipeline: TransGANPipeline,
    license: str | None = None,
    datasets: Sequence[str] | None = None,
    training: Mapping[str, Any] | None = None,
    metrics: Sequence[Mapping[str, Any]] | None = None,
    repo_id: str | None = None,
    converted_from_official: bool = False,
    samples_image: str | None = None,
    remote_code: bool = False,
    base_model: str | None = None,
    training_data: str | None = None,
) -> ModelCard:
    """The model card of `pipeline`.

    Args:
        license: licence of the weights (Hub licence id), as whoever trained them chose it. `None`: the card uses
            `DEFAULT_LICENSE` and says that nobody chose it. Ignored when `converted_from_official`: converted
            official weights keep the official non-commercial licence (`license: other`).
        datasets: Hub ids of the training datasets.
        training: rows of the "Training" table (preset, steps, kimg, wall-clock, hardware, exact command, ...).
        metrics: evaluation results, each `{"name": "FID", "type": "fid", "value": 9.3, "dataset": "stl10",
            "protocol": "...", "weights": "ema", "num_images": 50000, "seed": 0, "split": "train"}` (the keys after
            `dataset` are optional); they fill `model-index` and a table.
        repo_id: Hub id used in the usage snippets and as the model name.
        converted_from_official: the weights come from an official TransGAN checkpoint.
        samples_image: path, relative to the pipeline folder, of a sample grid to show.
        remote_code: the folder holds the pipeline code for diffusers alone (`save_pretrained(remote_code=True)`),
            so the card shows how to load it without this package.
        base_model: Hub id of the model these weights were converted or fine-tuned from (metadata `base_model`).
            The official checkpoints are not on the Hub, so conversions record them in the text and tags instead.
        training_data: one or two Markdown sentences on the data the model saw (default: from `datasets`).
    """
    if license is not None and (not isinstance(license, str) or not license):
        raise ValueError(f"`license` must be a Hub licence id such as 'apache-2.0' or 'mit', got {license!r}.")
    datasets = _string_list("datasets", datasets)
    training = {_table_cell(key): _table_cell(value) for key, value in (training or {}).items()}
    metrics = normalize_metrics(metrics or [])
    if repo_id is not None and (not isinstance(repo_id, str) or not repo_id.strip()):
        raise ValueError(f"`repo_id` must be a Hub repo id such as 'org/name', got {repo_id!r}.")
    if samples_image is not None and (not isinstance(samples_image, str) or Path(samples_image).is_absolute()):
        raise ValueError(f"`samples_image` must be a path relative to the pipeline folder, got {samples_image!r}.")
    if base_model is not None:
        _check_repo_id("base_model", base_model)
    if training_data is not None and (not isinstance(training_data, str) or not training_data.strip()):
        raise ValueError(f"`training_data` must be a non-empty sentence, got {training_data!r}.")

    generator, discriminator = pipeline.generator, pipeline.discriminator
    config = generator.config
    model_name = repo_id.split("/")[-1] if repo_id else f"transgan-{config.image_size}px"
    card_data = ModelCardData(
        license="other" if converted_from_official else license or DEFAULT_LICENSE,
        license_name=OFFICIAL_LICENSE_NAME if converted_from_official else None,
        license_link=OFFICIAL_LICENSE_LINK if converted_from_official else None,
        library_name=LIBRARY_NAME,
        pipeline_tag=TASK,
        tags=TAGS + (["converted-official-weights"] if converted_from_official else []),
        datasets=datasets or None,
        base_model=base_model,
        model_name=model_name,
        eval_results=[_eval_result(metric) for metric in metrics] or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        title=f"TransGAN {config.image_size}×{config.image_size}" + (f": {repo_id}" if repo_id else ""),
        model_id=repo_id or "path/to/this/folder",
        image_size=config.image_size,
        out_channels=config.out_channels,
        latent_dim=config.latent_dim,
        has_discriminator=discriminator is not None,
        generator_summary=_generator_summary(generator),
        discriminator_summary=_discriminator_summary(discriminator),
        samples_image=samples_image,
        training=training,
        training_data=training_data or _training_data_text(datasets, converted_from_official),
        metrics_section=metrics_section(metrics),
        license_text=_license_text(license, converted_from_official),
        remote_code=remote_code,
    )


def save_model_card(card: ModelCard, folder: str | os.PathLike) -> None:
    """Write `card` as `folder/README.md` and its results as `.eval_results/` files, replacing the files this package
    wrote there before (each file atomically: a crash leaves the old or the new version)."""
    folder = Path(folder)
    metrics = [_metric_from_eval_result(result) for result in card.data.eval_results or []]
    files = eval_results_files([metric for metric in metrics if metric is not None])
    results_dir = folder / EVAL_RESULTS_FOLDER
    stale = set(results_dir.glob(f"{EVAL_RESULTS_PREFIX}*.yaml")) - {results_dir / name for name in files}
    for name, text in files.items():
        results_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomically(results_dir / name, text)
    for path in stale:
        path.unlink(missing_ok=True)
    if results_dir.is_dir() and not any(results_dir.iterdir()):
        results_dir.rmdir()
    with atomic_write(folder / "README.md") as temporary:  # the new card gets the umask's permissions
        card.save(temporary)


def update_model_card_metrics(folder: str | os.PathLike, metrics: Sequence[Mapping[str, Any]]) -> None:
    """Put `metrics` into the card of a saved pipeline folder (`model-index`, table and `.eval_results/`).

    A new result takes the place of the old one with the same metric type, dataset, split, protocol and weights;
    the other results are kept in their order.
    """
    path = Path(folder) / "README.md"
    if not path.is_file():
        raise OSError(f"{str(folder)!r} has no README.md model card; save the pipeline with save_pretrained first.")
    new_metrics = {_result_key(metric): metric for metric in normalize_metrics(metrics)}  # the last one of a key wins
    card = ModelCard.load(path)
    merged, placed = [], set()
    for result in card.data.eval_results or []:
        old = _metric_from_eval_result(result)
        key = _result_key(old) if old is not None else None
        if key not in new_metrics:
            merged.append(result)
        elif key not in placed:
            merged.append(_eval_result(new_metrics[key]))
            placed.add(key)
    merged += [_eval_result(metric) for key, metric in new_metrics.items() if key not in placed]
    card.data.eval_results = merged
    if not card.data.model_name:
        card.data.model_name = Path(folder).resolve().name
    section = metrics_section([metric for metric in map(_metric_from_eval_result, merged) if metric is not None])
    pattern = re.compile(re.escape(METRICS_START) + r".*?" + re.escape(METRICS_END), flags=re.DOTALL)
    if pattern.search(card.text):
        card.text = pattern.sub(lambda _: section, card.text, count=1)
    else:
        card.text = card.text.rstrip("\n") + "\n\n## Evaluation\n\n" + section + "\n"
    save_model_card(card, folder)


def model_card_entries(report: Mapping[str, Any], dataset: str, split: str | None = None) -> list[dict[str, Any]]:
    """Model-card metrics (`update_model_card_metrics`, `make_model_card(metrics=...)`) of an evaluation report as
    `transgan evaluate` and training's `--eval_steps` write it: one entry per value (standard deviations left out),
    each with the protocol of its own metric. Entries of an unverified Inception network are named so."""
    unverified = report["protocol"] == UNVERIFIED_INCEPTION_PROTOCOL
    options = {**_evaluation_defaults(), **report.get("options", {})}
    reference = report.get("reference")
    if reference is None:  # IS and the classifier confidence need no reference
        reference_text = None
    elif reference == "train":  # training's --eval_reference default
        reference_text = "reference: the training images"
    else:
        reference_text = f"reference statistics {portable_path(reference)}"
    kinds = _metric_kinds()
    entries = []
    for name, value in report["metrics"].items():
        if name.endswith("_std"):
            continue
        entry = {
            "name": METRIC_DISPLAY_NAMES.get(name, name) + (UNVERIFIED_SUFFIX if unverified else ""),
            "type": name,
            "value": float(value),
            "dataset": portable_path(dataset),
            "protocol": _metric_protocol(kinds.get(name, name), report["protocol"], options, reference_text),
            "weights": report["weights"]["kind"],
            "num_images": int(report["num_images"]),
            "seed": int(report["seed"]),
        }
        if split:
            entry["split"] = split
        entries.append(entry)
    return entries


def weights_kind_from_card(folder: Path) -> str:
    """'ema' or 'raw' from the `WEIGHTS_ROW` of the folder's model card (conversions and training write it); else
    'unknown'."""
    card = Path(folder) / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    match = re.search(rf"\|\s*{re.escape(WEIGHTS_ROW)}\s*\|\s*(EMA|raw)\b", text, flags=re.IGNORECASE)
    return match.group(1).lower() if match else "unknown"


def portable_path(path: str | os.PathLike, start: str | os.PathLike | None = None) -> str:
    """`path` as a card may show it: a relative path as given, an absolute one relative to `start` (default: the
    working directory) when it lies inside it, else `<local folder>/<its name>`."""
    text = os.fspath(path)
    if PureWindowsPath(text).is_absolute() and not text.startswith("/"):  # C:\\Users\\..., on any system
        return f"{LOCAL_FOLDER}/{PureWindowsPath(text).name}".rstrip("/")
    if not os.path.isabs(text):
        return text
    absolute = Path(os.path.abspath(text))
    base = Path(os.path.abspath(os.fspath(start) if start is not None else os.getcwd()))
    if absolute == base or base in absolute.parents:
        return absolute.relative_to(base).as_posix()
    return f"{LOCAL_FOLDER}/{absolute.name}".rstrip("/")


def portable_command(command: str, start: str | os.PathLike | None = None) -> str:
    """A recorded shell command with every absolute path (also in `--flag=PATH`) made `portable_path`."""
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: split on blanks rather than keep a path
        words = command.split()
    portable = []
    for word in words:
        flag, equals, value = word.partition("=") if word.startswith("-") else ("", "", word)
        portable.append(flag + equals + portable_path(value, start) if value else word)
    return shlex.join(portable)


def normalize_metrics(metrics: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Check metric entries (required and optional keys, finite value) and return them as plain dicts."""
    if isinstance(metrics, Mapping) or not isinstance(metrics, Sequence):
        raise ValueError(f"`metrics` must be a list of dicts, got {type(metrics).__name__}.")
    normalized = []
    for i, metric in enumerate(metrics):
        where = f"`metrics[{i}]`"
        if not isinstance(metric, Mapping):
            raise ValueError(f"{where} must be a dict, got {type(metric).__name__}.")
        missing = [key for key in METRIC_REQUIRED if key not in metric]
        unknown = [key for key in metric if key not in METRIC_REQUIRED and key not in METRIC_OPTIONAL]
        if missing or unknown:
            raise ValueError(
                f"{where} lacks {missing} / has unknown keys {unknown}; a metric has the keys "
                f"{list(METRIC_REQUIRED)} and optionally {list(METRIC_OPTIONAL)}."
            )
        for key, value in metric.items():
            expected = METRIC_REQUIRED.get(key) or METRIC_OPTIONAL[key]
            if isinstance(value, bool) or not isinstance(value, expected):
                raise ValueError(f"{where}[{key!r}] has the wrong type: {value!r}.")
        if not math.isfinite(metric["value"]):
            raise ValueError(f"{where}['value'] must be a finite number, got {metric['value']!r}.")
        if "num_images" in metric and metric["num_images"] < 1:
            raise ValueError(f"{where}['num_images'] must be >= 1, got {metric['num_images']}.")
        if "seed" in metric and metric["seed"] < 0:
            raise ValueError(f"{where}['seed'] must be >= 0, got {metric['seed']}.")
        normalized.append({**metric, "value": float(metric["value"])})
    return normalized


def metrics_section(metrics: Sequence[Mapping[str, Any]]) -> str:
    """The evaluation table between its markers (the part `update_model_card_metrics` replaces)."""
    if not metrics:
        body = "No evaluation results yet (`transgan evaluate --update_model_card` adds them here)."
    else:
        rows = ["| Metric | Value | Dataset | Weights | Images | Seed | Protocol |", "|---|---|---|---|---|---|---|"]
        for m in metrics:
            dataset = m["dataset"] + (f" ({m['split']})" if m.get("split") else "")
            cells = [m["name"], f"{m['value']:.4g}", dataset, m.get("weights", ""), m.get("num_images", ""),
                     m.get("seed", ""), m.get("protocol", "")]
            rows.append("| " + " | ".join(_table_cell(cell) for cell in cells) + " |")
        body = "\n".join(rows)
    return f"{METRICS_START}\n{body}\n{METRICS_END}"


def eval_results_files(metrics: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """`.eval_results/` file name -> YAML text of each result the Hub can list (see the module docstring)."""
    files = {}
    for metric in metrics:
        if not HUB_DATASET_ID.fullmatch(metric["dataset"]) or _unverified(metric):
            continue
        notes = [metric["name"], f"split {metric['split']}" if metric.get("split") else None,
                 f"{metric['weights']} weights" if metric.get("weights") else None,
                 f"{metric['num_images']} images" if metric.get("num_images") else None,
                 f"seed {metric['seed']}" if "seed" in metric else None,
                 f"protocol: {metric['protocol']}" if metric.get("protocol") else None]
        entry = EvalResultEntry(dataset_id=metric["dataset"], task_id=metric["type"], value=metric["value"],
                                notes="; ".join(note for note in notes if note))
        key = hashlib.sha256(json.dumps(_result_key(metric)).encode()).hexdigest()[:8]
        name = f"{EVAL_RESULTS_PREFIX}{_slug(metric['type'])}-{_slug(metric['dataset'])}-{key}.yaml"
        files[name] = (
            "# Written by transgan_hf from the model-index of README.md; `transgan evaluate --update_model_card` "
            "rewrites it.\n" + yaml.safe_dump(eval_result_entries_to_yaml([entry]), sort_keys=False, allow_unicode=True)
        )
    return files


def _result_key(metric: Mapping[str, Any]) -> tuple:
    return tuple(metric.get(key) for key in ("type", "dataset", "split", "protocol", "weights"))


def _unverified(metric: Mapping[str, Any]) -> bool:
    return UNVERIFIED_INCEPTION_PROTOCOL in metric.get("protocol", "") or metric["name"].endswith(UNVERIFIED_SUFFIX)


def _metric_kinds() -> dict[str, str]:
    """Metric key -> what it computes (fid, kid, is, confidence), from the feature networks' `metric_names`."""
    from .metrics.digits import DigitFeatureExtractor
    from .metrics.features import FeatureExtractor
    from .metrics.inception import FIDInceptionFeatureExtractor

    networks = (FeatureExtractor, FIDInceptionFeatureExtractor, DigitFeatureExtractor)
    return {name: kind for network in networks for kind, name in network.metric_names.items()}


def _evaluation_defaults() -> dict[str, Any]:
    """The metric options (`kid_subsets`, `is_splits`, ...) `evaluate_generator` uses when a report does not say."""
    from .metrics import evaluate_generator

    parameters = inspect.signature(evaluate_generator).parameters
    names = ("kid_subsets", "kid_subset_size", "is_splits", "nearest_k")
    return {name: parameters[name].default for name in names if name in parameters}


def _metric_protocol(kind: str, network: str, options: Mapping[str, Any], reference: str | None) -> str:
    """The protocol text of one metric: what is computed, with which options, on which network and reference."""
    against = f"; {reference}" if reference else ""
    if kind == "fid":
        return f"{network}{against}"
    if kind == "kid":
        return (f"unbiased MMD² with the cubic polynomial kernel (as KID), mean over {options['kid_subsets']} subsets "
                f"of up to {options['kid_subset_size']} images; network: {network}{against}")
    if kind == "is":
        return (f"exp E[KL(p(y|x) ‖ p(y))] (as the Inception Score), mean over {options['is_splits']} splits; "
                f"network: {network}")
    if kind == "confidence":
        return f"mean top-class probability of the classifier; network: {network}"
    if kind in ("precision", "recall", "density", "coverage") and "nearest_k" in options:
        return (f"{kind} of the k-nearest-neighbour feature manifolds, k = {options['nearest_k']}; "
                f"network: {network}{against}")
    return f"{network}{against}"


def _eval_result(metric: Mapping[str, Any]) -> EvalResult:
    args = {key: metric[key] for key in METRIC_ARGS if key in metric}
    return EvalResult(
        task_type=TASK,
        dataset_type=metric["dataset"],
        dataset_name=metric["dataset"],
        dataset_split=metric.get("split"),
        metric_type=metric["type"],
        metric_value=metric["value"],
        metric_name=metric["name"],
        metric_args=args or None,
    )


def _metric_from_eval_result(result: EvalResult) -> dict[str, Any] | None:
    """The metric entry of a `model-index` result; None for one whose value is not a number (hand-written)."""
    try:
        value = float(result.metric_value)
    except (TypeError, ValueError):
        return None
    metric = {"name": result.metric_name or result.metric_type, "type": result.metric_type, "value": value,
              "dataset": result.dataset_type}
    if result.dataset_split:
        metric["split"] = result.dataset_split
    for key, value in (result.metric_args or {}).items():
        if key in METRIC_OPTIONAL:
            metric[key] = value
    return metric


def _license_text(license: str | None, converted_from_official: bool) -> str:
    if converted_from_official:
        return f"{OFFICIAL_LICENSE_NOTE} Licence text: {OFFICIAL_LICENSE_LINK}."
    if license is None:
        return (f"The licence is the default, `{DEFAULT_LICENSE}`: nobody chose one for these weights (`--license` of "
                "`training/train.py`, `license=` of `make_model_card`). Weights follow from their training data, so "
                "check the data's terms before reusing them.")
    return f"The weights are released under the `{license}` licence, chosen by whoever trained them."


def _training_data_text(datasets: Sequence[str], converted_from_official: bool) -> str:
    if datasets:
        return "Trained on " + ", ".join(f"[{name}](https://huggingface.co/datasets/{name})" for name in datasets) + "."
    if converted_from_official:
        return OFFICIAL_TRAINING_DATA
    return "Not recorded in this card; ask whoever published the model what it was trained on."


def _generator_summary(generator) -> str:
    c = generator.config
    stages = ", ".join(f"{grid}×{grid}: {depth} block{'' if depth == 1 else 's'}"
                       + (f" ({window}×{window} windows)" if window else "")
                       for grid, depth, window in zip(c.stage_grid_sizes, c.depths, c.window_sizes))
    noise = ", noise injection" if c.noise_injection else ""
    return f"{_millions(generator)} parameters; stages {stages}{noise}"


def _discriminator_summary(discriminator) -> str:
    if discriminator is None:
        return "not included (needed only for `num_candidates`)"
    c = discriminator.config
    return f"{_millions(discriminator)} parameters; {len(c.patch_embed_dims)} scales, patch {c.patch_size}"


def _millions(model) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M"


def _string_list(name: str, values: Sequence[str] | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str) or not all(isinstance(v, str) and v for v in values):
        raise ValueError(f"`{name}` must be a list of non-empty strings (Hub ids), got {values!r}.")
    return list(values)


def _check_repo_id(name: str, value: Any) -> None:
    try:
        validate_repo_id(value)
    except (ValueError, TypeError):  # HFValidationError is a ValueError
        raise ValueError(f"`{name}` must be a Hub repo id such as 'org/name', got {value!r}.") from None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "x"


def _table_cell(value: Any) -> str:
    """A Markdown table cell: one line, with `|` escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


__all__ = [
    "make_model_card",
    "model_card_entries",
    "portable_command",
    "portable_path",
    "save_model_card",
    "update_model_card_metrics",
    "weights_kind_from_card",
]
