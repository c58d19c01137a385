"""TransGAN demo Space: sample a TransGAN pipeline by seed, let its discriminator pick the best of N, and walk the
latent space between two seeds.

Run it locally with `python spaces/app.py` (Gradio serves on `GRADIO_SERVER_PORT`, default 7860). The model is the
`TRANSGAN_MODEL` environment variable (a Hub repo id or a pipeline folder), else the demo model bundled with the
package; the Model box switches to any other pipeline. Programmatic use (`gradio_client`): see spaces/README.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import torch
from gradio.utils import get_upload_folder
from PIL import Image

import transgan_hf
from transgan_hf import TransGANPipeline
from transgan_hf.commands.generate import image_grid
from transgan_hf.pipeline_transgan import looks_like_local_path, resolve_pipeline_folder


def env_positive_int(name: str, default: int) -> int:
    """An integer setting from the environment; a clear error at start-up instead of a broken queue."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"Environment variable {name}={text!r} must be a whole number >= 1 (default {default}).")
    return int(text)


# Limits that keep one request from taking the (CPU) machine. Seeds stay below 2**32 so that browsers (float64
# numbers) show them exactly.
MAX_SEED = 2**32 - 1
MAX_IMAGES = 64
MAX_CANDIDATES = 8
MAX_SAMPLES_PER_REQUEST = 256
"""Images times candidates: generator samples one request may draw."""
SAMPLES_PER_FORWARD = 64
"""Samples per forward pass: bounds the activation memory of a request."""
MAX_STEPS = 32
GIF_MIN_SIDE = 192
"""Interpolation GIFs are enlarged by a whole factor (nearest neighbour) to at least this many pixels."""
GIF_FRAME_MS = 120
DEFAULT_TRUNCATION = 0.7

# Serving: a CPU Space (2 vCPU) runs at most CONCURRENCY_LIMIT samplings at once (torch already uses every core in
# each), QUEUE_MAX_SIZE more wait, and later requests are told the queue is full. At most MAX_CACHED_MODELS loaded
# pipelines stay in memory.
CONCURRENCY_LIMIT = env_positive_int("TRANSGAN_CONCURRENCY", 2)
QUEUE_MAX_SIZE = env_positive_int("TRANSGAN_QUEUE_SIZE", 32)
MAX_CACHED_MODELS = env_positive_int("TRANSGAN_CACHED_MODELS", 2)

DEMO_MODEL_DIR = Path(transgan_hf.DEMO_MODEL_PATH)
PAPER_URL = "https://arxiv.org/abs/2102.07074"
HUB_URL = "https://huggingface.co"
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

INTRO = f"""\
# TransGAN: a GAN made of two transformers

[TransGAN]({PAPER_URL}) (Jiang, Chang & Wang, NeurIPS 2021) generates images without a single convolution. The
**generator** turns a random latent vector into a small grid of tokens and runs transformer blocks on it, doubling
the grid's resolution between stages (pixel shuffle) and using local "grid" self-attention where the grid gets large.
The **discriminator** is a multi-scale vision transformer that looks at patches of several sizes and scores how real
an image looks. Every image here comes from one **seed**: the same seed always gives the same image.
"""

API_HELP = """\
**API** (`pip install gradio_client`): `Client(url).predict(seed, num_images, truncation, num_candidates,
api_name="/generate")` returns the gallery; `Client(url).predict(seed_a, seed_b, num_steps, api_name="/interpolate")`
returns the frames and the GIF. Both take an optional `model` (Hub id or folder) last. Details in the Space README.
"""

CSS = """
.pixelated img { image-rendering: pixelated; }
"""


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------


def default_model() -> str:
    """The model shown at start: `TRANSGAN_MODEL`, else the demo pipeline bundled with the package."""
    name = os.environ.get("TRANSGAN_MODEL", "").strip()
    if name:
        return name
    if (DEMO_MODEL_DIR / "model_index.json").is_file():
        return str(DEMO_MODEL_DIR)
    raise OSError(
        "No model to show: set the TRANSGAN_MODEL environment variable to a Hub repo id (org/name) or a saved "
        f"TransGANPipeline folder, or type one into the Model box. The bundled demo model ({DEMO_MODEL_DIR}) is not "
        "installed."
    )


