"""The Hugging Face Hub side of pipelines: finding a pipeline folder by repo id, creating repos and uploading.

Every Hub failure a user can fix (offline, no network, unknown repo or revision, not in the cache) becomes an
`OSError` that says what to do. Package-only: not part of the pipeline's remote code.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.constants import EVAL_RESULTS_FOLDER
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

HUB_FILES = ["model_index.json", "README.md", "generator/*", "discriminator/*"]
"""What `TransGANPipeline.from_pretrained` downloads from a Hub repo (not the remote code, not sample images)."""


def looks_like_local_path(name: str) -> bool:
    """Paths, not repo ids: absolute, `./`, `~`, Windows drives, or more than one `/` (repo ids are `org/name`)."""
    return name.startswith((".", "/", "~", "\\")) or bool(re.match(r"^[A-Za-z]:", name)) or name.count("/") > 1


def resolve_pipeline_folder(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """The local folder of a pipeline: `name_or_path` itself, or the Hub snapshot of the repo id (downloaded or
    taken from the cache; offline, only the cache is used)."""
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        return Path(name)
    if os.path.exists(name) or looks_like_local_path(name):
        raise OSError(f"{name!r} is not a folder; pass a TransGANPipeline folder or a Hub repo id such as 'org/name'.")
    try:
        return Path(snapshot_download(name, revision=revision, token=token, cache_dir=cache_dir,
                                      local_files_only=bool(local_files_only), allow_patterns=HUB_FILES))
    except HFValidationError as error:
        raise OSError(f"{name!r} is neither a local folder nor a valid Hub repo id ({error}).") from None
    except (LocalEntryNotFoundError, IncompleteSnapshotError):
        where = "pass local_files_only=False" if local_files_only else "unset HF_HUB_OFFLINE or check the network"
        raise OSError(
            f"{name!r} is not a local folder, and the Hub repo {name!r}"
            f"{f' (revision {revision!r})' if revision else ''} is not (completely) in the Hugging Face cache "
            f"{str(cache_dir) if cache_dir else '(HF_HUB_CACHE)'} while the Hub cannot be reached. Download it once "
            f"with network access (`hf download {name}`) and {where}, or pass the path of a saved pipeline folder."
        ) from None
    except (RepositoryNotFoundError, GatedRepoError) as error:
        raise OSError(
            f"Hub repo {name!r} was not found or is not accessible ({type(error).__name__}); check the id, and pass "
            "`token=` (or run `hf auth login`) for a private or gated repo."
        ) from None
    except RevisionNotFoundError:
        message = f"Hub repo {name!r} has no revision {revision!r}; pass an existing branch, tag or commit."
        raise OSError(message) from None


def hub_unreachable(error: BaseException) -> bool:
    """Offline mode, or a transport error of huggingface_hub's HTTP client (httpx2 from huggingface_hub 2, httpx
    before; matched by class name so that neither needs importing here)."""
    return isinstance(error, (OfflineModeIsEnabled, ConnectionError)) or any(
        cls.__name__ == "TransportError" for cls in type(error).__mro__
    )


@contextlib.contextmanager
def hub_errors_explained(repo_id: str) -> Iterator[None]:
    """Turn a Hub that cannot be reached into an `OSError` that says what to do."""
    try:
        yield
    except Exception as error:
        if not hub_unreachable(error):
            raise
        raise OSError(
            f"Cannot reach the Hugging Face Hub to push {repo_id!r} ({type(error).__name__}: {error}). Check the "
            "network and that HF_HUB_OFFLINE is not set; to keep the pipeline meanwhile, use save_pretrained(folder) "
            f"and upload the folder later (`hf upload {repo_id} folder`)."
        ) from None


def create_hub_repo(api: HfApi, repo_id: str, private: bool | None = None) -> str:
    """Create the model repo if it does not exist; returns its full id (`namespace/name`)."""
    with hub_errors_explained(repo_id):
        return api.create_repo(repo_id, private=private, exist_ok=True).repo_id


def upload_pipeline_folder(
    api: HfApi, folder: str | os.PathLike, repo_id: str, commit_message: str | None = None, create_pr: bool = False
) -> str:
    """Upload a saved pipeline folder to an existing repo; returns the commit URL. Hidden entries stay local, except
    the model card's `.eval_results/` (the Hub's evaluation-results files)."""
    hidden = [f"{entry.name}*" for entry in Path(folder).iterdir()
              if entry.name.startswith(".") and entry.name != EVAL_RESULTS_FOLDER]
    with hub_errors_explained(repo_id):
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=os.fspath(folder), commit_message=commit_message or "Upload TransGANPipeline",
            create_pr=create_pr, ignore_patterns=[*hidden, "**/.*"],
        )
    return str(getattr(commit, "commit_url", commit))
