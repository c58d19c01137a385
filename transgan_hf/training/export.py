"""The end of a run: the `TransGANPipeline` folder (EMA generator and discriminator), its model card and the upload.

The pipeline and its card are written right after the final checkpoint (`export_pipeline`); the final sample grid and
metrics are added to the card afterwards (`complete_model_card`), so that their failure cannot lose the run.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from huggingface_hub import HfApi

from ..atomic_files import write_bytes_atomically
from ..hub import create_hub_repo, looks_like_local_path, upload_pipeline_folder
from ..model_card import (
    WEIGHTS_ROW,
    make_model_card,
    model_card_entries,
    portable_command,
    portable_path,
    save_model_card,
)
from ..pipeline_transgan import TransGANPipeline
from .checkpointing import TrainingState
from .dataloader import ImageSource
from .losses import uses_gradient_penalty
from .presets import TrainingRecipe

HUB_DATASET_IDS = {"mnist-5k": "ylecun/mnist"}
"""Model-card dataset ids of the built-in datasets (mnist-5k is a 5,000-digit subset of MNIST)."""


@dataclass(frozen=True)
class RunDescription:
    """What the model card says about how the weights were trained, besides the run's progress (`TrainingState`)."""

    preset: str
    recipe: TrainingRecipe
    images: ImageSource
    seed: int
    hardware: str  # `describe_hardware`
    official_d_grad_leak: bool = False
    mixed_precision: str = "no"
    license: str | None = None  # --license; None: not given, and the card says the default licence was not chosen
    eval_reference: str = "train"  # what `--eval_steps` metrics were measured against
    repo_id: str | None = None


def describe_hardware(accelerator: Accelerator) -> str:
    """The card's hardware line: devices or CPU model, processes, threads, torch version."""
    count = accelerator.num_processes
    if accelerator.device.type == "cuda":
        return f"{count} x {torch.cuda.get_device_name(accelerator.device)}"
    cpu = "CPU"
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    threads = torch.get_num_threads()  # `accelerate launch` sets OMP_NUM_THREADS=1 unless it is set
    return (f"{os.cpu_count()}-core {cpu}, {count} process{'es' if count > 1 else ''} x {threads} "
            f"thread{'s' if threads > 1 else ''}, torch {torch.__version__}")


def describe_loss(recipe: TrainingRecipe) -> str:
    """The loss and its penalties, e.g. `nonsaturating, R1 gamma 0.1 (every 4 D updates, x 4)`."""
    if uses_gradient_penalty(recipe.loss):
        penalties = [f"gradient penalty phi {recipe.phi}"]
        if recipe.gp_batch_shrink > 1:
            penalties[-1] += f" on 1/{recipe.gp_batch_shrink} of the batch"
    else:
        penalties = [f"{name} gamma {gamma:g}" for name, gamma in (("R1", recipe.r1_gamma), ("R2", recipe.r2_gamma))
                     if gamma > 0]
    if penalties and recipe.gp_interval > 1:
        penalties[-1] += f" (every {recipe.gp_interval} D updates, x {recipe.gp_interval})"
    return ", ".join([recipe.loss, *penalties])


def describe_training_data(images: ImageSource) -> tuple[str | None, str]:
    """The Hub dataset id of the training images (None for local data) and how the card names them; local paths are
    shown relative to the working directory or as `<local folder>/NAME`, never as this machine's absolute path."""
    name = images.dataset_name
    if name is None:
        return None, f"image folder {portable_path(images.train_data_dir)}"
    if os.path.exists(name) or looks_like_local_path(name):
        return None, f"dataset folder {portable_path(name)}"
    hub_id = HUB_DATASET_IDS.get(name, name)
    return hub_id, name


def describe_setting(name: str, recipe: TrainingRecipe, state: TrainingState) -> str:
    """A recipe setting with the steps where a resumed segment changed it: "0.0008 (0.0002 from step 30000)"."""
    history = state.settings_history.get(name)
    if not history:
        return str(getattr(recipe, name))
    (_, first), *changes = history
    return f"{first}" + (f" ({', '.join(f'{value} from step {step}' for step, value in changes)})" if changes else "")


