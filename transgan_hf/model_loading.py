"""Checked loading and saving of TransGAN models: `CheckedLoadingMixin` gives `from_pretrained` the checks that refuse,
with one-line errors naming the file, what `transformers` would load silently wrong, and `save_pretrained` the umask's
file permissions. Both leave out the progress bars `transformers` draws for every model ("Loading weights",
"Writing model shards"): every command drew one per pipeline component, each time it loaded or saved one.

This file imports only `torch`, `safetensors`, `transformers` and `huggingface_hub` (which `transformers` requires), so
that it can be copied next to a Hub checkpoint as remote code (with `modeling_transgan.py`, which uses it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import huggingface_hub.utils
import torch
from safetensors import SafetensorError
from transformers import PreTrainedModel
from transformers.utils import logging as transformers_logging

WEIGHTS_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
"""Weight files that only `torch.load` reads, which unpickles; they are never loaded."""


def first_names(names: Iterable[str], limit: int = 5) -> str:
    names = sorted(names)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def check_model_folder(name_or_path: str | os.PathLike | None, subfolder: str = "") -> str:
    """The weights file of a model to load, for messages; for a local folder, an `OSError` that says what to do when
    its `config.json` or safetensors weights are missing (or only pickle weights are there)."""
    if name_or_path is None:
        return "the given state_dict"
    folder = Path(name_or_path) / subfolder
    if not folder.is_dir():
        return repr(f"{os.fspath(name_or_path)}/{subfolder + '/' if subfolder else ''}{WEIGHTS_NAME}")
    if not (folder / "config.json").is_file():
        raise OSError(f"{str(folder / 'config.json')!r} is missing, so {str(folder)!r} is not a complete saved model; "
                      "save it again with save_pretrained (or download it again).")
    if (folder / WEIGHTS_NAME).is_file() or (folder / f"{WEIGHTS_NAME}.index.json").is_file():
        return repr(str(folder / WEIGHTS_NAME))
    pickles = [path.name for path in folder.iterdir() if path.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise OSError(
            f"{str(folder)!r} holds only pickle weights ({first_names(pickles)}), which are never loaded: unpickling "
            "a file can run any code. Convert them to model.safetensors where you trust the file (load it there and "
            "save the model with save_pretrained; `transgan convert` for official TransGAN checkpoints)."
        )
    raise OSError(f"{str(folder / WEIGHTS_NAME)!r} is missing, so {str(folder)!r} is not a complete saved model; save "
                  "it again with save_pretrained (or download it again).")


def check_loaded_tensors(model: PreTrainedModel, loading_info: dict, weights: str) -> None:
    """Refuse a load with missing, unexpected, misshapen or non-finite tensors (`OSError` naming the first ones)."""
    problems = [
        f"{len(names)} tensor(s) {what} ({first_names(names)})"
        for what, names in (
            ("missing from the file", loading_info["missing_keys"]),
            ("in the file but not in the model", loading_info["unexpected_keys"]),
            ("of the wrong shape", [key[0] for key in loading_info["mismatched_keys"]]),
        )
        if names
    ]
    if problems:
        raise OSError(
            f"{weights} does not match the {type(model).__name__} its config.json describes: {'; '.join(problems)}. "
            "The file is incomplete or belongs to another model; save or download the model again."
        )
    non_finite = [name for name, tensor in model.state_dict().items() if tensor.is_floating_point()
                  and tensor.device.type != "meta" and not torch.isfinite(tensor).all()]
    if non_finite:
        dtype = "" if model.dtype == torch.float32 else f" once loaded as {model.dtype}"
        raise OSError(
            f"{weights} holds NaN or infinite values{dtype} in {len(non_finite)} tensor(s) "
            f"({first_names(non_finite)}); such a model samples blank images. The training run diverged or the file is "
            "corrupt: use an earlier checkpoint, or save or download the model again."
        )


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


@contextlib.contextmanager
def load_report_dropped() -> Iterator[None]:
    """Drop the multi-line key table that `transformers` logs for a mismatched checkpoint (`check_loaded_tensors`
    turns the same facts into one error line)."""
    logger, report_filter = logging.getLogger("transformers.modeling_utils"), _DropLoadReport()
    logger.addFilter(report_filter)
    try:
        yield
    finally:
        logger.removeFilter(report_filter)


class _ProgressBarSwitch:
    """Turns `transformers`' progress bars off for the duration of a load or save and restores the previous setting
    (`transformers` switches `huggingface_hub`'s with its own: a Hub id given to a model's `from_pretrained` downloads
    without a bar; pipelines download before their components load). The setting is process-wide and loads may run in
    threads at once (the Space), so the first to enter turns the bars off and the last to leave restores them."""

    def __init__(self) -> None:
        self.lock, self.depth = threading.Lock(), 0
        self.hub_bars_were_off: bool | None = None  # None: the bars were off already, nothing to restore

    @contextlib.contextmanager
    def off(self) -> Iterator[None]:
        with self.lock:
            if self.depth == 0 and transformers_logging.is_progress_bar_enabled():
                self.hub_bars_were_off = huggingface_hub.utils.are_progress_bars_disabled()
                transformers_logging.disable_progress_bar()  # also turns huggingface_hub's off
            self.depth += 1
        try:
            yield
        finally:
            with self.lock:
                self.depth -= 1
                if self.depth == 0 and self.hub_bars_were_off is not None:
                    transformers_logging.enable_progress_bar()  # also turns huggingface_hub's on
                    if self.hub_bars_were_off:
                        huggingface_hub.utils.disable_progress_bars()
                    self.hub_bars_were_off = None


progress_bars_off = _ProgressBarSwitch().off
"""Context manager: no `transformers` progress bars inside (see `_ProgressBarSwitch`)."""


class CheckedLoadingMixin:
    """`from_pretrained` and `save_pretrained` of a `PreTrainedModel` (list it before `PreTrainedModel`)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained` that refuses, with an `OSError` naming the file and the first tensors
        concerned, what `transformers` would load silently wrong or let fail deep inside.

        Only safetensors weights are read (pickle files such as `pytorch_model.bin` are never unpickled); every tensor
        of the model must come from the file with its shape (`transformers` would randomly initialise a missing one,
        so two loads of one folder would sample different images), no tensor may be left over, and all must be
        finite (NaN weights sample black images). A missing `config.json` or weights file, or a truncated one, is
        named too.

        CPU weights are then copied out of the memory-mapped safetensors file: memory-mapped tensors are not 64-byte
        aligned, which makes the CPU kernels round differently from the model that was saved; owned, aligned copies
        make a save/load round trip bit-identical (and release the file).
        """
        if kwargs.get("use_safetensors") is False:
            raise ValueError("TransGAN models load safetensors weights only (a pickle file is never unpickled); drop "
                             "`use_safetensors=False`.")
        return_loading_info = kwargs.pop("output_loading_info", False)
        weights = check_model_folder(pretrained_model_name_or_path, kwargs.get("subfolder", ""))
        kwargs.update(use_safetensors=True, output_loading_info=True, ignore_mismatched_sizes=True)
        try:
            with load_report_dropped(), progress_bars_off():  # the error below says the same in one line
                model, loading_info = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except SafetensorError as error:
            raise OSError(f"{weights} is not a readable safetensors file ({error}); it is truncated or corrupt: "
                          "download or save the model again.") from None
        check_loaded_tensors(model, loading_info, weights)
        with torch.no_grad():
            for tensor in (*model.parameters(), *model.buffers()):
                if tensor.device.type == "cpu" and tensor.data_ptr() % 64:
                    tensor.data = tensor.data.clone()
        return (model, loading_info) if return_loading_info else model

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`; the weight files then get the umask's permissions (safetensors writes
        them `0600`, unreadable for other users and containers)."""
        with progress_bars_off():
            result = super().save_pretrained(save_directory, *args, **kwargs)
        try:
            from . import atomic_files
        except ImportError:  # remote code without the transgan_hf package: the files keep safetensors' permissions
            return result
        for path in Path(save_directory).glob("*.safetensors"):
            atomic_files.apply_umask_permissions(path)
        return result
