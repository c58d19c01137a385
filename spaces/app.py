"""TransGAN demo Space: sample a TransGAN pipeline by seed, let its discriminator pick the best of N, walk the
latent space between two seeds, and project a drawing or an image into it.

Run it locally with `python spaces/app.py` (`--help` lists the options; Gradio serves on `GRADIO_SERVER_PORT`,
default 7860). The Space serves only the models its operator configured (`TRANSGAN_SPACE_MODELS`, default the demo
model bundled with the package), and callers pick one by name, so that no request can name a file on the server.
Programmatic use (`gradio_client`): see spaces/README.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import math
import os
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, unquote

import gradio as gr
import torch
from gradio.utils import get_upload_folder
from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from PIL import Image

import transgan_hf
from transgan_hf import TransGANPipeline
from transgan_hf.atomic_files import write_bytes_atomically
from transgan_hf.hub import HUB_FILES
from transgan_hf.images import image_grid
from transgan_hf.projection import target_pixels
from transgan_hf.sampling import slerp

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
MAX_GRID_IMAGE_SIDE = 1024
"""Largest image (pixels per side) the grid download accepts; the Space's own images are far smaller."""
MAX_UPLOAD_SIZE = "1mb"
"""Largest upload: the Projection tab's drawings and images (a drawn digit is a few kB)."""
GIF_MIN_SIDE = 192
"""Interpolation GIFs are enlarged by a whole factor (nearest neighbour) to at least this many pixels."""
GIF_FRAME_MS = 120
PROJECTION_STEPS = 200
MAX_PROJECTION_STEPS = 500
"""Optimisation steps of one projection: about 10 s for the demo model on one CPU core."""
SKETCH_SIDE = 256
"""Pixels per side of the drawing canvas; drawings are resized to the model's size."""
DEFAULT_TRUNCATION = 0.7

DEMO_MODEL_DIR = Path(transgan_hf.DEMO_MODEL_PATH)
DEMO_MODEL_NAME = "demo"
PAPER_URL = "https://arxiv.org/abs/2102.07074"
HUB_URL = "https://huggingface.co"
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
"""`org/name`: what a caller may pass as a Hub model when the operator allows Hub ids (never a path)."""

INTRO = f"""\
# TransGAN: a GAN made of two transformers

[TransGAN]({PAPER_URL}) (Jiang, Chang & Wang, NeurIPS 2021) generates images without a single convolution. The
**generator** turns a random latent vector into a small grid of tokens and runs transformer blocks on it, doubling
the grid's resolution between stages (pixel shuffle) and using local "grid" self-attention where the grid gets large.
The **discriminator** is a multi-scale vision transformer that looks at patches of several sizes and scores how real
an image looks. Every image here comes from one **seed**: the same seed always gives the same image.
"""

CSS = """
.pixelated img { image-rendering: pixelated; }
#model_card, #model_card * { overflow-wrap: break-word; word-break: normal; }
#model_card table { display: block; overflow-x: auto; border: none; }
"""

ENVIRONMENT_HELP = f"""\
environment variables (a flag, when given, wins):
  TRANSGAN_SPACE_MODELS   = --models
  TRANSGAN_SPACE_ALLOW_HUB= --allow_hub (1/true/yes or 0/false/no)
  TRANSGAN_MODEL          one model, the older spelling of TRANSGAN_SPACE_MODELS (set only one of them)
  TRANSGAN_CONCURRENCY    = --concurrency
  TRANSGAN_QUEUE_SIZE     = --queue_size
  TRANSGAN_CACHED_MODELS  = --cached_models
  GRADIO_SERVER_PORT, GRADIO_SERVER_NAME   Gradio's own: where the app listens (default 127.0.0.1:7860)

examples:
  python spaces/app.py                                   # the bundled demo model, named "{DEMO_MODEL_NAME}"
  python spaces/app.py --models "mnist=./runs/mnist/pipeline, stl10=org/transgan-stl10"
  TRANSGAN_SPACE_MODELS=org/transgan-stl10 TRANSGAN_SPACE_ALLOW_HUB=1 python spaces/app.py
"""


# ---------------------------------------------------------------------------------------------------------------------
# Configuration: what the operator serves
# ---------------------------------------------------------------------------------------------------------------------


