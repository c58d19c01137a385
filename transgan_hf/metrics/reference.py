"""Reference images of a dataset, as the feature networks take them, for the statistics FID and KID compare with.

Used by `transgan stats`, by training's `--eval_reference train` and by the benchmarks' MNIST reference.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def reference_batches(
    dataset, column: str, num_images: int, batch_size: int, resolution: int | None
) -> Iterator[torch.Tensor]:
    """uint8 (B, 3, H, W) batches of the dataset's images, decoded and (optionally) resized as in training."""
    import datasets

    from ..data import preprocess_image, read_image

    if isinstance(dataset.features[column], datasets.Image):
        dataset = dataset.cast_column(column, datasets.Image(decode=False))  # decode here: errors name the file
    sizes = set()
    for start in range(0, num_images, batch_size):
        values = dataset[start : min(start + batch_size, num_images)][column]
        arrays = []
        for offset, value in enumerate(values):
            image = read_image(value, start + offset)
            if resolution is not None:
                pixels = preprocess_image(image, resolution, center_crop=True)
                arrays.append(((pixels + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
            else:
                arrays.append(torch.from_numpy(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()))
        sizes.update(tuple(array.shape) for array in arrays)
        if len(sizes) > 1:
            raise ValueError(
                "The images have different sizes; pass --resolution to resize and centre-crop them to one size."
            )
        yield torch.stack(arrays)
