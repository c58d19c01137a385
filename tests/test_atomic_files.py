"""transgan_hf.atomic_files: whole files or nothing, the user's umask, and no leftovers."""

import os
import stat

import pytest

from transgan_hf import atomic_files
from transgan_hf.atomic_files import (
    atomic_write,
    move_entries_into_place,
    remove_stale_staging_folders,
    staging_folder,
    write_text_atomically,
)


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_and_folders_get_the_umask_permissions(tmp_path, umask_027):
    write_text_atomically(tmp_path / "a.txt", "hello")
    assert mode(tmp_path / "a.txt") == 0o640 and (tmp_path / "a.txt").read_text() == "hello"
    with staging_folder(tmp_path / "out") as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "f").write_text("1")
        move_entries_into_place(staging, tmp_path / "out")
    assert mode(tmp_path / "out") == 0o750 and mode(tmp_path / "out" / "sub" / "f") == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "out"]


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_moving_into_an_existing_folder_replaces_entries_and_keeps_other_files(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    (target / "model").mkdir()
    (target / "model" / "old").write_text("old")
    with staging_folder(target) as staging:
        (staging / "model").mkdir()
        (staging / "model" / "new").write_text("new")
        move_entries_into_place(staging, target, ["model"])
    assert (target / "keep.txt").read_text() == "mine"
    assert [p.name for p in (target / "model").iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_rename_puts_the_old_entry_back(tmp_path, monkeypatch):
    target = tmp_path / "out"
    (target / "model").mkdir(parents=True)
    (target / "model" / "old").write_text("old")
    real_replace = os.replace
    calls = []

    def failing_replace(source, destination):
        calls.append(source)
        if len(calls) == 2:  # the old entry is in the trash; moving the new one in fails
            raise OSError("disk full")
        real_replace(source, destination)

    with staging_folder(target) as staging:
        (staging / "model").mkdir()
        monkeypatch.setattr(atomic_files.os, "replace", failing_replace)
        with pytest.raises(OSError, match="disk full"):
            move_entries_into_place(staging, target, ["model"])
        monkeypatch.setattr(atomic_files.os, "replace", real_replace)
    assert (target / "model" / "old").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_stale_staging_folders_of_an_interrupted_save_are_removed(tmp_path):
    (tmp_path / ".pipeline.staging.abc").mkdir()
    (tmp_path / ".pipeline.old.def").mkdir()
    (tmp_path / ".other.staging.x").mkdir()
    removed = remove_stale_staging_folders(tmp_path, "pipeline")
    assert sorted(p.name for p in removed) == [".pipeline.old.def", ".pipeline.staging.abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.staging.x"]