class ConfigError(ValueError):
    """A bad setting of the operator's; `main` prints it as one `error:` line and exits with code 2."""


@dataclass(frozen=True)
class ServedModel:
    name: str
    """What callers pass as `model`, and what the UI and every message show (never a server path)."""
    source: str
    """An absolute pipeline folder, or a Hub repo id."""
    is_hub: bool


def is_hub_repo_id(text: str) -> bool:
    """`org/name` and valid on the Hub; decided from the text alone, never from the server's disk."""
    if not HUB_REPO_ID.fullmatch(text):
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class SpaceConfig:
    models: tuple[ServedModel, ...]
    """The models served, by name; the first is the default."""
    allow_hub: bool = False
    """Also serve any Hub repo id a caller names (downloaded on first use)."""
    concurrency: int = 2
    """Samplings run at once: a CPU Space (2 vCPU) gains little from more, as torch uses every core in each."""
    queue_size: int = 32
    """Requests that may wait; later ones are told the queue is full."""
    cached_models: int = 2
    """Loaded pipelines kept in memory, the most recently used ones."""

    @property
    def names(self) -> list[str]:
        return [model.name for model in self.models]

    def choose(self, value: Any) -> ServedModel:
        """The model a request names (empty: the default). The only place a caller's `model` is interpreted.

        Anything else is answered with one message that depends only on the configuration, whatever exists on the
        server's disk: a caller cannot tell an existing path from a missing one.
        """
        if value is None or (isinstance(value, str) and not value.strip()):
            return self.models[0]
        if isinstance(value, str):
            value = value.strip()
            for model in self.models:
                if model.name == value:
                    return model
            if self.allow_hub and is_hub_repo_id(value):
                return ServedModel(name=value, source=value, is_hub=True)
        hub = ", or any Hub repo id (org/name)" if self.allow_hub else ""
        raise ValueError(f"Unknown model {short_repr(value)}; this Space serves: {', '.join(self.names)}{hub}.")


