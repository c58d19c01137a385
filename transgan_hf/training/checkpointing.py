"""Checkpoints that survive a crash and resume exactly, and what a run leaves in its output folder.

A checkpoint is written to `checkpoint-N.tmp` and renamed when complete, so a crash at any moment leaves the previous
checkpoint intact; `--resume_from_checkpoint latest` ignores unfinished `.tmp` folders. It holds the generator, EMA
generator and discriminator as `save_pretrained` folders, both optimisers, the step and data position, and every
random state (per process); resuming gives the same weights as an uninterrupted run.

Fault injection for tests: with the environment variable `TRANSGAN_KILL_DURING_CHECKPOINT=N`, the process kills
itself with SIGKILL while writing checkpoint N (after the model folders, before the optimiser and random states).
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import re
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger

from ..atomic_files import apply_umask_permissions, remove_stale_staging_folders
from ..cli import CommandError
from ..modeling_transgan import TransGANGenerator
from .ema import ExponentialMovingAverage
from .reporting import TrainingLog

logger = get_logger(__name__, log_level="INFO")

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
RUN_CHECKPOINT_PATTERN = re.compile(r"^checkpoint-\d+(\.tmp|\.old)?$")
"""Checkpoint folders of a run, including those a crash left unfinished."""
STATE_FILE = "training_state_{rank}.pt"
ARGS_FILE = "training_args.json"
KILL_ENV = "TRANSGAN_KILL_DURING_CHECKPOINT"
ADDED_STATE_FIELDS = ("overhead_seconds", "data_position", "settings_history")
"""`TrainingState` fields newer than some checkpoints: those keep the fresh value when resuming them."""
RECORDED_SETTINGS = ("learning_rate", "diffaug_policy", "ema_kimg", "ema_decay")
"""Recipe settings a resumed segment may change: `TrainingState.settings_history` keeps the step where each value
took over, and the model card states them ("0.0008 (0.0002 from step 30000)")."""
RESUME_MUST_MATCH = ("train_batch_size", "gradient_accumulation_steps", "n_critic", "seed", "streaming",
                     "shuffle_buffer_size")
"""Settings that fix the data order and the meaning of a step; a resumed run must keep them (and the number of
processes, checked first: every process resumes its own random streams and data position)."""
ADDED_SETTINGS = {"streaming": False, "shuffle_buffer_size": None}
"""Settings newer than some checkpoints, with the value those were written with."""


@dataclass
class TrainingState:
    """Counters of the run; saved per process next to `accelerator.save_state`'s files."""

    step: int = 0  # generator updates done
    iteration: int = 0  # discriminator loader iterations done (per process; the same on every process)
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already consumed
    train_seconds: float = 0.0  # wall-clock of the training loop, summed over resumed segments
    overhead_seconds: float = 0.0  # the part of it spent in checkpoints, sample grids and evaluations
    data_position: dict = field(default_factory=dict)  # --streaming: where this process is in `epoch` (ImageStream)
    commands: list[str] = field(default_factory=list)
    settings_history: dict = field(default_factory=dict)  # {name: [[step, value], ...]}: see RECORDED_SETTINGS

    def kimg(self, train_batch_size: int) -> float:
        """Thousands of real images the discriminator has seen (all processes)."""
        return self.iteration * train_batch_size / 1000


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Finished checkpoints `(step, path)`, oldest first; unfinished `checkpoint-N.tmp` folders are ignored."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in folder.iterdir()
             if path.is_dir() and (m := CHECKPOINT_PATTERN.match(path.name))]
    return sorted(found)


def resolve_resume_path(output_dir: str, resume_from_checkpoint: str) -> Path | None:
    """The checkpoint `--resume_from_checkpoint` names: 'latest' (None when there is none yet) or a finished
    checkpoint folder, given as a path or by its name in `output_dir`."""
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1][1] if checkpoints else None
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        path = Path(output_dir) / resume_from_checkpoint
    if not path.is_dir() or path.name.endswith(".tmp"):
        finished = [p.name for _, p in list_checkpoints(output_dir)]
        raise CommandError(f"argument --resume_from_checkpoint: {resume_from_checkpoint!r} is not a finished "
                           f"checkpoint folder; use 'latest' or one of {finished} (in --output_dir)")
    return path


