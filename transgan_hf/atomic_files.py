"""Write files and folders so that a crash never leaves half of one behind, with the user's permissions.

Everything is written under a temporary name beside its target and renamed into place. `tempfile` creates its files
`0600` and folders `0700`; the renamed result gets what a plain `open`/`mkdir` would give under the process umask,
so saved models and runs are usable by other users and containers.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask_permissions(path: str | os.PathLike) -> None:
    """Give `path` (and, for a folder, everything inside it) the permissions `open`/`mkdir` would under the umask."""
    mask = current_umask()
    path = Path(path)
    paths = [path] + (list(path.rglob("*")) if path.is_dir() and not path.is_symlink() else [])
    for entry in paths:
        if entry.is_symlink():
            continue
        mode = 0o777 if entry.is_dir() else 0o666
        if not entry.is_dir() and os.stat(entry).st_mode & 0o111:
            mode = 0o777  # keep executables executable
        os.chmod(entry, mode & ~mask)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error it replaces `path`, else it is removed.

    Use it for writers that want a path (`safetensors.torch.save_file`, `PIL.Image.save(..., format=...)`,
    `numpy.savez`): `with atomic_write(target) as temporary: save_file(tensors, temporary)`.
    """
    path = Path(path)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        apply_umask_permissions(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path) as temporary:
        temporary.write_bytes(data)


@contextlib.contextmanager
def staging_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty hidden folder beside `target` to write a whole folder into; it is always removed at the end.

    Move its contents into place with `move_entries_into_place` (or `os.replace` onto a missing target) inside the
    block; whatever is left when the block ends, by error or interruption, is deleted.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging.", dir=target.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def move_entries_into_place(staging: Path, target: Path, entries: Sequence[str] | None = None) -> None:
    """Move `entries` (default: everything) written in `staging` to `target`; other files of `target` stay.

    A missing `target` is created by one rename. Otherwise each old entry is first renamed into a trash folder
    beside `target`, so every step is a rename and a crash never leaves a half-copied entry. Permissions follow the
    umask.
    """
    apply_umask_permissions(staging)
    if not target.exists():
        os.replace(staging, target)
        return
    if entries is None:
        entries = sorted(entry.name for entry in staging.iterdir())
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    moved_aside: list[str] = []
    try:
        for entry in entries:
            new, old = staging / entry, target / entry
            if old.exists() or old.is_symlink():
                os.replace(old, trash / entry)
                moved_aside.append(entry)
            if new.exists():
                os.replace(new, old)
    except BaseException:
        for entry in moved_aside:  # a failed rename must not lose the old entry: put back what has no replacement
            if not (target / entry).exists():
                os.replace(trash / entry, target / entry)
        raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def remove_stale_staging_folders(parent: str | os.PathLike, target_name: str) -> list[Path]:
    """Delete staging and trash folders that an interrupted save of `target_name` left in `parent`."""
    parent = Path(parent)
    removed = []
    if not parent.is_dir():
        return removed
    for prefix in (f".{target_name}.staging.", f".{target_name}.old."):
        for entry in parent.glob(f"{glob.escape(prefix)}*"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


__all__ = [
    "apply_umask_permissions",
    "atomic_write",
    "move_entries_into_place",
    "remove_stale_staging_folders",
    "staging_folder",
    "write_bytes_atomically",
    "write_text_atomically",
]
