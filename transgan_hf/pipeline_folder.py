"""Pipeline folders: what `TransGANPipeline.save_pretrained` writes and `TransGANPipeline.from_pretrained` reads.

A folder holds `model_index.json`, `generator/`, the optional `discriminator/` (each a `config.json` and safetensors
weights) and the model card `README.md`; with `remote_code=True` also the pipeline code (`transgan_hf.remote_code`).
A save is staged beside the folder and moved into place, so a failure leaves the folder as it was; a load checks the
folder first and says in one line what is missing or wrong. Package-only: not part of the pipeline's remote code.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffusers import DiffusionPipeline
from diffusers.utils import logging
from huggingface_hub import HfApi

from . import hub, model_card
from .atomic_files import move_entries_into_place, staging_folder
from .modeling_transgan import TransGANDiscriminator, TransGANGenerator
from .remote_code import remote_code_entries, write_remote_code

if TYPE_CHECKING:
    from .pipeline_transgan import TransGANPipeline

logger = logging.get_logger(__name__)

MODEL_INDEX = "model_index.json"
MODEL_CARD = "README.md"
COMPONENTS = {"generator": "TransGANGenerator", "discriminator": "TransGANDiscriminator"}
HUB_KWARGS = ("repo_id", "token", "private", "commit_message", "create_pr")
HUB_LOAD_KWARGS = ("revision", "token", "cache_dir", "local_files_only")
_LOAD = object()  # `from_pretrained(discriminator=...)` default: load it from the folder


def load_pipeline(
    pipeline_class: type[TransGANPipeline], pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
) -> TransGANPipeline:
    """`TransGANPipeline.from_pretrained`: resolve the folder (`hub.resolve_pipeline_folder`), check it, and load the
    components with this package's classes, whichever layout `model_index.json` records (package or remote code)."""
    if not isinstance(pretrained_model_name_or_path, (str, os.PathLike)):
        raise TypeError(f"`pretrained_model_name_or_path` must be a folder path or a Hub repo id (str), got "
                        f"{type(pretrained_model_name_or_path).__name__}.")
    hub_kwargs = {name: kwargs.pop(name) for name in HUB_LOAD_KWARGS if name in kwargs}
    folder = hub.resolve_pipeline_folder(pretrained_model_name_or_path, **hub_kwargs)
    index = read_model_index(folder)
    load_kwargs = {"dtype": kwargs.pop("dtype", kwargs.pop("torch_dtype", None)),
                   "device_map": kwargs.pop("device_map", None)}
    load_kwargs = {k: v for k, v in load_kwargs.items() if v is not None}
    generator = kwargs.pop("generator", None)
    discriminator = kwargs.pop("discriminator", _LOAD)
    if kwargs:
        raise TypeError(f"TransGANPipeline.from_pretrained got unexpected keyword arguments {sorted(kwargs)}.")
    if generator is None:
        generator = TransGANGenerator.from_pretrained(folder / "generator", **load_kwargs)
    if discriminator is _LOAD:
        discriminator = None
        if index.get("discriminator", [None])[0] is not None:
            discriminator = TransGANDiscriminator.from_pretrained(folder / "discriminator", **load_kwargs)
    pipeline = pipeline_class(generator=generator, discriminator=discriminator)
    pipeline.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
    return pipeline