class Checkpointer:
    """Writes and restores checkpoints through `accelerator.save_state` / `load_state`, atomically.

    `settings` (the run's flags, `args.run_settings`) are written beside each checkpoint for `check_resume_settings`;
    `total_limit` keeps only the newest checkpoints; `generators` are the trainer's random streams.
    """

    def __init__(self, accelerator: Accelerator, output_dir: str | os.PathLike, ema: ExponentialMovingAverage,
                 generators: dict[str, torch.Generator], discriminator: torch.nn.Module, *,
                 settings: Mapping[str, Any], total_limit: int | None = None) -> None:
        self.accelerator = accelerator
        self.output_dir = Path(output_dir)
        self.settings = settings
        self.total_limit = total_limit
        self.ema = ema
        self.generators = generators
        self.discriminator = accelerator.unwrap_model(discriminator)
        self._saving_step: int | None = None
        accelerator.register_save_state_pre_hook(self._save_models)
        accelerator.register_load_state_pre_hook(self._load_models)

    @staticmethod
    def _folder_name(model: torch.nn.Module) -> str:
        return "generator" if isinstance(model, TransGANGenerator) else "discriminator"

    def _save_models(self, models: list, weights: list, output_dir: str) -> None:
        if self.accelerator.is_main_process:
            for model in models:
                unwrapped = self.accelerator.unwrap_model(model)
                unwrapped.save_pretrained(os.path.join(output_dir, self._folder_name(unwrapped)))
            self.ema.model.save_pretrained(os.path.join(output_dir, "generator_ema"))
        weights.clear()  # saved above as `save_pretrained` folders; accelerate must not save them again
        if os.environ.get(KILL_ENV) == str(self._saving_step):
            os.kill(os.getpid(), signal.SIGKILL)  # documented fault injection (module docstring)

    def _load_models(self, models: list, input_dir: str) -> None:
        while models:
            unwrapped = self.accelerator.unwrap_model(models.pop())
            folder = os.path.join(input_dir, self._folder_name(unwrapped))
            unwrapped.load_state_dict(type(unwrapped).from_pretrained(folder).state_dict())
        averaged = TransGANGenerator.from_pretrained(os.path.join(input_dir, "generator_ema"))
        self.ema.load_state_dict(averaged.state_dict())

    def save(self, state: TrainingState) -> Path:
        accelerator, output_dir = self.accelerator, self.output_dir
        final = output_dir / f"checkpoint-{state.step}"
        staging = output_dir / f"checkpoint-{state.step}.tmp"
        if accelerator.is_main_process and staging.exists():
            shutil.rmtree(staging)
        accelerator.wait_for_everyone()
        self._saving_step = state.step
        accelerator.save_state(str(staging))
        self._saving_step = None
        torch.save(self._process_state(state), staging / STATE_FILE.format(rank=accelerator.process_index))
        if accelerator.is_main_process:
            (staging / ARGS_FILE).write_text(json.dumps(self.settings, indent=2))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            apply_umask_permissions(staging)
            replaced = final.with_name(final.name + ".old")
            if final.exists():  # re-running from an older checkpoint: the new one replaces it
                os.replace(final, replaced)
            os.replace(staging, final)
            shutil.rmtree(replaced, ignore_errors=True)
            self._prune()
        accelerator.wait_for_everyone()
        return final

    def _process_state(self, state: TrainingState) -> dict[str, Any]:
        pending = {name: param.grad.detach().cpu() for name, param in self.discriminator.named_parameters()
                   if param.grad is not None}
        return {
            **{k: v for k, v in vars(state).items()},
            "generator_states": {name: gen.get_state() for name, gen in self.generators.items()},
            "pending_discriminator_grads": pending,  # only with --official_d_grad_leak and n_critic * accumulation 1
        }

    def _prune(self) -> None:
        if self.total_limit is None:
            return
        checkpoints = list_checkpoints(self.output_dir)
        for _, path in checkpoints[: max(0, len(checkpoints) - self.total_limit)]:
            shutil.rmtree(path, ignore_errors=True)

    def load(self, path: Path, state: TrainingState) -> None:
        """Restore a checkpoint that `check_resume_settings` accepted; a damaged one is a `CommandError`."""
        accelerator = self.accelerator
        state_file = path / STATE_FILE.format(rank=accelerator.process_index)
        if not state_file.is_file():
            raise CommandError(f"argument --resume_from_checkpoint: {path} has no {state_file.name}; it was not "
                               "written by this training script (with this number of processes).")
        try:
            accelerator.load_state(str(path))
            saved = torch.load(state_file, map_location="cpu", weights_only=True)
            for name in vars(state):
                if name in saved or name not in ADDED_STATE_FIELDS:
                    setattr(state, name, saved[name])
            if "learning_rates" in saved:  # the record of checkpoints written before `settings_history`
                state.settings_history = {"learning_rate": saved["learning_rates"]}
            for name, gen in self.generators.items():
                gen.set_state(saved["generator_states"][name])
            pending = saved["pending_discriminator_grads"]
        except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as error:
            raise CommandError(f"argument --resume_from_checkpoint: cannot read the checkpoint {path} ("
                               f"{type(error).__name__}: {error}); resume from another one or start a new "
                               "--output_dir.") from None
        for name, param in self.discriminator.named_parameters():
            grad = pending.get(name)
            param.grad = None if grad is None else grad.to(param.device)


