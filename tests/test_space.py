"""The Gradio Space (spaces/app.py), started like the Hub starts it (`python app.py`, port from GRADIO_SERVER_PORT,
model from TRANSGAN_MODEL) and driven through gradio_client: the documented API, seeded reproducibility, bad inputs,
and the app's model cache and default model in-process."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

gradio_client = pytest.importorskip("gradio_client", reason="the Space tests need the [space] extra")
pytest.importorskip("gradio", reason="the Space tests need the [space] extra")
from gradio_client.exceptions import AppError  # noqa: E402
from test_pipeline import tiny_pipeline  # noqa: E402

from transgan_hf import TransGANPipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP_FILE = ROOT / "spaces" / "app.py"
SERVER_START_TIMEOUT = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def import_app():
    """spaces/app.py as a module (it is a script folder, not a package); builds its demo without launching it."""
    spec = importlib.util.spec_from_file_location("transgan_space_app", APP_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def save_space_models(folder: Path) -> tuple[Path, Path]:
    """A tiny pipeline with its discriminator, and the same generator saved without one."""
    full, generator_only = folder / "tiny", folder / "tiny-no-discriminator"
    pipeline = tiny_pipeline()
    pipeline.save_pretrained(full)
    TransGANPipeline(generator=pipeline.generator).save_pretrained(generator_only)
    return full, generator_only


def wait_for_server(url: str, process: subprocess.Popen, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"spaces/app.py exited with code {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"spaces/app.py did not serve {url} within {SERVER_START_TIMEOUT} s:\n{log.read_text()}")


def pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def pipeline_pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    return save_space_models(tmp_path_factory.mktemp("space_models"))


@pytest.fixture(scope="module")
def server(models, tmp_path_factory) -> str:
    """`python spaces/app.py` on a free port chosen through GRADIO_SERVER_PORT, serving the tiny model."""
    work = tmp_path_factory.mktemp("space_server")
    port = free_port()
    env = {**os.environ, "TRANSGAN_MODEL": str(models[0]), "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(work / "gradio"), "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(work / "hf_cache")}
    log = work / "server.log"
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, str(APP_FILE)], cwd=work, env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_server(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    return gradio_client.Client(server, download_files=str(tmp_path_factory.mktemp("downloads")),
                                analytics_enabled=False, verbose=False)


# ---------------------------------------------------------------------------------------------------------------------
# The API through gradio_client
# ---------------------------------------------------------------------------------------------------------------------


def test_api_lists_generate_and_interpolate_with_documented_parameters(client, models):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert sorted(endpoints) == ["/generate", "/interpolate"]  # UI helpers are private
    generate = endpoints["/generate"]["parameters"]
    assert [p["parameter_name"] for p in generate] == ["seed", "num_images", "truncation", "num_candidates", "model"]
    assert generate[-1]["parameter_default"] == str(models[0])  # TRANSGAN_MODEL is the default model
    interpolate = endpoints["/interpolate"]["parameters"]
    assert [p["parameter_name"] for p in interpolate] == ["seed_a", "seed_b", "num_steps", "truncation", "model"]


def test_same_seed_gives_the_same_images_as_the_pipeline(client, models):
    first = client.predict(5, 3, 0.7, 1, api_name="/generate")
    again = client.predict(seed=5, num_images=3, truncation=0.7, num_candidates=1, api_name="/generate")
    assert [item["caption"] for item in first] == ["seed 5", "seed 6", "seed 7"]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(pixels(a["image"]), pixels(b["image"]))
    assert pixels(first[0]["image"]).shape == (16, 16, 3)

    pipeline = TransGANPipeline.from_pretrained(models[0])
    expected = pipeline(batch_size=3, generator=[torch.Generator().manual_seed(s) for s in (5, 6, 7)],
                        truncation=0.7).images
    for item, image in zip(first, expected):  # another process: allow one grey level of float round-off
        assert np.abs(pixels(item["image"]) - pipeline_pixels(image)).max() <= 1

    other = client.predict(6, 1, 0.7, 1, api_name="/generate")  # image i of seed s is the image of seed s + i
    assert np.abs(pixels(other[0]["image"]) - pixels(first[1]["image"])).max() <= 1
    assert np.abs(pixels(other[0]["image"]) - pixels(first[0]["image"])).max() > 10


def test_truncation_zero_means_untruncated_latents(client, models):
    off = client.predict(11, 1, 0.0, 1, api_name="/generate")
    pipeline = TransGANPipeline.from_pretrained(models[0])
    expected = pipeline(generator=torch.Generator().manual_seed(11), truncation=None).images[0]
    assert np.abs(pixels(off[0]["image"]) - pipeline_pixels(expected)).max() <= 1


def test_best_of_n_keeps_the_discriminators_choice(client, models):
    best = client.predict(20, 2, 0.7, 4, api_name="/generate")
    assert [item["caption"] for item in best] == ["seed 20", "seed 21"]
    pipeline = TransGANPipeline.from_pretrained(models[0])
    expected = pipeline(batch_size=2, generator=[torch.Generator().manual_seed(s) for s in (20, 21)], truncation=0.7,
                        num_candidates=4).images
    for item, image in zip(best, expected):
        assert np.abs(pixels(item["image"]) - pipeline_pixels(image)).max() <= 1


def test_interpolate_returns_frames_from_seed_a_and_an_animated_gif(client):
    frames, gif = client.predict(3, 9, 5, api_name="/interpolate")
    assert [item["caption"] for item in frames] == ["0/4", "1/4", "2/4", "3/4", "4/4"]
    start = client.predict(3, 1, 0.7, 1, api_name="/generate")  # /interpolate's truncation defaults to 0.7
    assert np.abs(pixels(frames[0]["image"]) - pixels(start[0]["image"])).max() <= 1
    assert np.abs(pixels(frames[-1]["image"]) - pixels(frames[0]["image"])).max() > 10
    with Image.open(gif) as animation:
        assert animation.format == "GIF" and animation.n_frames > 1
        assert animation.size == (192, 192)  # 16 px frames enlarged 12x (nearest) to stay visible


@pytest.mark.parametrize(
    ("api_name", "arguments", "message"),
    [
        ("/generate", dict(seed=0, num_images=-2, truncation=0.7, num_candidates=1), "Number of images must be a whole number from 1 to 64, got -2"),  # noqa: E501
        ("/generate", dict(seed=0, num_images=100000, truncation=0.7, num_candidates=1), "from 1 to 64, got 100000"),
        ("/generate", dict(seed=0, num_images=2.5, truncation=0.7, num_candidates=1), "whole number"),
        ("/generate", dict(seed=-1, num_images=1, truncation=0.7, num_candidates=1), "Seed must be a whole number"),
        ("/generate", dict(seed="abc", num_images=1, truncation=0.7, num_candidates=1), "Seed must be .* got 'abc'"),
        ("/generate", dict(seed=0, num_images=1, truncation=1.5, num_candidates=1), "Truncation must be a number from 0"),  # noqa: E501
        ("/generate", dict(seed=0, num_images=1, truncation=-0.1, num_candidates=1), "Truncation must be"),
        ("/generate", dict(seed=0, num_images=1, truncation=0.7, num_candidates=0), "Best of N .* from 1 to 8"),
        ("/generate", dict(seed=0, num_images=64, truncation=0.7, num_candidates=8), "at most 256"),
        ("/generate", dict(seed=0, num_images=1, truncation=0.7, num_candidates=1, model="/no/such/model"),
         "Cannot load model '/no/such/model'.*not a folder"),
        ("/generate", dict(seed=0, num_images=1, truncation=0.7, num_candidates=1, model="org/not-in-cache"),
         "Cannot load model 'org/not-in-cache'.*cannot be reached"),
        ("/interpolate", dict(seed_a=0, seed_b=1, num_steps=1), "Steps must be a whole number from 2 to 32"),
        ("/interpolate", dict(seed_a=0, seed_b=1, num_steps=5000), "Steps must be .* got 5000"),
        ("/interpolate", dict(seed_a=0, seed_b=2**40, num_steps=4), "End seed must be"),
    ],
)
def test_bad_inputs_give_clear_errors(client, api_name, arguments, message):
    with pytest.raises(AppError, match=message):
        client.predict(**arguments, api_name=api_name)


def test_best_of_n_without_a_discriminator_is_refused_and_the_app_keeps_serving(client, models):
    generator_only = str(models[1])
    with pytest.raises(AppError, match="saved without its discriminator"):
        client.predict(0, 2, 0.7, 3, generator_only, api_name="/generate")
    assert len(client.predict(0, 2, 0.7, 1, generator_only, api_name="/generate")) == 2
    assert len(client.predict(0, 4, 0.7, 2, api_name="/generate")) == 4  # the default model again


# ---------------------------------------------------------------------------------------------------------------------
# Space files
# ---------------------------------------------------------------------------------------------------------------------


def test_space_metadata_pins_the_installed_gradio_and_requirements_cover_the_package():
    import gradio
    from huggingface_hub import metadata_load
    from packaging.requirements import Requirement

    metadata = metadata_load(ROOT / "spaces" / "README.md")
    assert metadata["sdk"] == "gradio" and metadata["sdk_version"] == gradio.__version__
    assert (ROOT / "spaces" / metadata["app_file"]).is_file()
    assert tuple(map(int, metadata["python_version"].split("."))) >= (3, 11)
    assert metadata["models"] and metadata["license"] and "transgan" in metadata["tags"]

    lines = (ROOT / "spaces" / "requirements.txt").read_text().splitlines()
    required = {Requirement(line).name.lower(): Requirement(line) for line in lines
                if line.strip() and not line.startswith(("#", "-"))}
    assert str(required["gradio"].specifier) == f"=={gradio.__version__}"
    with open(ROOT / "pyproject.toml", "rb") as file:
        package_dependencies = tomllib.load(file)["project"]["dependencies"]
    missing = {Requirement(d).name.lower() for d in package_dependencies} - set(required)
    assert not missing, f"spaces/requirements.txt lacks transgan_hf's dependencies {sorted(missing)}"


# ---------------------------------------------------------------------------------------------------------------------
# In-process: default model and pipeline cache
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app():
    return import_app()


def test_default_model_comes_from_env_then_the_bundled_demo(app, monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSGAN_MODEL", " org/some-model ")
    assert app.default_model() == "org/some-model"
    monkeypatch.delenv("TRANSGAN_MODEL")
    monkeypatch.setattr(app, "DEMO_MODEL_DIR", tmp_path / "demo")
    with pytest.raises(OSError, match="set the TRANSGAN_MODEL environment variable"):
        app.default_model()
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "model_index.json").write_text("{}")
    assert app.default_model() == str(tmp_path / "demo")


def test_app_without_any_model_starts_and_says_what_to_do(app, monkeypatch, tmp_path):
    monkeypatch.delenv("TRANSGAN_MODEL", raising=False)
    monkeypatch.setattr(app, "DEMO_MODEL_DIR", tmp_path / "missing")
    summary, card = app.describe_model("")
    assert summary.startswith("⚠️ No model to show: set the TRANSGAN_MODEL") and card == ""
    with pytest.raises(app.gr.Error, match="No model to show"):
        app.generate(0, 1, 0.7, 1, "")
    app.build_demo()  # the UI still builds; the message is shown in place of the model summary


def test_pipeline_cache_loads_each_model_once_and_evicts_the_least_recent(app, models, monkeypatch):
    loads = []
    real_load = app.load_model

    def counting_load(name):
        loads.append(name)
        time.sleep(0.2)  # long enough for the other threads to ask for the same model meanwhile
        return real_load(name)

    monkeypatch.setattr(app, "load_model", counting_load)
    cache = app.PipelineCache(max_models=1)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(str(models[0])))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1 and all(result is results[0] for result in results)
    assert cache.get(str(models[0]) + os.sep) is results[0]  # the same folder spelled differently
    cache.get(str(models[1]))  # evicts the first model (max_models=1)
    assert str(models[0]) not in cache and str(models[1]) in cache
    assert cache.get(str(models[0])) is not results[0] and len(loads) == 3


def test_a_slow_model_load_does_not_hold_up_requests_for_a_loaded_model(app, models, monkeypatch):
    cache = app.PipelineCache(max_models=2)
    loaded = cache.get(str(models[0]))
    release = threading.Event()
    real_load = app.load_model
    monkeypatch.setattr(app, "load_model", lambda name: release.wait(10) and real_load(name))
    slow = threading.Thread(target=cache.get, args=(str(models[1]),))
    slow.start()
    try:
        start = time.monotonic()
        assert cache.get(str(models[0])) is loaded and time.monotonic() - start < 1
        assert str(models[1]) not in cache
    finally:
        release.set()
        slow.join()
    assert str(models[1]) in cache


def test_a_failed_load_is_reported_and_retried(app, models, tmp_path):
    cache = app.PipelineCache(max_models=2)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json")
    for _ in range(2):  # not cached as a failure, and no load lock left behind
        with pytest.raises(OSError, match="Cannot load model .*broken.*not valid JSON"):
            cache.get(str(broken))
    assert not cache._loading
