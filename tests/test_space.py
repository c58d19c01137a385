"""The Gradio Space (spaces/app.py), started like the Hub starts it (`python app.py`, port from GRADIO_SERVER_PORT,
models from TRANSGAN_SPACE_MODELS) and driven through gradio_client: the documented API, seeded reproducibility, bad
inputs, a `model` that names anything but a served model, and in-process the configuration and model cache."""

from __future__ import annotations

import os
import shutil
import stat
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
from helpers import free_port, import_app, save_space_models, space_models_setting  # noqa: E402

from transgan_hf import TransGANPipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP_FILE = ROOT / "spaces" / "app.py"
SERVER_START_TIMEOUT = 120


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
    """`python spaces/app.py` on a free port chosen through GRADIO_SERVER_PORT, serving the two tiny models."""
    work = tmp_path_factory.mktemp("space_server")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TRANSGAN_", "GRADIO_"))}
    env |= {"TRANSGAN_SPACE_MODELS": space_models_setting(models), "GRADIO_SERVER_PORT": str(port),
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
    assert generate[-1]["parameter_default"] == "tiny"  # the first served model, by name
    assert generate[-1]["type"]["enum"] == ["tiny", "tiny-no-discriminator"]  # a choice, not a path
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
        ("/generate", dict(seed=0, num_images=True, truncation=0.7, num_candidates=1), "Number of images must be"),
        ("/generate", dict(seed=0, num_images=1, truncation="0.7", num_candidates=1), "Truncation must be"),
        ("/generate", dict(seed=1.5, num_images=1, truncation=0.7, num_candidates=1), "Seed must be .* got 1.5"),
        ("/generate", dict(seed=2**32, num_images=1, truncation=0.7, num_candidates=1), "from 0 to 4294967295"),
        ("/generate", dict(seed=0, num_images=1, truncation=0.7, num_candidates=9), "Best of N .* got 9"),
        ("/generate", dict(seed=0, num_images=1, truncation=0.7, num_candidates=1, model=["tiny"]),
         r"Unknown model \['tiny'\]; this Space serves: tiny, tiny-no-discriminator\.$"),
        ("/generate", dict(seed=0, num_images="1" * 10000, truncation=0.7, num_candidates=1), r"got '1{76}\.\.\.\.$"),
        ("/interpolate", dict(seed_a=0, seed_b=1, num_steps=1), "Steps must be a whole number from 2 to 32"),
        ("/interpolate", dict(seed_a=0, seed_b=1, num_steps=5000), "Steps must be .* got 5000"),
        ("/interpolate", dict(seed_a=0, seed_b=2**40, num_steps=4), "End seed must be"),
        ("/interpolate", dict(seed_a=0, seed_b=1, num_steps=4, truncation=2), "Truncation must be"),
        ("/interpolate", dict(seed_a=0, seed_b=1, num_steps=4, model="/proc/self"), "Unknown model '/proc/self'"),
    ],
)
def test_bad_inputs_give_clear_errors(client, api_name, arguments, message):
    with pytest.raises(AppError, match=message):
        client.predict(**arguments, api_name=api_name)


def test_best_of_n_without_a_discriminator_is_refused_and_the_app_keeps_serving(client):
    with pytest.raises(AppError, match="saved without its discriminator"):
        client.predict(0, 2, 0.7, 3, "tiny-no-discriminator", api_name="/generate")
    assert len(client.predict(0, 2, 0.7, 1, "tiny-no-discriminator", api_name="/generate")) == 2
    assert len(client.predict(0, 4, 0.7, 2, api_name="/generate")) == 4  # the default model again


