"""The Space in a real browser: headless Debian Chromium driven by Playwright (never a browser Playwright downloads)
loads the page, fills the inputs from an example, clicks Generate, waits for the gallery, downloads the PNG grid,
runs an interpolation, switches models in the Model list, shows an error as a message and keeps working, and saves a
screenshot.

To refresh spaces/screenshot.png with another model folder (e.g. the bundled demo model):
    SPACE_SCREENSHOT=spaces/screenshot.png SPACE_SCREENSHOT_MODEL=transgan_hf/demo pytest tests/test_space_browser.py
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the Space tests need the [space] extra")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (scripts/install.sh)")
from helpers import free_port, import_app, save_space_models, space_models_setting  # noqa: E402

from transgan_hf import TransGANGeneratorConfig  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a closed network: without the background-networking ones Chromium keeps trying to reach Google.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """The served models: the default one (the screenshot's, if given) and `tiny-no-discriminator`."""
    full, generator_only = save_space_models(tmp_path_factory.mktemp("models"))
    if os.environ.get("SPACE_SCREENSHOT_MODEL"):
        return Path(os.environ["SPACE_SCREENSHOT_MODEL"]).resolve(), generator_only
    return full, generator_only


@pytest.fixture(scope="module")
def model(models) -> Path:
    return models[0]


@pytest.fixture(scope="module")
def image_size(model) -> int:
    return TransGANGeneratorConfig.from_pretrained(model / "generator").image_size


@pytest.fixture(scope="module")
def space_url(models, tmp_path_factory):
    """The app launched in this process on a free port (as `python spaces/app.py` would, with the Space's CSS)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        env.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))
        app = import_app()
        demo = app.build_demo(app.Space(app.load_config(["--models", space_models_setting(models)], environ={})))
        _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                               quiet=True)
        try:
            yield url
        finally:
            demo.close()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (scripts/install.sh installs Debian's chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, space_url):
    page = browser.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(space_url)
    yield page
    page.close()  # also ends the page's event stream, so that the server closes quickly


def test_generate_in_the_browser(page, image_size, tmp_path):
    sync_api.expect(page.get_by_text(f"{image_size}×{image_size}")).to_be_visible()  # the model summary

    page.get_by_role("button", name="8 images, best of 4 by the discriminator").click()  # example fills the inputs
    sync_api.expect(page.locator("#seed input")).to_have_value("7")
    sync_api.expect(page.locator("#num_images input[type=number]")).to_have_value("8")
    sync_api.expect(page.locator("#num_candidates input[type=number]")).to_have_value("4")
    page.get_by_role("button", name="Generate", exact=True).click()
    sync_api.expect(page.locator("#gallery img")).to_have_count(8)
    sync_api.expect(page.locator("#gallery").get_by_text("seed 14")).to_be_visible()  # seeds 7..14
    page.wait_for_function("[...document.querySelectorAll('#gallery img')].every(img => img.complete)")
    screenshot = tmp_path / "space.png"
    page.screenshot(path=screenshot, full_page=True)
    if os.environ.get("SPACE_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["SPACE_SCREENSHOT"])
    with Image.open(screenshot) as image:
        assert image.width == 1280 and image.height >= 900

    sync_api.expect(page.locator("#download")).to_be_enabled()
    with page.expect_download() as download_info:
        page.locator("#download").click()
    grid_path = tmp_path / "grid.png"
    download_info.value.save_as(grid_path)
    with Image.open(grid_path) as grid:  # 8 images in a 3x3 grid
        assert grid.format == "PNG" and grid.size == (3 * image_size, 3 * image_size)


def test_interpolate_in_the_browser(page):
    page.get_by_role("tab", name="Interpolation").click()
    page.get_by_role("button", name="Interpolate", exact=True).click()
    sync_api.expect(page.locator("#frames img")).to_have_count(8)  # default: 8 steps
    sync_api.expect(page.locator("#animation img")).to_have_attribute("src", re.compile(r"\.gif$"))


def choose_model(page, name: str) -> None:
    page.locator("#model input").click()
    page.get_by_role("option", name=name, exact=True).click()
    sync_api.expect(page.locator("#model input")).to_have_value(name)


def test_errors_show_as_messages_and_the_app_keeps_working(page, model):
    choose_model(page, "tiny-no-discriminator")
    sync_api.expect(page.get_by_text("saved without one")).to_be_visible()  # the summary follows the choice
    page.get_by_role("button", name="8 images, best of 4 by the discriminator").click()
    page.get_by_role("button", name="Generate", exact=True).click()
    sync_api.expect(page.get_by_text("saved without its discriminator").first).to_be_visible()
    assert "Traceback" not in page.content()

    choose_model(page, model.name)
    page.get_by_role("button", name="Generate", exact=True).click()
    sync_api.expect(page.locator("#gallery img")).to_have_count(8)