def check_resume_settings(path: Path, current: Mapping[str, Any], configs: Sequence[Any] = ()) -> dict[str, Any]:
    """Refuse to resume with settings that change the data order or the meaning of a step, or with another
    architecture (`configs`: this run's generator and discriminator configs); log other changes. Returns the
    checkpoint's settings."""
    args_file = path / ARGS_FILE
    try:
        saved = json.loads(args_file.read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
        saved_configs = [(folder, type(config).from_json_file(path / folder / "config.json"))
                         for config, folder in zip(configs, ("generator", "discriminator"))]
    except (OSError, ValueError) as error:
        raise CommandError(f"argument --resume_from_checkpoint: {path} is not a readable checkpoint of this training "
                           f"script ({error}); resume from another checkpoint or start a new --output_dir.") from None
    if saved.get("num_processes") != current.get("num_processes"):
        raise CommandError(f"argument --resume_from_checkpoint: {path} was written by {saved.get('num_processes')} "
                           f"process(es) and this run has {current.get('num_processes')}; every process resumes its "
                           "own data position and random streams, so resume with `accelerate launch --num_processes "
                           f"{saved.get('num_processes')}` (all machines together), or start a new --output_dir.")
    before, after = ({k: run.get(k, ADDED_SETTINGS.get(k)) for k in RESUME_MUST_MATCH} for run in (saved, current))
    clashes = [f"--{k} {before[k]} -> {after[k]}" for k in RESUME_MUST_MATCH if before[k] != after[k]]
    for config, (folder, saved_config) in zip(configs, saved_configs):  # the architecture: the config's own fields
        ours, theirs = (json.loads(c.to_json_string(use_diff=False)) for c in (config, saved_config))
        clashes += [f"{folder} {name} {theirs.get(name)} -> {ours.get(name)}"
                    for name in inspect.signature(type(config).__init__).parameters
                    if name in ours and ours.get(name) != theirs.get(name)]
    if clashes:
        listed = "; ".join(clashes[:5]) + (f"; and {len(clashes) - 5} more" if len(clashes) > 5 else "")
        raise CommandError(f"argument --resume_from_checkpoint: cannot resume from {path} (checkpoint -> this run: "
                           f"{listed}). "
                           "Resume with the checkpoint's values (--preset, --generator_config/--discriminator_config "
                           "and the settings that fix the data order), or start a new --output_dir.")
    changed = [k for k in sorted(saved) if k in current and saved[k] != current[k]
               and k not in ("resume_from_checkpoint", "overwrite_output_dir")]
    if changed:
        logger.warning(f"Resuming with changed settings: {', '.join(f'{k}={current[k]!r}' for k in changed)}")
    return saved


# ---------------------------------------------------------------------------------------------------------------------
# The output folder: a previous run is never overwritten by mistake; what a crash left behind is cleaned up
# ---------------------------------------------------------------------------------------------------------------------


def previous_run_entries(output_dir: str, logging_dir: str) -> list[Path]:
    """What an earlier run wrote into `output_dir`: checkpoints (finished or not), pipeline, samples, tracker logs
    (`logging_dir`, relative to `output_dir`) and the training log. Other files are the user's and never counted or
    removed."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    logging_folder = (folder / logging_dir).resolve()
    return sorted(entry for entry in folder.iterdir()
                  if entry.name in ("pipeline", "samples", TrainingLog.FILE) or RUN_CHECKPOINT_PATTERN.match(entry.name)
                  or entry.resolve() == logging_folder)


def check_output_dir(output_dir: str, logging_dir: str, *, resume: bool, overwrite: bool) -> list[Path]:
    """Refuse an `output_dir` that holds a previous run, unless the run is resumed or `overwrite` asks to start over
    (`--overwrite_output_dir`); returns what overwriting will delete (only once the inputs have been read)."""
    entries = previous_run_entries(output_dir, logging_dir)
    if entries and not (resume or overwrite):
        names = ", ".join(entry.name for entry in entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise CommandError(f"argument --output_dir: {output_dir!r} holds a previous run ({names}); continue it "
                           "with --resume_from_checkpoint latest, start over with --overwrite_output_dir (deletes "
                           "those), or choose another --output_dir")
    return entries if overwrite else []


def prepare_output_dir(output_dir: Path, overwritten: Sequence[Path]) -> None:
    """Create `output_dir`, delete the previous run that --overwrite_output_dir replaces, and remove what interrupted
    saves left behind (unfinished checkpoints, staging folders of the pipeline export, temporary files)."""
    if overwritten:
        logger.warning(f"--overwrite_output_dir: deleting the previous run in {output_dir}: "
                       f"{', '.join(entry.name for entry in overwritten)}")
    stale = [*output_dir.glob("checkpoint-*.tmp"), *output_dir.glob("checkpoint-*.old")]
    for entry in stale:
        logger.warning(f"Removing {entry}, an unfinished checkpoint of an interrupted run.")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for entry in [*overwritten, *stale]:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)
        remove_stale_staging_folders(output_dir, "pipeline")
        for folder in (output_dir, output_dir / "samples", output_dir / "pipeline"):
            for temporary in folder.glob(".*.tmp"):  # `atomic_write` files of a killed process
                temporary.unlink(missing_ok=True)
    except OSError as error:
        raise CommandError(f"argument --output_dir: cannot prepare {str(output_dir)!r}: {error}") from None