def test_every_served_model_answers_by_name(client, models):
    """Both configured models are served: the second one's images are its own generator's, not the default's."""
    second = TransGANPipeline.from_pretrained(models[1])
    expected = second(generator=torch.Generator().manual_seed(4), truncation=0.7).images[0]
    for endpoint, arguments in [("/generate", (4, 1, 0.7, 1)), ("/interpolate", (4, 5, 2, 0.7))]:
        result = client.predict(*arguments, "tiny-no-discriminator", api_name=endpoint)
        first_image = (result[0] if endpoint == "/interpolate" else result)[0]["image"]
        assert np.abs(pixels(first_image) - pipeline_pixels(expected)).max() <= 1


def not_a_model_values(tmp_path: Path, models: tuple[Path, Path]) -> list[str]:
    """`model` values a prober would try: served folders by path, paths that exist or not, a Hub-like id."""
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "a-file.txt").write_text("x")
    return [str(models[0]), str(models[0]) + "/", "/proc/self", "/proc/self/environ", "/no/such/model",
            str(tmp_path / "not-a-model"), str(tmp_path / "a-file.txt"), "../../etc", "~", ".", "org/not-in-cache",
            "TINY", "tiny\x00"]


def test_a_model_that_is_not_served_gets_the_same_message_whatever_is_on_disk(client, models, tmp_path):
    for value in not_a_model_values(tmp_path, models):
        with pytest.raises(AppError) as refused:
            client.predict(0, 1, 0.7, 1, value, api_name="/generate")
        assert str(refused.value) == f"Unknown model {value!r}; this Space serves: tiny, tiny-no-discriminator."
        assert str(os.getpid()) not in str(refused.value)


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


def test_models_come_from_flags_then_the_environment_then_the_bundled_demo(app, models, monkeypatch, tmp_path):
    config = app.load_config([], environ={})
    assert config.names == ["demo"] and config.models[0].source == str(app.DEMO_MODEL_DIR) and not config.allow_hub
    for variable in ("TRANSGAN_SPACE_MODELS", "TRANSGAN_MODEL"):
        monkeypatch.delenv(variable, raising=False)
    assert app.default_model() == str(app.DEMO_MODEL_DIR)

    environ = {"TRANSGAN_SPACE_MODELS": f" mine = {models[1]} , {models[0]}, stl10=org/transgan-stl10, org/other ",
               "TRANSGAN_CONCURRENCY": "3", "TRANSGAN_SPACE_ALLOW_HUB": "yes"}
    config = app.load_config([], environ=environ)
    assert config.names == ["mine", "tiny", "stl10", "org/other"] and config.allow_hub and config.concurrency == 3
    assert [(m.source, m.is_hub) for m in config.models] == [
        (str(models[1]), False), (str(models[0]), False), ("org/transgan-stl10", True), ("org/other", True)]
    assert (config.queue_size, config.cached_models) == (32, 2)

    flags = ["--models", f"x={models[0]}", "--concurrency", "1", "--queue_size", "5", "--cached_models", "4"]
    config = app.load_config(flags, environ=environ)  # flags win over the environment
    assert config.names == ["x"] and (config.concurrency, config.queue_size, config.cached_models) == (1, 5, 4)
    assert app.load_config([], environ={"TRANSGAN_MODEL": str(models[0])}).names == ["tiny"]  # the older spelling

    monkeypatch.setattr(app, "DEMO_MODEL_DIR", tmp_path / "missing")
    with pytest.raises(app.ConfigError, match="No model to serve: the bundled demo model .* set TRANSGAN_SPACE_MODELS"):
        app.load_config([], environ={})


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        ([], {"TRANSGAN_SPACE_MODELS": "/etc"}, "TRANSGAN_SPACE_MODELS: the folder '/etc' has no model_index.json"),
        (["--models", "a=/no/such"], {}, "--models: '/no/such' is neither a folder nor a Hub repo id"),
        (["--models", "a=org/x,a=org/y"], {}, "two models are named 'a'"),
        (["--models", "a="], {}, "'a=' names no folder or Hub repo id"),
        (["--models", " , "], {}, "--models lists no model"),
        ([], {"TRANSGAN_SPACE_ALLOW_HUB": "maybe"}, "TRANSGAN_SPACE_ALLOW_HUB must be 1/true/yes or 0/false/no"),
        ([], {"TRANSGAN_QUEUE_SIZE": "-1"}, "TRANSGAN_QUEUE_SIZE must be a whole number >= 1, got '-1'"),
        (["--concurrency", "two"], {}, "--concurrency must be a whole number >= 1"),
        ([], {"TRANSGAN_MODEL": "org/x", "TRANSGAN_SPACE_MODELS": "org/y"}, "TRANSGAN_MODEL and TRANSGAN_SPACE_MODELS"),
        (["--port", "1"], {}, "unrecognized arguments: --port 1 .*--help"),
    ],
)
def test_bad_settings_are_refused_by_name(app, argv, environ, message):
    with pytest.raises(app.ConfigError, match=message):
        app.load_config(argv, environ=environ)