def save_pipeline(
    pipeline: TransGANPipeline,
    save_directory: str | os.PathLike,
    model_card_kwargs: dict[str, Any] | None = None,
    remote_code: bool | None = None,
    **kwargs: Any,
) -> None:
    """`TransGANPipeline.save_pretrained`: write the folder (and the code with `remote_code`, which defaults to
    `push_to_hub`) through a staging folder; other files of an existing folder stay, stale entries go."""
    push_to_hub = kwargs.pop("push_to_hub", False)
    hub_kwargs = {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
    remote_code = bool(push_to_hub) if remote_code is None else remote_code
    if not isinstance(remote_code, bool):
        raise ValueError(f"`remote_code` must be True or False, got {remote_code!r}.")
    if model_card_kwargs is not None and not isinstance(model_card_kwargs, dict):
        raise ValueError(f"`model_card_kwargs` must be a dict or None, got {type(model_card_kwargs).__name__}.")
    save_directory = Path(save_directory)
    if save_directory.exists() and not save_directory.is_dir():
        raise ValueError(f"Cannot save the pipeline to {str(save_directory)!r}: it is a file, not a folder.")
    card_kwargs = dict(model_card_kwargs or {})
    if push_to_hub:
        card_kwargs.setdefault("repo_id", hub_kwargs.get("repo_id", save_directory.name))
    card = model_card.make_model_card(pipeline, remote_code=remote_code, **card_kwargs)  # checked before any writing
    with staging_folder(save_directory) as staging:
        DiffusionPipeline.save_pretrained(pipeline, staging, **kwargs)
        if remote_code:
            write_remote_code(pipeline, staging)
        model_card.save_model_card(card, staging)  # README.md and the card's .eval_results/
        entries = [MODEL_INDEX, MODEL_CARD, model_card.EVAL_RESULTS_FOLDER, *COMPONENTS, *remote_code_entries()]
        move_entries_into_place(staging, save_directory, entries)
    samples_image = card_kwargs.get("samples_image")
    if samples_image and not (save_directory / samples_image).is_file():
        logger.warning(f"The model card shows {samples_image!r}, which is not in {str(save_directory)!r} yet.")
    if push_to_hub:
        api = HfApi(token=hub_kwargs.pop("token", None))
        repo_id = hub_kwargs.pop("repo_id", save_directory.name)
        repo_id = hub.create_hub_repo(api, repo_id, hub_kwargs.pop("private", None))
        hub.upload_pipeline_folder(api, save_directory, repo_id, **hub_kwargs)


def push_pipeline(pipeline: TransGANPipeline, repo_id: str, *, commit_message: str | None, private: bool | None,
                  token: str | None, create_pr: bool, model_card_kwargs: dict[str, Any] | None) -> str:
    """`TransGANPipeline.push_to_hub`: create (or reuse) the repo, save the pipeline with its remote code and card
    into a temporary folder, upload it; returns the commit URL."""
    api = HfApi(token=token)
    repo_id = hub.create_hub_repo(api, repo_id, private)
    with tempfile.TemporaryDirectory() as folder:
        pipeline.save_pretrained(folder, model_card_kwargs={"repo_id": repo_id, **(model_card_kwargs or {})},
                                 remote_code=True)
        return hub.upload_pipeline_folder(api, folder, repo_id, commit_message=commit_message, create_pr=create_pr)


def read_model_index(folder: Path) -> dict[str, Any]:
    """`model_index.json` of a TransGAN pipeline folder; `OSError` naming what is missing otherwise."""
    index_path = folder / MODEL_INDEX
    if not index_path.is_file():
        hint = ""
        if (folder / "config.json").is_file():
            hint = " It looks like a single model folder: load it with TransGANGenerator.from_pretrained instead."
        raise OSError(
            f"{str(folder)!r} is not a TransGANPipeline folder: it has no {MODEL_INDEX}. Pipeline folders are "
            f"written by TransGANPipeline.save_pretrained and `transgan convert`.{hint}"
        )
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise OSError(f"{str(index_path)!r} is not valid JSON ({error}); save the pipeline again.") from None
    check_model_index(index, index_path)
    if not (folder / "generator").is_dir():
        raise OSError(f"{str(folder)!r} has no generator/ folder; the pipeline was not saved completely.")
    if index.get("discriminator", [None])[0] is not None and not (folder / "discriminator").is_dir():
        raise OSError(f"{str(folder)!r} declares a discriminator but has no discriminator/ folder; save it again.")
    return index


def check_model_index(index: Any, index_path: Path) -> None:
    """`OSError` unless `index` is a TransGANPipeline `model_index.json`: the pipeline class, a generator entry
    `[library, "TransGANGenerator"]`, an optional discriminator entry, nothing else but `_` metadata."""
    where = f"{str(index_path)!r}"
    fix = "save the pipeline again with TransGANPipeline.save_pretrained"
    if not isinstance(index, dict):
        raise OSError(f"{where} must hold a JSON object, not a {type(index).__name__}; {fix}.")
    class_name = index.get("_class_name")
    if isinstance(class_name, list) and class_name:
        class_name = class_name[-1]
    if class_name != "TransGANPipeline":
        raise OSError(f"{where} describes a {class_name!r} pipeline, not a TransGANPipeline.")
    for name, entry in index.items():
        if name.startswith("_"):
            continue
        if name not in COMPONENTS:
            raise OSError(f"{where} declares a component {name!r} that a TransGANPipeline does not have; {fix}.")
        valid = (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                 and entry[1] == COMPONENTS[name]) or (name == "discriminator" and entry == [None, None])
        if not valid:
            allowed = f'["<library>", "{COMPONENTS[name]}"]' + (" or [null, null]" if name == "discriminator" else "")
            raise OSError(f"{where} has {name!r}: {json.dumps(entry)}, but it must be {allowed}; {fix}.")
    if "generator" not in index:
        raise OSError(f"{where} declares no TransGANGenerator component (no 'generator' entry); {fix}.")
