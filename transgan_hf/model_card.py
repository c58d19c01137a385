"""Model cards of TransGAN pipelines: `huggingface_hub.ModelCard` filled from the template `model_card.md`.

`TransGANPipeline.save_pretrained` / `push_to_hub` write the card as the folder's `README.md`;
`update_model_card_metrics` puts new evaluation results into an existing card (`transgan evaluate
--update_model_card`). Metrics go both into the `model-index` metadata and into a table between two HTML comments,
so that they can be replaced without touching the rest of the card.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .atomic_files import atomic_write
from .convert_official import OFFICIAL_LICENSE_NOTE

if TYPE_CHECKING:
    from .pipeline_transgan import TransGANPipeline

TEMPLATE_PATH = Path(__file__).with_name("model_card.md")
"""The template; `transgan_hf/model_card.md` links to `model_card.md` at the repository root."""

TASK = "unconditional-image-generation"
TAGS = ["transgan", "gan", TASK, "diffusers", "pytorch"]
PAPER_URL = "https://arxiv.org/abs/2102.07074"
OFFICIAL_LICENSE_NAME = "transgan-non-commercial"
OFFICIAL_LICENSE_LINK = "https://github.com/VITA-Group/TransGAN/blob/master/LICENSE.txt"

METRICS_START = "<!-- transgan-metrics:start -->"
METRICS_END = "<!-- transgan-metrics:end -->"
METRIC_REQUIRED = {"name": str, "type": str, "value": (int, float), "dataset": str}
METRIC_OPTIONAL = {"protocol": str, "num_images": int, "split": str}
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


def make_model_card(
    pipeline: TransGANPipeline,
    license: str = "apache-2.0",
    datasets: Sequence[str] | None = None,
    training: Mapping[str, Any] | None = None,
    metrics: Sequence[Mapping[str, Any]] | None = None,
    repo_id: str | None = None,
    converted_from_official: bool = False,
    samples_image: str | None = None,
    remote_code: bool = False,
) -> ModelCard:
    """The model card of `pipeline`.

    Args:
        license: licence of the weights (Hub licence id). Ignored when `converted_from_official`: converted official
            weights keep the official non-commercial licence (`license: other`).
        datasets: Hub ids of the training datasets.
        training: rows of the "Training" table (preset, steps, kimg, wall-clock, hardware, exact command, ...).
        metrics: evaluation results, each `{"name": "FID", "type": "fid", "value": 9.3, "dataset": "stl10",
            "protocol": "...", "num_images": 50000}` (`split` optional); they fill `model-index` and a table.
        repo_id: Hub id used in the usage snippets and as the model name.
        converted_from_official: the weights come from an official TransGAN checkpoint.
        samples_image: path, relative to the pipeline folder, of a sample grid to show.
        remote_code: the folder holds the pipeline code for diffusers alone (`save_pretrained(remote_code=True)`),
            so the card shows how to load it without this package.
    """
    if not isinstance(license, str) or not license:
        raise ValueError(f"`license` must be a Hub licence id such as 'apache-2.0' or 'mit', got {license!r}.")
    datasets = _string_list("datasets", datasets)
    training = {_table_cell(key): _table_cell(value) for key, value in (training or {}).items()}
    metrics = normalize_metrics(metrics or [])
    if repo_id is not None and (not isinstance(repo_id, str) or not repo_id.strip()):
        raise ValueError(f"`repo_id` must be a Hub repo id such as 'org/name', got {repo_id!r}.")
    if samples_image is not None and (not isinstance(samples_image, str) or Path(samples_image).is_absolute()):
        raise ValueError(f"`samples_image` must be a path relative to the pipeline folder, got {samples_image!r}.")

    generator, discriminator = pipeline.generator, pipeline.discriminator
    config = generator.config
    model_name = repo_id.split("/")[-1] if repo_id else f"transgan-{config.image_size}px"
    card_data = ModelCardData(
        license="other" if converted_from_official else license,
        license_name=OFFICIAL_LICENSE_NAME if converted_from_official else None,
        license_link=OFFICIAL_LICENSE_LINK if converted_from_official else None,
        library_name="transgan_hf",
        pipeline_tag=TASK,
        tags=TAGS + (["converted-official-weights"] if converted_from_official else []),
        datasets=datasets or None,
        model_name=model_name,
        eval_results=[_eval_result(metric) for metric in metrics] or None,
    )
    if converted_from_official:
        license_text = f"{OFFICIAL_LICENSE_NOTE} Licence text: {OFFICIAL_LICENSE_LINK}."
    else:
        license_text = f"The weights are released under the `{license}` licence."
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
        metrics_section=metrics_section(metrics),
        license_text=license_text,
        remote_code=remote_code,
    )


def update_model_card_metrics(folder: str | os.PathLike, metrics: Sequence[Mapping[str, Any]]) -> None:
    """Put `metrics` into the `README.md` of a saved pipeline folder (metadata and table).

    A new metric replaces an old one of the same type on the same dataset; the others are kept.
    """
    path = Path(folder) / "README.md"
    if not path.is_file():
        raise OSError(f"{str(folder)!r} has no README.md model card; save the pipeline with save_pretrained first.")
    new_metrics = normalize_metrics(metrics)
    card = ModelCard.load(path)
    old_metrics = [_metric_from_eval_result(result) for result in card.data.eval_results or []]
    new_keys = {(m["type"], m["dataset"]) for m in new_metrics}
    merged = [m for m in old_metrics if (m["type"], m["dataset"]) not in new_keys] + new_metrics
    card.data.eval_results = [_eval_result(metric) for metric in merged]
    if not card.data.model_name:
        card.data.model_name = Path(folder).resolve().name
    section = metrics_section(merged)
    pattern = re.compile(re.escape(METRICS_START) + r".*?" + re.escape(METRICS_END), flags=re.DOTALL)
    if pattern.search(card.text):
        card.text = pattern.sub(lambda _: section, card.text, count=1)
    else:
        card.text = card.text.rstrip("\n") + "\n\n## Evaluation\n\n" + section + "\n"
    with atomic_write(path) as temporary:  # a crash keeps the old card; the new one gets the umask's permissions
        card.save(temporary)


def model_card_entries(report: Mapping[str, Any], dataset: str, split: str | None = None) -> list[dict[str, Any]]:
    """Model-card metrics (`update_model_card_metrics`, `make_model_card(metrics=...)`) of an evaluation report as
    `transgan evaluate` and training's `--eval_steps` write it: one entry per value, standard deviations left out."""
    entries = []
    for name, value in report["metrics"].items():
        if name.endswith("_std"):
            continue
        entry = {
            "name": METRIC_DISPLAY_NAMES.get(name, name),
            "type": name,
            "value": float(value),
            "dataset": dataset,
            "protocol": f"{report['protocol']}; seed {report['seed']}; {report['weights']['kind']} weights",
            "num_images": int(report["num_images"]),
        }
        if split:
            entry["split"] = split
        entries.append(entry)
    return entries

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
        normalized.append({**metric, "value": float(metric["value"])})
    return normalized