def model_card_arguments(run: RunDescription, state: TrainingState, samples_image: str | None = None,
                         evaluation: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`make_model_card` arguments of the run; `evaluation` is the last `--eval_steps` result (used if it is of the
    final step)."""
    recipe = run.recipe
    hub_dataset, dataset_text = describe_training_data(run.images)
    kimg = state.kimg(recipe.train_batch_size)
    ema_text = (f"fixed decay {describe_setting('ema_decay', recipe, state)} per G update"
                if recipe.ema_decay is not None
                else f"half-life {describe_setting('ema_kimg', recipe, state)} kimg, warm-up {recipe.ema_warmup}")
    training = {
        "preset": run.preset,
        "dataset": dataset_text,
        "steps (generator updates)": str(state.step),
        "discriminator updates": str(state.step * recipe.n_critic),
        "kimg (real images seen)": f"{kimg:.1f}",
        "batch D / G (global)": f"{recipe.train_batch_size}x{recipe.gradient_accumulation_steps} / "
                                f"{recipe.gen_batch_size}x{recipe.gen_gradient_accumulation_steps}",
        "loss": f"{describe_loss(recipe)}, n_critic {recipe.n_critic}, Adam lr "
                f"{describe_setting('learning_rate', recipe, state)} betas "
                f"({recipe.adam_beta1}, {recipe.adam_beta2}), grad clip {recipe.max_grad_norm or 'off'}",
        "EMA": ema_text,
        WEIGHTS_ROW: "EMA (the pipeline holds the EMA generator)",
        "DiffAugment": describe_setting("diffaug_policy", recipe, state),
        "D gradients during G update": "official leak" if run.official_d_grad_leak else "frozen",
        "precision": "fp32" if run.mixed_precision == "no" else f"{run.mixed_precision} autocast",
        "wall-clock": str(datetime.timedelta(seconds=round(state.train_seconds))),
        "hardware": run.hardware,
        "exact command": " ; then ".join(portable_command(command) for command in state.commands),
        "seed": str(run.seed),
    }
    seen = f"{kimg:.1f} thousand images shown over {state.step} generator updates"
    if hub_dataset:
        link = f"[{hub_dataset}](https://huggingface.co/datasets/{hub_dataset})"
        subset = f"`{dataset_text}`, from " if dataset_text != hub_dataset else ""
        data_text = f"Trained on {subset}{link} ({seen})."
    else:
        data_text = f"Trained on local images ({dataset_text}, not published with the model; {seen})."
    card_kwargs = {"license": run.license, "datasets": [hub_dataset] if hub_dataset else [], "training": training,
                   "samples_image": samples_image, "training_data": data_text}
    if evaluation is not None and evaluation["step"] == state.step:
        report = {**evaluation, "weights": {"kind": "ema"}}
        card_kwargs["metrics"] = model_card_entries(report, hub_dataset or dataset_text,
                                                    "train" if run.eval_reference == "train" else None)
    if run.repo_id:
        card_kwargs["repo_id"] = run.repo_id
    return card_kwargs


def export_pipeline(pipeline: TransGANPipeline, pipeline_dir: Path, run: RunDescription, state: TrainingState, *,
                    remote_code: bool = False) -> None:
    """Save the EMA pipeline and its model card (with the pipeline code when `remote_code`: a folder to publish);
    the end-of-run extras are added by `complete_model_card`."""
    (pipeline_dir / "samples.png").unlink(missing_ok=True)  # a previous segment's grid, not of these weights
    pipeline.save_pretrained(pipeline_dir, model_card_kwargs=model_card_arguments(run, state), remote_code=remote_code)


def complete_model_card(pipeline: TransGANPipeline, pipeline_dir: Path, run: RunDescription, state: TrainingState,
                        samples_image: Path | None, evaluation: Mapping[str, Any] | None, *,
                        remote_code: bool = False) -> None:
    """Copy the final sample grid into the saved pipeline and rewrite its card with it and the final metrics
    (`remote_code` as the folder was exported)."""
    if samples_image is not None:
        write_bytes_atomically(pipeline_dir / "samples.png", samples_image.read_bytes())
    card_kwargs = model_card_arguments(run, state, "samples.png" if samples_image else None, evaluation)
    save_model_card(make_model_card(pipeline, remote_code=remote_code, **card_kwargs), pipeline_dir)


def upload_pipeline(pipeline_dir: Path, state: TrainingState, *, repo_id: str, token: str | None = None,
                    private: bool = False) -> None:
    """Upload the saved pipeline folder (--push_to_hub); a failure is a warning, the local folder stays."""
    api = HfApi(token=token)
    try:
        full_id = create_hub_repo(api, repo_id, private=private)
        url = upload_pipeline_folder(api, pipeline_dir, full_id, commit_message=f"TransGAN, step {state.step}")
    except OSError as error:
        print(f"warning: the pipeline is saved in {pipeline_dir}, but uploading it to {repo_id} failed: "
              f"{error}", file=sys.stderr)
    else:
        print(f"Pushed to https://huggingface.co/{full_id} ({url})")