def served_model(name: str, source: str, setting: str) -> ServedModel:
    """One configured model: a pipeline folder (checked now, so that a typo stops the start) or a Hub repo id."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise ConfigError(f"{setting}: the folder {source!r} has no model_index.json; give a folder saved with "
                              "TransGANPipeline.save_pretrained.")
        return ServedModel(name=name or folder.resolve().name, source=str(folder.resolve()), is_hub=False)
    if is_hub_repo_id(source):
        return ServedModel(name=name or source, source=source, is_hub=True)
    raise ConfigError(f"{setting}: {source!r} is neither a folder nor a Hub repo id (org/name); give a saved "
                      "TransGANPipeline folder or a Hub repo id.")


def parse_models(text: str, setting: str) -> tuple[ServedModel, ...]:
    """`name=source, source, ...` (a bare source is named after its folder or repo id)."""
    models: dict[str, ServedModel] = {}
    for entry in (entry.strip() for entry in text.split(",")):
        if not entry:
            continue
        name, source = (part.strip() for part in entry.split("=", 1)) if "=" in entry else ("", entry)
        if not source:
            raise ConfigError(f"{setting}: {entry!r} names no folder or Hub repo id; write name=folder_or_repo_id.")
        model = served_model(name, source, setting)
        if model.name in models:
            raise ConfigError(f"{setting}: two models are named {model.name!r}; name them apart "
                              "(name=folder_or_repo_id).")
        models[model.name] = model
    if not models:
        raise ConfigError(f"{setting} lists no model; give name=folder_or_repo_id entries separated by commas.")
    return tuple(models.values())


def positive_int(setting: str, text: str) -> int:
    text = text.strip()
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{setting} must be a whole number >= 1, got {text!r}.")
    return int(text)


def yes_or_no(setting: str, text: str) -> bool:
    answer = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False, "": False}.get(
        text.strip().lower())
    if answer is None:
        raise ConfigError(f"{setting} must be 1/true/yes or 0/false/no, got {text!r}.")
    return answer


class SpaceArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (python spaces/app.py --help lists the options)")


def build_parser() -> argparse.ArgumentParser:
    parser = SpaceArgumentParser(
        prog="python spaces/app.py",
        description="Serve the TransGAN demo Space (Gradio): sampling by seed, best of N, interpolation, and the\n"
                    "/generate and /interpolate API, for the models configured here and no others.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", metavar="NAME=SOURCE,...",
                        help="the models served, comma-separated: SOURCE is a saved pipeline folder or a Hub repo id "
                             "(org/name), NAME what callers choose (default: the folder's name or the repo id); the "
                             f"first is the default (default: the bundled demo model, named {DEMO_MODEL_NAME!r})")
    parser.add_argument("--allow_hub", action="store_true", default=None,
                        help="also serve any Hub repo id a caller names (default: only the models above)")
    parser.add_argument("--concurrency", metavar="N", help="samplings run at once (default: 2)")
    parser.add_argument("--queue_size", metavar="N", help="requests that may wait (default: 32)")
    parser.add_argument("--cached_models", metavar="N", help="loaded pipelines kept in memory (default: 2)")
    return parser


def load_config(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> SpaceConfig:
    """The configuration from flags, else environment variables, else defaults; `ConfigError` names a bad one."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)

    def setting(flag: str, variable: str) -> tuple[str, str] | None:
        """The given text of a setting and how to name it in a message."""
        if getattr(args, flag) is not None:
            return f"--{flag}", getattr(args, flag)
        if environ.get(variable, "").strip():
            return variable, environ[variable]
        return None

    models = setting("models", "TRANSGAN_SPACE_MODELS")
    if environ.get("TRANSGAN_MODEL", "").strip():
        if models is not None:
            raise ConfigError(f"TRANSGAN_MODEL and {models[0]} are both set; list every model in {models[0]} and "
                              "unset TRANSGAN_MODEL.")
        models = ("TRANSGAN_MODEL", environ["TRANSGAN_MODEL"])
    if models is None:
        if not (DEMO_MODEL_DIR / "model_index.json").is_file():
            raise ConfigError(f"No model to serve: the bundled demo model ({DEMO_MODEL_DIR}) is not installed; set "
                              "TRANSGAN_SPACE_MODELS (or --models) to saved pipeline folders or Hub repo ids.")
        models = ("the bundled demo model", f"{DEMO_MODEL_NAME}={DEMO_MODEL_DIR}")
    allow_hub = True if args.allow_hub else yes_or_no("TRANSGAN_SPACE_ALLOW_HUB",
                                                       environ.get("TRANSGAN_SPACE_ALLOW_HUB", ""))
    numbers = {flag: positive_int(*given) for flag, variable in [("concurrency", "TRANSGAN_CONCURRENCY"),
                                                                  ("queue_size", "TRANSGAN_QUEUE_SIZE"),
                                                                  ("cached_models", "TRANSGAN_CACHED_MODELS")]
               if (given := setting(flag, variable)) is not None}  # the others keep SpaceConfig's defaults
    return SpaceConfig(models=parse_models(models[1], models[0]), allow_hub=allow_hub, **numbers)


def default_model() -> str:
    """The folder or Hub repo id the Space shows first, as configured by the environment."""
    return load_config([]).models[0].source


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------

CARD_IMAGE = re.compile(r'!\[(?P<alt>[^\]]*)\]\((?P<target>[^)\s]+)(?:\s+"[^"]*")?\)')
"""A Markdown image `![alt](target "title")`."""
CARD_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
                    ".webp": "image/webp"}
MAX_CARD_IMAGE_BYTES = 2 * 2**20
"""Largest image of a local model card inlined into the page (the card's sample grid is a few hundred kB)."""


