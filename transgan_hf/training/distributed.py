"""Several training processes: joining them on a CPU-only machine, errors that stop all of them alike, and the output
folder that the processes of several machines must share."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

from ..cli import CommandError


def needs_cpu_flag() -> bool:
    """`accelerate launch --multi_gpu` on a machine without GPUs starts several processes, but each Accelerator
    would fall back to a single non-distributed process; `cpu=True` makes them join one gloo process group."""
    launched_distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return launched_distributed and not torch.cuda.is_available()


def on_main_process(accelerator: Accelerator, action: Callable[[], Any]) -> Any:
    """`action()` on the main process only (`None` elsewhere). A `CommandError` it raises is raised on every process,
    so that all stop with the same error instead of waiting for the main one at their next collective."""
    result, message = None, None
    if accelerator.is_main_process:
        try:
            result = action()
        except CommandError as error:
            message = str(error)
    if accelerator.num_processes > 1:
        message = broadcast_object_list([message])[0]
    if message is not None:
        raise CommandError(message)
    return result


def check_shared_output_dir(accelerator: Accelerator, output_dir: Path) -> None:
    """Refuse an `output_dir` that some process does not share with the main one (another machine's local disk):
    every process writes its own state into each checkpoint, which the main process then completes and renames.

    The main process writes a marker file there, every process looks for it in its own `output_dir`; run after the
    folder is created."""
    if accelerator.num_processes == 1:
        return
    name = f".shared-check-{secrets.token_hex(8)}" if accelerator.is_main_process else None
    if accelerator.is_main_process:
        (output_dir / name).touch()
    name = broadcast_object_list([name])[0]
    seen = gather_object([(accelerator.process_index, (output_dir / name).is_file())])
    if accelerator.is_main_process:
        (output_dir / name).unlink()
    blind = [rank for rank, found in seen if not found]
    if blind:
        raise CommandError(f"argument --output_dir: {str(output_dir)!r} is not shared by every process (process(es) "
                           f"{', '.join(map(str, blind))} cannot see what the main process writes there); with several "
                           "machines, put it on storage that all of them mount at the same path.")