@dataclass
class LoadedModel:
    name: str
    pipeline: TransGANPipeline
    folder: Path

    @property
    def is_hub_repo(self) -> bool:
        return not os.path.isdir(self.name)

    def summary(self) -> str:
        """One line for the UI: what the model makes and where its model card is."""
        config = self.pipeline.generator.config
        parameters = sum(p.numel() for p in self.pipeline.generator.parameters()) / 1e6
        channels = {1: "grayscale", 3: "RGB"}.get(config.out_channels, f"{config.out_channels}-channel")
        discriminator = ("yes: *best of N* is available" if self.pipeline.discriminator is not None
                         else "no (saved without one): *best of N* needs N = 1")
        card = (f"[model card on the Hub]({HUB_URL}/{self.name})" if self.is_hub_repo
                else "model card: *Model card* below")
        return (f"**Model** `{self.name}`: {config.image_size}×{config.image_size} {channels} images, latent size "
                f"{config.latent_dim}, {parameters:.1f} M generator parameters; discriminator: {discriminator}; "
                f"{card}.")

    def model_card(self) -> str:
        """The folder's README.md without its YAML metadata (the Hub shows the same text)."""
        readme = self.folder / "README.md"
        if not readme.is_file():
            return "This model folder has no README.md model card."
        text = readme.read_text(encoding="utf-8", errors="replace")
        return re.sub(r"\A---\s*\n.*?\n---\s*\n", "", text, count=1, flags=re.DOTALL)


class PipelineCache:
    """Loaded pipelines by model name, the `max_models` most recently used ones.

    Each model is loaded once: requests for a model that is being loaded wait for that load, while requests for
    other models go on (a slow Hub download does not hold up the model everyone else uses).
    """

    def __init__(self, max_models: int) -> None:
        self.max_models = max_models
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()  # guards the two dicts, never held while loading

    def get(self, name: str | None) -> LoadedModel:
        key = canonical_model_name(name)
        with self._lock:
            if (model := self._cached(key)) is not None:
                return model
            load_lock = self._loading.setdefault(key, threading.Lock())
        with load_lock:
            with self._lock:
                if (model := self._cached(key)) is not None:  # loaded while this request waited
                    return model
            try:
                model = load_model(key)
            except BaseException:
                with self._lock:
                    self._loading.pop(key, None)
                raise
            with self._lock:  # cached and no longer loading in one step, so that no request starts a second load
                self._models[key] = model
                self._loading.pop(key, None)
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
            return model

    def _cached(self, key: str) -> LoadedModel | None:
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        return None

    def __contains__(self, name: str) -> bool:
        return canonical_model_name(name) in self._models


def canonical_model_name(name: str | None) -> str:
    """The cache key of a model: an absolute path for folders, the repo id otherwise; empty means the default."""
    if name is not None and not isinstance(name, str):
        raise ValueError(f"Model must be a Hub repo id (org/name) or a folder path, got {name!r}.")
    name = (name or "").strip() or default_model()
    path = Path(name).expanduser()
    if path.is_dir() or looks_like_local_path(name):
        return str(path.resolve())
    return name


def load_model(name: str) -> LoadedModel:
    """Resolve (Hub snapshot or folder) and load a pipeline; any failure becomes an `OSError` that names the model."""
    try:
        folder = resolve_pipeline_folder(name)
        pipeline = TransGANPipeline.from_pretrained(folder).to(DEVICE)
    except OSError as error:
        raise OSError(f"Cannot load model {name!r}: {error}") from None
    except Exception as error:  # a broken folder can fail in many ways (bad config, corrupt weights...)
        raise OSError(f"Cannot load model {name!r}: {type(error).__name__}: {error}") from None
    return LoadedModel(name=name, pipeline=pipeline, folder=folder)


PIPELINES = PipelineCache(MAX_CACHED_MODELS)