@dataclass
class LoadedModel:
    model: ServedModel
    pipeline: TransGANPipeline
    folder: Path

    def summary(self) -> str:
        """One line for the UI: what the model makes and where its model card is."""
        config = self.pipeline.generator.config
        parameters = sum(p.numel() for p in self.pipeline.generator.parameters()) / 1e6
        channels = {1: "grayscale", 3: "RGB"}.get(config.out_channels, f"{config.out_channels}-channel")
        discriminator = ("yes: *best of N* is available" if self.pipeline.discriminator is not None
                         else "no (saved without one): *best of N* needs N = 1")
        card = (f"[model card on the Hub]({HUB_URL}/{self.model.source})" if self.model.is_hub
                else "model card: *Model card* below")
        return (f"**Model** `{self.model.name}`: {config.image_size}×{config.image_size} {channels} images, latent "
                f"size {config.latent_dim}, {parameters:.1f} M generator parameters; discriminator: {discriminator}; "
                f"{card}.")

    def model_card(self) -> str:
        """The folder's README.md without its YAML metadata (the Hub shows the same text), its images made loadable."""
        readme = self.folder / "README.md"
        if not readme.is_file():
            return "This model folder has no README.md model card."
        text = readme.read_text(encoding="utf-8", errors="replace")
        text = re.sub(r"\A---\s*\n.*?\n---\s*\n", "", text, count=1, flags=re.DOTALL)
        return CARD_IMAGE.sub(self.card_image, text)

    def card_image(self, match: re.Match) -> str:
        """A card image the browser can load. The card names its sample grid relative to the model folder, which
        Gradio does not serve (and must not: it serves no file the operator did not list), so the image of a local
        folder is inlined as a data URI, and that of a Hub repo is taken from the Hub. Only image files inside the
        folder are read."""
        alt, target = match.group("alt"), match.group("target")
        if re.match(r"([a-z][a-z0-9+.-]*:|/|#)", target, flags=re.IGNORECASE):  # a URL already
            return match.group(0)
        if self.model.is_hub:
            return f"![{alt}]({HUB_URL}/{self.model.source}/resolve/main/{quote(unquote(target))})"
        folder = self.folder.resolve()
        path = (folder / unquote(target)).resolve()
        mime = CARD_IMAGE_TYPES.get(path.suffix.lower())
        if (mime is None or folder not in path.parents or not path.is_file()
                or path.stat().st_size > MAX_CARD_IMAGE_BYTES):
            return f"*({alt or 'image'}: not shown here)*"
        return f"![{alt}](data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')})"


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

    def get(self, model: ServedModel) -> LoadedModel:
        key = model.name
        with self._lock:
            if (loaded := self._cached(key)) is not None:
                return loaded
            load_lock = self._loading.setdefault(key, threading.Lock())
        with load_lock:
            with self._lock:
                if (loaded := self._cached(key)) is not None:  # loaded while this request waited
                    return loaded
            try:
                loaded = load_model(model)
            except BaseException:
                with self._lock:
                    self._loading.pop(key, None)
                raise
            with self._lock:  # cached and no longer loading in one step, so that no request starts a second load
                self._models[key] = loaded
                self._loading.pop(key, None)
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
            return loaded

    def _cached(self, key: str) -> LoadedModel | None:
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        return None

    def __contains__(self, name: str) -> bool:
        return name in self._models


def hub_snapshot(repo_id: str) -> Path:
    """The Hub snapshot of a repo (downloaded, or from the cache when offline).

    Not `resolve_pipeline_folder`, which first looks for a local folder of that name: an id a caller typed must
    never reach the server's files.
    """
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except (LocalEntryNotFoundError, IncompleteSnapshotError):
        raise OSError("it is not in the Space's Hugging Face cache and the Hub cannot be reached.") from None
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError):
        raise OSError("there is no such Hub repo, or it is private or gated.") from None


def load_model(model: ServedModel) -> LoadedModel:
    """Load a served pipeline; any failure becomes an `OSError` that names the model, not its folder."""
    folder = None
    try:
        folder = hub_snapshot(model.source) if model.is_hub else Path(model.source)
        pipeline = TransGANPipeline.from_pretrained(folder).to(DEVICE)
    except Exception as error:  # a broken folder can fail in many ways (bad config, corrupt weights...)
        detail = str(error) if isinstance(error, OSError) else f"{type(error).__name__}: {error}"
        if folder is not None:
            detail = detail.replace(str(folder), model.name)
        raise OSError(f"Cannot load model {model.name!r}: {detail}") from None
    return LoadedModel(model=model, pipeline=pipeline, folder=folder)


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
        raise ValueError(f"{label} must be a whole number from {low} to {high}, got {short_repr(value)}.")
    return int(value)


