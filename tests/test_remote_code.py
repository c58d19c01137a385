"""Remote code, written on demand: a folder saved with `remote_code=True` loads with diffusers alone, in a process where
transgan_hf cannot be imported, and draws the same images as `TransGANPipeline`; its layout fits how diffusers 0.42
loads code from a folder and from a Hub repo; a default save writes no code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from diffusers.utils.dynamic_modules_utils import get_relative_imports
from helpers import seeds, tiny_pipeline

import transgan_hf
from transgan_hf import TransGANPipeline
from transgan_hf.remote_code import ENTRY_MODULE

PACKAGE_DIR = Path(transgan_hf.__file__).resolve().parent
PACKAGE_ONLY = {"pipeline_folder.py", "hub.py", "remote_code.py", "model_card.py", "atomic_files.py", "__init__.py"}

# Each call of the pipeline both processes make: per-image seeds with ranked candidates, one generator with truncation,
# an interpolation.
CALLS = textwrap.dedent("""
    def calls(pipe):
        return {
            "ranked": pipe(batch_size=3, generator=seeds(0, 1, 2), num_candidates=2, output_type="np").images,
            "truncated": pipe(batch_size=2, generator=torch.Generator().manual_seed(7), truncation=0.7,
                              output_type="np").images,
            "interpolated": pipe.interpolate(seed_a=1, seed_b=2, num_steps=3, output_type="np").images,
        }

    def seeds(*values):
        return [torch.Generator().manual_seed(v) for v in values]
""")

WITHOUT_THE_PACKAGE = textwrap.dedent("""
    import importlib.abc, json, sys
    from pathlib import Path

    class NoTransganHf(importlib.abc.MetaPathFinder):
        \"\"\"As for a user without the package (the editable install's finder comes after it).\"\"\"

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "transgan_hf":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoTransganHf())
    try:
        import transgan_hf
        sys.exit("transgan_hf is importable")
    except ModuleNotFoundError:
        pass

    import numpy as np, torch
    from diffusers import DiffusionPipeline
    """) + CALLS + textwrap.dedent("""
    folder, package_dir, output = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    np.savez(output, **calls(pipe))
    try:
        pipe.save_pretrained(folder.parent / "again")
        save_error = None
    except ImportError as error:
        save_error = str(error)
    module_files = [Path(m.__file__).resolve() for m in list(sys.modules.values()) if getattr(m, "__file__", None)]
    print(json.dumps({
        "classes": [type(x).__module__ for x in (pipe, pipe.generator, pipe.discriminator)],
        "from_the_package": [str(f) for f in module_files if f.is_relative_to(package_dir)],
        "save_error": save_error,
    }))
""")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[TransGANPipeline, Path]:
    folder = tmp_path_factory.mktemp("remote_code") / "pipe"
    pipeline = tiny_pipeline()
    pipeline.save_pretrained(folder, remote_code=True)
    return pipeline, folder


def test_the_folder_loads_with_diffusers_alone_and_draws_the_same_images(saved, tmp_path):
    pipeline, folder = saved
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "HF_HUB_OFFLINE": "1"}
    # -I: no PYTHONPATH, no current folder or script folder on sys.path; the blocker refuses the editable install.
    result = subprocess.run([sys.executable, "-I", "-c", WITHOUT_THE_PACKAGE, str(folder), str(PACKAGE_DIR),
                             str(tmp_path / "images.npz")], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(module.startswith("diffusers_modules.") for module in report["classes"]), report["classes"]
    assert report["from_the_package"] == []  # nothing ran from the package's own files
    assert "save_pretrained is part of the transgan_hf package" in report["save_error"]
    assert "Expected types" not in result.stderr  # the components are the pipeline code's own classes

    namespace = {"torch": __import__("torch")}
    exec(CALLS, namespace)
    expected = {name: np.asarray(images) for name, images in namespace["calls"](pipeline).items()}
    with np.load(tmp_path / "images.npz") as drawn:
        assert set(drawn.files) == set(expected)
        for name, images in expected.items():
            assert np.array_equal(drawn[name], images), name
    assert np.array_equal(expected["ranked"], np.asarray(pipeline(
        batch_size=3, generator=seeds(0, 1, 2), num_candidates=2, output_type="np").images))  # the comparison is fair


def test_the_layout_fits_diffusers_loading_from_a_folder_and_from_the_hub(saved):
    pipeline, folder = saved
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == [ENTRY_MODULE, "TransGANPipeline"]
    code = {path.name for path in folder.glob("*.py")}
    # The pipeline module and, recursively, every module it imports relatively; nothing package-only.
    assert {"pipeline_transgan.py", "modeling_transgan.py", "configuration_transgan.py"} <= code
    assert not code & PACKAGE_ONLY
    for name in code - {f"{ENTRY_MODULE}.py"}:
        assert (folder / name).read_bytes() == (PACKAGE_DIR / name).read_bytes(), name  # copies, unchanged
        assert {f"{module}.py" for module in get_relative_imports(folder / name)} <= code, name
    # From a folder diffusers copies only the modules the entry module imports directly: that must be all of them.
    assert {f"{module}.py" for module in get_relative_imports(folder / f"{ENTRY_MODULE}.py")} == code - {
        f"{ENTRY_MODULE}.py"}
    # From a Hub repo diffusers downloads only the named module of a component folder: it imports nothing from there.
    for component in ("generator", "discriminator"):
        module, class_name = index[component]
        assert class_name == type(getattr(pipeline, component)).__name__
        assert {p.name for p in (folder / component).iterdir()} == {"config.json", "model.safetensors", f"{module}.py"}
        assert get_relative_imports(folder / component / f"{module}.py") == []
        assert "auto_map" not in json.loads((folder / component / "config.json").read_text())
    # The package loads the folder too, and its card offers diffusers' remote-code loading.
    loaded = TransGANPipeline.from_pretrained(folder)
    assert np.array_equal(loaded(generator=seeds(4), output_type="np").images,
                          pipeline(generator=seeds(4), output_type="np").images)
    assert "trust_remote_code=True)" in (folder / "README.md").read_text()


def test_a_default_save_writes_no_code_and_replaces_an_earlier_remote_code_save(tmp_path):
    folder = tmp_path / "pipe"
    pipeline = tiny_pipeline(with_discriminator=False)
    pipeline.save_pretrained(folder, remote_code=True)
    (folder / "notes.py").write_text("# the user's own file\n")
    pipeline.save_pretrained(folder)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.py")) == ["notes.py"]
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "TransGANPipeline"
    assert "remote_code=True" in (folder / "README.md").read_text()  # the card says how to get the code
    with pytest.raises(ValueError, match="`remote_code` must be True or False"):
        pipeline.save_pretrained(folder, remote_code="yes")


def test_remote_code_carries_only_the_packages_classes(tmp_path):
    pipeline = tiny_pipeline()

    class Tuned(type(pipeline.discriminator)):
        pass

    pipeline.discriminator.__class__ = Tuned
    with pytest.raises(ValueError, match="Tuned comes from .*save with remote_code=False"):
        pipeline.save_pretrained(tmp_path / "pipe", remote_code=True)
    assert not (tmp_path / "pipe").exists()
