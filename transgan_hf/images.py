"""Image grids and image files, shared by `transgan generate`, the Space and training's sample grids."""

from __future__ import annotations

import math
import os
from pathlib import Path

from diffusers.utils import make_image_grid
from PIL import Image

from .atomic_files import atomic_write


def image_grid(images: list[Image.Image]) -> Image.Image:
    """A near-square grid, row by row; the empty cells of the last row stay black."""
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    padding = [Image.new(images[0].mode, images[0].size)] * (rows * columns - len(images))
    return make_image_grid(images + padding, rows=rows, cols=columns)


def save_image(image: Image.Image, path: str | os.PathLike) -> None:
    """Write `image` in the format of the file extension, creating the folder. Through a temporary file in the same
    folder, so that an interrupted run leaves no truncated image, with the user's umask permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as temporary:
        image.save(temporary, format=Image.registered_extensions()[path.suffix.lower()])