# ---------------------------------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show what the user can fix as a `gr.Error` message (never a traceback); the app keeps serving."""
    try:
        yield
    except gr.Error:
        raise
    except torch.OutOfMemoryError:
        raise gr.Error("Out of memory: ask for fewer images or candidates.", print_exception=False) from None
    except (ValueError, OSError) as error:
        raise gr.Error(str(error), print_exception=False) from None


def whole_number(label: str, value: Any, low: int, high: int) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value != int(value) or not low <= value <= high):
        raise ValueError(f"{label} must be a whole number from {low} to {high}, got {value!r}.")
    return int(value)


def truncation_value(value: Any) -> float | None:
    """The UI's truncation (0 = off) as the pipeline's (None = plain normal latents)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"Truncation must be a number from 0 (off) to 1, got {value!r}.")
    return float(value) or None


# ---------------------------------------------------------------------------------------------------------------------
# Event handlers (the two public API endpoints, and UI helpers)
# ---------------------------------------------------------------------------------------------------------------------


def generate(
    seed: int,
    num_images: int,
    truncation: float,
    num_candidates: int,
    model: str | None = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's way of asking for a progress tracker)
) -> list[tuple[str, str]]:
    """Images for seeds `seed`, `seed + 1`, ..., each with its seed as caption.

    Args:
        seed: seed of the first image; image i uses `seed + i` (the same image in any request).
        num_images: how many images (1-64).
        truncation: 0 for plain normal latents, else t in (0, 1]: latents restricted to [-2, 2] and scaled by t
            (smaller t: cleaner, less varied images).
        num_candidates: N > 1 draws N candidates per image and keeps the one the discriminator scores highest.
        model: Hub repo id or pipeline folder (default: the Space's model).
    """
    with user_errors():
        seed = whole_number("Seed", seed, 0, MAX_SEED)
        num_images = whole_number("Number of images", num_images, 1, MAX_IMAGES)
        truncation = truncation_value(truncation)
        num_candidates = whole_number("Best of N (candidates)", num_candidates, 1, MAX_CANDIDATES)
        if num_images * num_candidates > MAX_SAMPLES_PER_REQUEST:
            raise ValueError(
                f"{num_images} images x {num_candidates} candidates = {num_images * num_candidates} samples; one "
                f"request may draw at most {MAX_SAMPLES_PER_REQUEST}. Ask for fewer images or candidates."
            )
        pipeline = PIPELINES.get(model).pipeline
        if num_candidates > 1 and pipeline.discriminator is None:
            raise ValueError("This model was saved without its discriminator, so it cannot pick the best of N; set "
                             "N to 1 or choose a model saved with its discriminator.")
        images_per_pass = max(1, SAMPLES_PER_FORWARD // num_candidates)
        images = []
        for start in range(0, num_images, images_per_pass):
            progress(start / num_images, desc="Generating")
            seeds = range(seed + start, seed + min(start + images_per_pass, num_images))
            images += pipeline(
                batch_size=len(seeds),
                generator=[torch.Generator().manual_seed(s) for s in seeds],
                truncation=truncation,
                num_candidates=num_candidates,
                output_type="pil",
            ).images
    return [(save_png(image, f"seed{seed + i}.png"), f"seed {seed + i}") for i, image in enumerate(images)]


def interpolate(
    seed_a: int,
    seed_b: int,
    num_steps: int,
    truncation: float = DEFAULT_TRUNCATION,
    model: str | None = None,
) -> tuple[list[tuple[str, str]], str]:
    """Frames along the spherical path between the latents of two seeds, and an animated GIF of them.

    Args:
        seed_a, seed_b: seeds of the first and last frame.
        num_steps: number of frames, end points included (2-32).
        truncation: as in `/generate` (0 = off).
        model: Hub repo id or pipeline folder (default: the Space's model).
    """
    with user_errors():
        seed_a = whole_number("Start seed", seed_a, 0, MAX_SEED)
        seed_b = whole_number("End seed", seed_b, 0, MAX_SEED)
        num_steps = whole_number("Steps", num_steps, 2, MAX_STEPS)
        truncation = truncation_value(truncation)
        pipeline = PIPELINES.get(model).pipeline
        frames = pipeline.interpolate(seed_a, seed_b, num_steps=num_steps, truncation=truncation,
                                      output_type="pil").images
    gif_path = save_to_gradio_cache(animated_gif(frames), f"transgan-{seed_a}-to-{seed_b}.gif")
    return [(save_png(frame, f"frame{i}.png"), f"{i}/{num_steps - 1}") for i, frame in enumerate(frames)], gif_path


def grid_download(gallery: list[tuple[str, str | None]] | None) -> gr.DownloadButton:
    """The gallery as one PNG grid behind the download button."""
    if not gallery:
        return gr.DownloadButton(value=None, interactive=False)
    images = []
    for path, _ in gallery:
        with Image.open(path) as image:
            images.append(image.copy())
    return gr.DownloadButton(value=save_png(image_grid(images), "transgan-grid.png"), interactive=True)


def describe_model(model: str | None) -> tuple[str, str]:
    """Load the chosen model (warming the cache) and describe it; problems are shown in place, not as pop-ups."""
    try:
        loaded = PIPELINES.get(model)
    except (ValueError, OSError) as error:
        return f"⚠️ {error}", ""
    return loaded.summary(), loaded.model_card()


# ---------------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------------


def animated_gif(frames: list[Image.Image]) -> bytes:
    """A looping GIF that plays the frames forwards and back, enlarged so that small images stay visible."""
    scale = max(1, math.ceil(GIF_MIN_SIDE / frames[0].width))
    frames = [frame.convert("RGB").resize((frame.width * scale, frame.height * scale), Image.Resampling.NEAREST)
              for frame in frames]
    there_and_back = frames + frames[-2:0:-1]
    buffer = io.BytesIO()
    there_and_back[0].save(buffer, format="GIF", save_all=True, append_images=there_and_back[1:],
                           duration=GIF_FRAME_MS, loop=0)
    return buffer.getvalue()


def save_png(image: Image.Image, file_name: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return save_to_gradio_cache(buffer.getvalue(), file_name)


def save_to_gradio_cache(data: bytes, file_name: str) -> str:
    """A content-addressed file in Gradio's cache folder, which Gradio serves as is and `delete_cache` cleans up.

    Outputs are written here rather than returned as PIL images because Gradio rewrites its cached copy of an image in
    place each time the image is returned again, and a concurrent request that got the same image (same seed) may be
    downloading that file at that moment (seen in the load test). Here a file is written once, under a temporary name,
    then renamed into place; an existing one is only touched, so that `delete_cache` ages it from its latest use.
    """
    path = Path(get_upload_folder()) / hashlib.sha256(data).hexdigest() / file_name
    if path.is_file():
        os.utime(path)
        return str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{file_name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return str(path)


# ---------------------------------------------------------------------------------------------------------------------
# UI
# ---------------------------------------------------------------------------------------------------------------------


def build_demo() -> gr.Blocks:
    try:
        initial_model, startup_problem = default_model(), None
    except OSError as error:
        initial_model, startup_problem = "", f"⚠️ {error}"
    # The handlers check their inputs themselves (preprocess=False): the messages then name the field, for API
    # callers too, where Gradio's own bound checks say only "Value 100 is greater than maximum value 64".
    sampling = {"concurrency_limit": CONCURRENCY_LIMIT, "concurrency_id": "sampling", "preprocess": False}

    with gr.Blocks(title="TransGAN", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(INTRO)
        model_box = gr.Textbox(value=initial_model, label="Model", max_lines=1, elem_id="model",
                               info="Hub repo id (org/name) or local pipeline folder (press Enter to load it).")
        model_info = gr.Markdown(startup_problem or "Loading the model…")
        with gr.Accordion("Model card", open=False):
            model_card = gr.Markdown()

        with gr.Tabs():
            with gr.Tab("Generate"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        with gr.Row(equal_height=True):
                            seed = gr.Number(value=0, label="Seed", precision=0, minimum=0, maximum=MAX_SEED,
                                             scale=3, elem_id="seed")
                            random_seed = gr.Button("Random seed", scale=1, min_width=100)
                        num_images = gr.Slider(1, MAX_IMAGES, value=16, step=1, precision=0, label="Number of images",
                                               info="Image i uses seed + i.", elem_id="num_images")
                        truncation = gr.Slider(0, 1, value=DEFAULT_TRUNCATION, step=0.05, label="Truncation",
                                               info="0 = off. Lower values give cleaner but less varied images.")
                        num_candidates = gr.Slider(1, MAX_CANDIDATES, value=1, step=1, precision=0,
                                                   label="Discriminator picks the best of N",
                                                   info="Draw N candidates per image; keep the one the "
                                                        "discriminator finds most realistic.", elem_id="num_candidates")
                        generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
                        download = gr.DownloadButton("Download grid (PNG)", interactive=False, elem_id="download")
                    with gr.Column(scale=2):
                        gallery = gr.Gallery(label="Samples", columns=6, height="auto", type="filepath",
                                             object_fit="contain", interactive=False, elem_id="gallery",
                                             elem_classes="pixelated", buttons=["download", "fullscreen"])
                gr.Examples(
                    examples=[[0, 16, 0.7, 1], [2021, 64, 0.0, 1], [7, 8, 0.6, 4]],
                    inputs=[seed, num_images, truncation, num_candidates],
                    example_labels=["16 images, truncation 0.7", "64 images, no truncation",
                                    "8 images, best of 4 by the discriminator"],
                )

            with gr.Tab("Interpolation"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        seed_a = gr.Number(value=0, label="Start seed", precision=0, minimum=0, maximum=MAX_SEED)
                        seed_b = gr.Number(value=1, label="End seed", precision=0, minimum=0, maximum=MAX_SEED)
                        num_steps = gr.Slider(2, MAX_STEPS, value=8, step=1, precision=0, label="Steps",
                                              info="Frames, both end points included.")
                        interpolation_truncation = gr.Slider(0, 1, value=DEFAULT_TRUNCATION, step=0.05,
                                                             label="Truncation", info="0 = off.")
                        interpolate_button = gr.Button("Interpolate", variant="primary", elem_id="interpolate")
                    with gr.Column(scale=2):
                        frames = gr.Gallery(label="Frames", columns=6, height="auto",
                                            object_fit="contain", interactive=False, elem_classes="pixelated",
                                            elem_id="frames")
                        animation = gr.Image(label="Animation (GIF)", type="filepath", interactive=False,
                                             buttons=["download"], elem_id="animation")
                gr.Examples(
                    examples=[[0, 1, 8, 0.7], [3, 10, 16, 0.0], [42, 1234, 32, 0.8]],
                    inputs=[seed_a, seed_b, num_steps, interpolation_truncation],
                )
        gr.Markdown(API_HELP)

        random_seed.click(None, outputs=seed, js=f"() => Math.floor(Math.random() * {MAX_SEED + 1})")
        generate_event = generate_button.click(
            generate, inputs=[seed, num_images, truncation, num_candidates, model_box], outputs=gallery,
            api_name="generate", **sampling,
        )
        generate_event.success(grid_download, inputs=gallery, outputs=download, api_visibility="private")
        interpolate_button.click(
            interpolate, inputs=[seed_a, seed_b, num_steps, interpolation_truncation, model_box],
            outputs=[frames, animation], api_name="interpolate", **sampling,
        )
        gr.on([demo.load, model_box.submit, model_box.blur], describe_model, inputs=model_box,
              outputs=[model_info, model_card], api_visibility="private")

    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=CONCURRENCY_LIMIT)
    return demo


def launch(demo: gr.Blocks, **kwargs: Any) -> tuple:
    """`demo.launch` with the Space's styling; server name and port come from Gradio's own environment variables
    (`GRADIO_SERVER_NAME`, `GRADIO_SERVER_PORT`) unless given."""
    return demo.launch(css=CSS, **kwargs)


demo = build_demo()

if __name__ == "__main__":
    launch(demo)
