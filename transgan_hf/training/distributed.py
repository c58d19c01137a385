"""Several training processes: joining them on a CPU-only machine, and errors that stop all of them alike."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

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