def truncation_value(value: Any) -> float | None:
    """The UI's truncation (0 = off) as the pipeline's (None = plain normal latents)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"Truncation must be a number from 0 (off) to 1, got {short_repr(value)}.")
    return float(value) or None


def drawn_image(value: Any) -> Image.Image:
    """The Projection tab's image: the sketchpad's composite (a dict with `composite`) or a PIL image; a blank one
    (a single colour: nothing drawn) is refused."""
    if isinstance(value, dict):
        value = value.get("composite")
    if value is None:
        raise ValueError("Draw a digit or upload an image first.")
    if not isinstance(value, Image.Image):
        raise ValueError(f"The image must be a picture, got {short_repr(value)}.")
    if all(low == high for low, high in value.convert("RGB").getextrema()):
        raise ValueError("The image is blank: draw something or upload an image.")
    return value


# ---------------------------------------------------------------------------------------------------------------------
# Event handlers (the two public API endpoints, and UI helpers)
# ---------------------------------------------------------------------------------------------------------------------


class Space:
    """What one app serves (its configuration) and the pipelines it has loaded; the methods handle its events."""

    def __init__(self, config: SpaceConfig) -> None:
        self.config = config
        self.pipelines = PipelineCache(config.cached_models)

    def load(self, model: Any) -> LoadedModel:
        return self.pipelines.get(self.config.choose(model))

    def generate(
        self,
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
            model: name of one of the Space's models (default: its first).
        """
        with user_errors():
            seed = whole_number("Seed", seed, 0, MAX_SEED)
            num_images = whole_number("Number of images", num_images, 1, MAX_IMAGES)
            truncation = truncation_value(truncation)
            num_candidates = whole_number("Best of N (candidates)", num_candidates, 1, MAX_CANDIDATES)
            if num_images * num_candidates > MAX_SAMPLES_PER_REQUEST:
                raise ValueError(
                    f"{num_images} images x {num_candidates} candidates = {num_images * num_candidates} samples; "
                    f"one request may draw at most {MAX_SAMPLES_PER_REQUEST}. Ask for fewer images or candidates."
                )
            pipeline = self.load(model).pipeline
            if num_candidates > 1 and pipeline.discriminator is None:
                raise ValueError("This model was saved without its discriminator, so it cannot pick the best of N; "
                                 "set N to 1 or choose a model saved with its discriminator.")
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
        self,
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
            model: name of one of the Space's models (default: its first).
        """
        with user_errors():
            seed_a = whole_number("Start seed", seed_a, 0, MAX_SEED)
            seed_b = whole_number("End seed", seed_b, 0, MAX_SEED)
            num_steps = whole_number("Steps", num_steps, 2, MAX_STEPS)
            truncation = truncation_value(truncation)
            pipeline = self.load(model).pipeline
            frames = pipeline.interpolate(seed_a, seed_b, num_steps=num_steps, truncation=truncation,
                                          output_type="pil").images
        gif_path = save_to_gradio_cache(animated_gif(frames), f"transgan-{seed_a}-to-{seed_b}.gif")
        return [(save_png(frame, f"frame{i}.png"), f"{i}/{num_steps - 1}") for i, frame in enumerate(frames)], gif_path

    def project(
        self,
        image: Any,
        num_steps: int = PROJECTION_STEPS,
        seed: int = 0,
        num_frames: int = 8,
        model: str | None = None,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 (Gradio's progress tracker)
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]], str]:
        """The latent whose image comes closest to a drawing or an uploaded image, and a walk from it to a sample.

        Args:
            image: the sketchpad's value (its `composite`: the drawing over the canvas or upload), or a PIL image.
            num_steps: optimisation steps (1-500; `TransGANPipeline.project`, 4 starts, seeded).
            seed: seed of the sample the walk ends at (latent truncated as `/generate`'s default, 0.7).
            num_frames: frames of the walk, both ends included (2-32).
            model: name of one of the Space's models (default: its first).

        Returns the image as the model sees it beside its projection, the walk's frames and their GIF.
        """
        with user_errors():
            image = drawn_image(image)
            num_steps = whole_number("Steps", num_steps, 1, MAX_PROJECTION_STEPS)
            seed = whole_number("Seed of the sample", seed, 0, MAX_SEED)
            num_frames = whole_number("Frames", num_frames, 2, MAX_STEPS)
            pipeline = self.load(model).pipeline
            progress(0, desc="Projecting")
            projected = pipeline.project(image, num_steps=num_steps, generator=torch.Generator().manual_seed(0),
                                         output_type="pil")
            config = pipeline.generator.config
            seen = pipeline.image_processor.postprocess(target_pixels(image, config.image_size, config.out_channels),
                                                        output_type="pil")[0]
            # From the projection to the sample, with the projection's noise held fixed (noise_seed 0).
            start = projected.latents[0]
            end = pipeline.sample_latents(1, torch.Generator().manual_seed(seed), DEFAULT_TRUNCATION)[0].cpu()
            latents = torch.stack([slerp(start, end, w) for w in torch.linspace(0, 1, num_frames).tolist()])
            frames = pipeline(latents=latents, generator=[torch.Generator().manual_seed(0) for _ in latents],
                              output_type="pil").images
        result = [(save_png(seen, "image.png"), "your image, as the model sees it"),
                  (save_png(projected.images[0], "projection.png"), "its projection")]
        gif_path = save_to_gradio_cache(animated_gif(frames), f"projection-to-{seed}.gif")
        return (result, [(save_png(frame, f"frame{i}.png"), f"{i}/{num_frames - 1}") for i, frame in enumerate(frames)],
                gif_path)

    def describe_model(self, model: str | None) -> tuple[str, str]:
        """Load the chosen model (warming the cache) and describe it; problems are shown in place, not as pop-ups."""
        try:
            loaded = self.load(model)
        except (ValueError, OSError) as error:
            return f"⚠️ {error}", ""
        return loaded.summary(), loaded.model_card()


def grid_download(gallery: list[tuple[str, str | None]] | None) -> gr.DownloadButton:
    """The gallery as one PNG grid behind the download button (Gradio only passes files of its own cache here)."""
    if not gallery:
        return gr.DownloadButton(value=None, interactive=False)
    with user_errors():
        if len(gallery) > MAX_IMAGES:
            raise ValueError(f"A grid holds at most {MAX_IMAGES} images, got {len(gallery)}.")
        images = []
        for path, _ in gallery:
            with Image.open(path) as image:
                if max(image.size) > MAX_GRID_IMAGE_SIDE:
                    raise ValueError(f"A grid holds images of at most {MAX_GRID_IMAGE_SIDE} pixels a side, got "
                                     f"{image.width}×{image.height}.")
                images.append(image.copy())
    return gr.DownloadButton(value=save_png(image_grid(images), "transgan-grid.png"), interactive=True)


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
    downloading that file at that moment (seen in the load test). Here a file is written once, atomically, then only
    touched, so that `delete_cache` ages it from its latest use.
    """
    path = Path(get_upload_folder()) / hashlib.sha256(data).hexdigest() / file_name
    if path.is_file():
        os.utime(path)
        return str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(path, data)
    return str(path)


# ---------------------------------------------------------------------------------------------------------------------
# UI
# ---------------------------------------------------------------------------------------------------------------------


def build_demo(space: Space) -> gr.Blocks:
    config = space.config
    # The handlers check their inputs themselves (preprocess=False): the messages then name the field, for API
    # callers too, where Gradio's own bound checks say only "Value 100 is greater than maximum value 64".
    sampling = {"concurrency_limit": config.concurrency, "concurrency_id": "sampling", "preprocess": False}
    hub = " or any Hub repo id (org/name)" if config.allow_hub else ""
    api_help = f"""\
**API** (`pip install gradio_client`): `Client(url).predict(seed, num_images, truncation, num_candidates,
api_name="/generate")` returns the gallery; `Client(url).predict(seed_a, seed_b, num_steps, api_name="/interpolate")`
returns the frames and the GIF. Both take an optional `model` last: {", ".join(f"`{n}`" for n in config.names)}{hub}
(default `{config.names[0]}`). Details in the Space README.
"""

    with gr.Blocks(title="TransGAN", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(INTRO)
        model_box = gr.Dropdown(choices=config.names, value=config.names[0], label="Model", elem_id="model",
                                allow_custom_value=config.allow_hub,
                                info=f"The models this Space serves{' (or type a Hub repo id, org/name)' * bool(hub)}.")
        model_info = gr.Markdown("Loading the model…")
        with gr.Accordion("Model card", open=False):
            model_card = gr.Markdown(elem_id="model_card")  # CSS: words wrap whole, wide tables scroll

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

            with gr.Tab("Projection"):
                gr.Markdown("Draw a digit (white on black, like the demo model's digits) or upload an image: the "
                            "Space finds the latent whose image comes closest to it, then walks from there to a "
                            "random sample.")
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        drawing = gr.Sketchpad(
                            value=Image.new("RGB", (SKETCH_SIDE, SKETCH_SIDE)), type="pil", image_mode="RGB",
                            sources=["upload", "clipboard"], canvas_size=(SKETCH_SIDE, SKETCH_SIDE), format="png",
                            brush=gr.Brush(colors=["#ffffff", "#000000"], default_color="#ffffff",
                                           default_size=SKETCH_SIDE // 14),
                            layers=False, label="Draw or upload", elem_id="drawing",
                        )
                        projection_steps = gr.Slider(10, MAX_PROJECTION_STEPS, value=PROJECTION_STEPS, step=10,
                                                     precision=0, label="Steps",
                                                     info="More steps fit the image more closely, and take longer.")
                        walk_seed = gr.Number(value=0, label="Walk to the sample of seed", precision=0, minimum=0,
                                              maximum=MAX_SEED)
                        walk_frames = gr.Slider(2, MAX_STEPS, value=8, step=1, precision=0, label="Frames of the walk")
                        project_button = gr.Button("Project", variant="primary", elem_id="project")
                    with gr.Column(scale=2):
                        projection = gr.Gallery(label="Projection", columns=2, height="auto", object_fit="contain",
                                                interactive=False, elem_classes="pixelated", elem_id="projection")
                        walk = gr.Gallery(label="Walk to a random sample", columns=8, height="auto",
                                          object_fit="contain", interactive=False, elem_classes="pixelated",
                                          elem_id="walk")
                        walk_animation = gr.Image(label="Walk (GIF)", type="filepath", interactive=False,
                                                  buttons=["download"], elem_id="walk_animation")
        gr.Markdown(api_help)

        random_seed.click(None, outputs=seed, js=f"() => Math.floor(Math.random() * {MAX_SEED + 1})")
        generate_event = generate_button.click(
            space.generate, inputs=[seed, num_images, truncation, num_candidates, model_box], outputs=gallery,
            api_name="generate", **sampling,
        )
        generate_event.success(grid_download, inputs=gallery, outputs=download, api_visibility="private")
        interpolate_button.click(
            space.interpolate, inputs=[seed_a, seed_b, num_steps, interpolation_truncation, model_box],
            outputs=[frames, animation], api_name="interpolate", **sampling,
        )
        project_button.click(  # the sketchpad's value needs Gradio's preprocessing; the handler checks the numbers
            space.project, inputs=[drawing, projection_steps, walk_seed, walk_frames, model_box],
            outputs=[projection, walk, walk_animation], api_visibility="private",
            **(sampling | {"preprocess": True}),
        )
        gr.on([demo.load, model_box.change], space.describe_model, inputs=model_box,
              outputs=[model_info, model_card], api_visibility="private", preprocess=False)

    demo.queue(max_size=config.queue_size, default_concurrency_limit=config.concurrency)
    return demo


def launch(demo: gr.Blocks, **kwargs: Any) -> tuple:
    """`demo.launch` with the Space's styling and upload bound; server name and port come from Gradio's own
    environment variables (`GRADIO_SERVER_NAME`, `GRADIO_SERVER_PORT`) unless given."""
    return demo.launch(css=CSS, max_file_size=MAX_UPLOAD_SIZE, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """Serve the configured models; a bad setting is one `error:` line on stderr and exit code 2."""
    try:
        config = load_config(argv)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for model in config.models:  # a mistyped relative folder shows here as a Hub repo
        print(f"serving {model.name!r}: {'Hub repo' if model.is_hub else 'folder'} {model.source}")
    if config.allow_hub:
        print("serving any Hub repo id a caller names (TRANSGAN_SPACE_ALLOW_HUB)")
    launch(build_demo(Space(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