def metrics_section(metrics: Sequence[Mapping[str, Any]]) -> str:
    """The evaluation table between its markers (the part `update_model_card_metrics` replaces)."""
    if not metrics:
        body = "No evaluation results yet (`transgan evaluate --update_model_card` adds them here)."
    else:
        rows = ["| Metric | Value | Dataset | Protocol | Images |", "|---|---|---|---|---|"]
        for m in metrics:
            dataset = m["dataset"] + (f" ({m['split']})" if m.get("split") else "")
            cells = [m["name"], f"{m['value']:.4g}", dataset, m.get("protocol", ""), m.get("num_images", "")]
            rows.append("| " + " | ".join(_table_cell(cell) for cell in cells) + " |")
        body = "\n".join(rows)
    return f"{METRICS_START}\n{body}\n{METRICS_END}"


def _eval_result(metric: Mapping[str, Any]) -> EvalResult:
    args = {key: metric[key] for key in ("protocol", "num_images") if key in metric}
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


def _metric_from_eval_result(result: EvalResult) -> dict[str, Any]:
    metric = {"name": result.metric_name or result.metric_type, "type": result.metric_type,
              "value": float(result.metric_value), "dataset": result.dataset_type}
    if result.dataset_split:
        metric["split"] = result.dataset_split
    for key, value in (result.metric_args or {}).items():
        if key in METRIC_OPTIONAL:
            metric[key] = value
    return metric


def _generator_summary(generator) -> str:
    c = generator.config
    stages = ", ".join(f"{grid}×{grid}: {depth} blocks" + (f" ({window}×{window} windows)" if window else "")
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


def _table_cell(value: Any) -> str:
    """A Markdown table cell: one line, with `|` escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


__all__ = ["make_model_card", "update_model_card_metrics"]