def test_the_script_prints_help_and_refuses_bad_settings_without_starting(models):
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRANSGAN_")}
    shown = subprocess.run([sys.executable, str(APP_FILE), "--help"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0 and "TRANSGAN_SPACE_MODELS" in shown.stdout and "--allow_hub" in shown.stdout
    refused = subprocess.run([sys.executable, str(APP_FILE), "--models", "/no/such"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == ("error: --models: '/no/such' is neither a folder nor a Hub repo id (org/name); give a "
                              "saved TransGANPipeline folder or a Hub repo id.\n")


@pytest.fixture()
def space(app, models):
    return app.Space(app.load_config(["--models", space_models_setting(models)], environ={}))


def test_describe_model_and_interpolate_answer_unknown_models_like_generate(app, space, models, tmp_path):
    for value in not_a_model_values(tmp_path, models):
        message = f"Unknown model {value!r}; this Space serves: tiny, tiny-no-discriminator."
        assert space.describe_model(value) == (f"⚠️ {message}", "")
        with pytest.raises(app.gr.Error) as refused:
            space.interpolate(0, 1, 2, 0.7, value)
        assert refused.value.message == message
    summary, card = space.describe_model("tiny-no-discriminator")
    assert summary.startswith("**Model** `tiny-no-discriminator`: 16×16") and str(models[1]) not in summary


def test_non_finite_numbers_are_refused_by_name(app, space):
    """What JSON cannot carry, but a Python caller of the handlers can."""
    for arguments, message in [
        ((0, 1, float("nan"), 1), "Truncation must be a number from 0 (off) to 1, got nan."),
        ((float("inf"), 1, 0.7, 1), "Seed must be a whole number from 0 to 4294967295, got inf."),
    ]:
        with pytest.raises(app.gr.Error) as refused:
            space.generate(*arguments)
        assert refused.value.message == message


def fake_hub_cache(cache: Path, repo_id: str, pipeline_folder: Path) -> None:
    """A Hugging Face cache holding `pipeline_folder` as the snapshot of `repo_id` (what `hf download` leaves)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    shutil.copytree(pipeline_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_hub_ids_are_served_only_when_allowed_and_never_read_from_the_servers_disk(app, models, tmp_path,
                                                                                     monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    fake_hub_cache(tmp_path / "hub", "org/tiny", models[0])
    (tmp_path / "work" / "local").mkdir(parents=True)  # a pipeline folder at the relative path `local/model`
    shutil.copytree(models[0], tmp_path / "work" / "local" / "model")
    monkeypatch.chdir(tmp_path / "work")

    configured = app.Space(app.load_config(["--models", f"hub=org/tiny,{models[1]}"], environ={}))
    assert len(configured.generate(3, 2, 0.7, 2, "hub")) == 2  # a configured Hub id, from the cache
    for value in ["org/tiny", "local/model"]:  # Hub ids beyond the configured ones need --allow_hub
        with pytest.raises(app.gr.Error) as refused:
            configured.generate(3, 1, 0.7, 1, value)
        assert refused.value.message == f"Unknown model {value!r}; this Space serves: hub, tiny-no-discriminator."

    open_space = app.Space(app.load_config(["--models", str(models[1]), "--allow_hub"], environ={}))
    direct = TransGANPipeline.from_pretrained(models[0])(generator=torch.Generator().manual_seed(3),
                                                         truncation=0.7).images[0]
    served = open_space.generate(3, 1, 0.7, 1, "org/tiny")
    assert np.abs(pixels(served[0][0]) - pipeline_pixels(direct)).max() <= 1
    assert open_space.describe_model("org/tiny")[0].startswith("**Model** `org/tiny`")
    # `local/model` exists here as a folder, `org/missing` nowhere: both are Hub ids, answered alike from the cache.
    for value in ["local/model", "org/missing"]:
        with pytest.raises(app.gr.Error) as refused:
            open_space.generate(0, 1, 0.7, 1, value)
        assert refused.value.message == (f"Cannot load model {value!r}: it is not in the Space's Hugging Face cache "
                                         "and the Hub cannot be reached.")
    for value in ["/proc/self", "./local/model", "local/model/generator", "a--b/c"]:  # paths and invalid ids
        with pytest.raises(app.gr.Error) as refused:
            open_space.generate(0, 1, 0.7, 1, value)
        assert refused.value.message == (f"Unknown model {value!r}; this Space serves: tiny-no-discriminator, or any "
                                         "Hub repo id (org/name).")


def test_outputs_are_written_whole_with_the_users_umask(app, space, monkeypatch, tmp_path):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    old_mask = os.umask(0o027)
    try:
        images = space.generate(0, 2, 0.7, 1, None)
    finally:
        os.umask(old_mask)
    for path, _ in images:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
        assert [entry.name for entry in Path(path).parent.iterdir()] == [Path(path).name]  # no temporary left


def test_the_grid_download_takes_a_bounded_gallery(app, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.new("RGB", (16, 16)).save(small)
    Image.new("1", (app.MAX_GRID_IMAGE_SIDE + 1, 8)).save(large)
    assert app.grid_download([(str(small), None)] * 4).interactive
    with pytest.raises(app.gr.Error, match="A grid holds at most 64 images, got 65"):
        app.grid_download([(str(small), None)] * 65)
    with pytest.raises(app.gr.Error, match="at most 1024 pixels a side, got 1025×8"):
        app.grid_download([(str(small), None), (str(large), None)])


def test_pipeline_cache_loads_each_model_once_and_evicts_the_least_recent(app, space, monkeypatch):
    loads = []
    real_load = app.load_model

    def counting_load(model):
        loads.append(model.name)
        time.sleep(0.2)  # long enough for the other threads to ask for the same model meanwhile
        return real_load(model)

    monkeypatch.setattr(app, "load_model", counting_load)
    cache = app.PipelineCache(max_models=1)
    first, second = space.config.models
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(first))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1 and all(result is results[0] for result in results)
    cache.get(second)  # evicts the first model (max_models=1)
    assert first.name not in cache and second.name in cache
    assert cache.get(first) is not results[0] and len(loads) == 3


def test_a_slow_model_load_does_not_hold_up_requests_for_a_loaded_model(app, space, monkeypatch):
    cache = app.PipelineCache(max_models=2)
    first, second = space.config.models
    loaded = cache.get(first)
    release = threading.Event()
    real_load = app.load_model
    monkeypatch.setattr(app, "load_model", lambda model: release.wait(10) and real_load(model))
    slow = threading.Thread(target=cache.get, args=(second,))
    slow.start()
    try:
        start = time.monotonic()
        assert cache.get(first) is loaded and time.monotonic() - start < 1
        assert second.name not in cache
    finally:
        release.set()
        slow.join()
    assert second.name in cache


def test_a_failed_load_is_reported_by_model_name_and_retried(app, tmp_path):
    broken = tmp_path / "secret-location" / "broken"
    broken.mkdir(parents=True)
    (broken / "model_index.json").write_text("{not json")
    space = app.Space(app.load_config(["--models", f"mine={broken}"], environ={}))
    for _ in range(2):  # not cached as a failure, and no load lock left behind
        with pytest.raises(app.gr.Error, match="Cannot load model 'mine': .*not valid JSON") as refused:
            space.generate(0, 1, 0.7, 1, "mine")
        assert "secret-location" not in refused.value.message  # the operator's folder is not shown to callers
    assert not space.pipelines._loading


def test_the_model_card_panel_shows_the_cards_images(app, tmp_path):
    """The card names its sample grid relative to the model folder, which Gradio does not serve: a local folder's
    image is inlined, a Hub repo's comes from the Hub, and nothing outside the folder is ever read."""
    import base64

    from helpers import tiny_pipeline

    folder = tmp_path / "with-samples"
    tiny_pipeline().save_pretrained(folder, model_card_kwargs={"samples_image": "samples.png"})
    Image.new("RGB", (8, 8), (200, 10, 10)).save(folder / "samples.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.png")
    readme = folder / "README.md"
    readme.write_text(readme.read_text() + "\n![outside](../secret.png) ![web](https://example.org/a.png)\n")
    space = app.Space(app.load_config(["--models", f"mine={folder}"], environ={}))
    _, card = space.describe_model("mine")
    inlined = base64.b64encode((folder / "samples.png").read_bytes()).decode()
    assert f"![Samples from this model](data:image/png;base64,{inlined})" in card
    assert "](samples.png)" not in card and "secret.png" not in card and "*(outside: not shown here)*" in card
    assert "![web](https://example.org/a.png)" in card and not card.startswith("---")

    hub_model = app.LoadedModel(model=app.ServedModel("org/x", "org/x", is_hub=True), pipeline=None, folder=folder)
    assert "![Samples from this model](https://huggingface.co/org/x/resolve/main/samples.png)" in hub_model.model_card()
    (folder / "samples.png").write_bytes(b"\0" * (app.MAX_CARD_IMAGE_BYTES + 1))
    local = app.LoadedModel(model=app.ServedModel("mine", str(folder), is_hub=False), pipeline=None, folder=folder)
    assert "*(Samples from this model: not shown here)*" in local.model_card()  # too large to inline


def test_the_model_card_panel_wraps_whole_words(app, space):
    """Gradio's Markdown wraps with `overflow-wrap: anywhere`, which cuts the card's words mid-word in narrow table
    columns; the panel's CSS wraps at word boundaries and lets wide tables scroll instead."""
    import re

    demo = app.build_demo(space)
    panel = [block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "model_card"]
    assert len(panel) == 1 and isinstance(panel[0], app.gr.Markdown)
    rules = {selector.strip(): body for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", app.CSS)
             for selector in selectors.split(",")}
    declarations = {name.strip(): value.strip() for name, _, value in
                    (part.partition(":") for part in rules["#model_card *"].split(";") if part.strip())}
    assert declarations["overflow-wrap"] == "break-word" and declarations["word-break"] == "normal"
    assert "overflow-x: auto" in rules["#model_card table"]


# ---------------------------------------------------------------------------------------------------------------------
# The Projection tab (in-process: its event is not part of the public API)
# ---------------------------------------------------------------------------------------------------------------------


def drawn_stroke(side: int = 256) -> Image.Image:
    """A white vertical stroke on the black canvas, as the sketchpad's composite holds it."""
    from PIL import ImageDraw

    image = Image.new("RGB", (side, side))
    ImageDraw.Draw(image).line([(side // 2, side // 6), (side // 2, side - side // 6)], fill="white", width=18)
    return image


def test_the_projection_tab_projects_a_drawing_and_walks_to_the_sample(app, space, models, monkeypatch, tmp_path):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    drawing = {"background": None, "layers": [], "composite": drawn_stroke()}
    result, frames, gif = space.project(drawing, 20, 3, 5)
    assert [caption for _, caption in result] == ["your image, as the model sees it", "its projection"]
    assert [caption for _, caption in frames] == ["0/4", "1/4", "2/4", "3/4", "4/4"]

    pipeline = TransGANPipeline.from_pretrained(models[0])
    pipeline.set_progress_bar_config(disable=True)
    expected = pipeline.project(drawn_stroke(), num_steps=20, generator=torch.Generator().manual_seed(0))
    assert np.abs(pixels(result[1][0]) - pipeline_pixels(expected.images[0])).max() <= 1
    seen = np.asarray(Image.open(result[0][0]).convert("L"), dtype=np.int16)
    assert seen.shape == (16, 16) and seen[4:12, 7:9].max(axis=1).min() > 120 and seen[:, :4].max() < 30  # 16 px
    assert np.array_equal(pixels(frames[0][0]), pixels(result[1][0]))  # the walk starts at the projection
    end = pipeline.sample_latents(1, torch.Generator().manual_seed(3), truncation=app.DEFAULT_TRUNCATION)
    sample = pipeline(latents=end, generator=torch.Generator().manual_seed(0)).images[0]  # the projection's noise
    assert np.abs(pixels(frames[-1][0]) - pipeline_pixels(sample)).max() <= 1
    with Image.open(gif) as animation:
        assert animation.format == "GIF" and animation.n_frames > 1


def test_the_projection_tab_refuses_what_it_cannot_project(app, space, models, tmp_path):
    stroke = drawn_stroke()
    for arguments, message in [
        ((None, 20, 0, 4), "Draw a digit or upload an image first."),
        (({"composite": None, "layers": []}, 20, 0, 4), "Draw a digit or upload an image first."),
        (({"composite": Image.new("RGB", (256, 256))}, 20, 0, 4),
         "The image is blank: draw something or upload an image."),
        (("digit.png", 20, 0, 4), "The image must be a picture, got 'digit.png'."),  # never a path on the server
        ((stroke, 0, 0, 4), "Steps must be a whole number from 1 to 500, got 0."),
        ((stroke, 501, 0, 4), "Steps must be a whole number from 1 to 500, got 501."),
        ((stroke, 20, -1, 4), "Seed of the sample must be a whole number from 0 to 4294967295, got -1."),
        ((stroke, 20, 0, 1), "Frames must be a whole number from 2 to 32, got 1."),
        ((stroke, 20, 0, float("nan")), "Frames must be a whole number from 2 to 32, got nan."),
    ]:
        with pytest.raises(app.gr.Error) as refused:
            space.project(*arguments)
        assert refused.value.message == message
    for value in not_a_model_values(tmp_path, models):
        with pytest.raises(app.gr.Error) as refused:
            space.project(stroke, 20, 0, 4, value)
        assert refused.value.message == f"Unknown model {value!r}; this Space serves: tiny, tiny-no-discriminator."


def test_the_sketchpad_draws_white_on_black_and_its_payload_reaches_the_handler(app, space, tmp_path):
    """The canvas is opaque black (a transparent one would be flattened on white, and a white stroke would vanish), the
    brush white, as the demo model's digits; Gradio's preprocessing of a drawing gives the handler its composite."""
    from gradio.components.image_editor import EditorData
    from gradio.data_classes import FileData

    demo = app.build_demo(space)
    sketchpad = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "drawing")
    assert isinstance(sketchpad, app.gr.Sketchpad) and sketchpad.brush.default_color == "#ffffff"
    with Image.open(sketchpad.value["background"]["path"]) as background:
        assert background.convert("RGB").getextrema() == ((0, 0),) * 3
    stroke = tmp_path / "composite.png"
    drawn_stroke().save(stroke)
    value = sketchpad.preprocess(EditorData(background=None, layers=[], composite=FileData(path=str(stroke))))
    assert app.drawn_image(value).getextrema() == ((0, 255),) * 3
