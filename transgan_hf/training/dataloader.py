"""The training images: where they come from, the `DataLoader`, and endless batches from a resumable position.

The epoch order is a function of (seed, epoch) (Accelerate's seedable sampler) and the random crops/flips of row *i*
in epoch *e* of (seed, *e*, *i*), so a run resumed at (epoch, batch) sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from accelerate import Accelerator

from ..cli import CommandError
from ..data import (
    CorruptImageError,
    DatasetError,
    ImageTransform,
    collate_pixel_values,
    load_image_dataset,
    prepare_training_dataset,
)
from .checkpointing import TrainingState


@dataclass(frozen=True)
class ImageSource:
    """The training images: a Hub dataset, a `save_to_disk` folder or `mnist-5k` (`dataset_name`), or an image
    folder (`train_data_dir`)."""

    dataset_name: str | None = None
    train_data_dir: str | None = None
    dataset_config_name: str | None = None
    image_column: str | None = None
    cache_dir: str | None = None

    def load(self):
        """The `datasets.Dataset` (`DatasetError` when there is none to read)."""
        return load_image_dataset(self.dataset_name, self.train_data_dir, self.dataset_config_name,
                                  cache_dir=self.cache_dir)


def build_dataloader(accelerator: Accelerator, images: ImageSource, *, resolution: int, batch_size: int, seed: int,
                     center_crop: bool, random_flip: bool, skip_corrupt_images: bool = False,
                     num_workers: int = 0) -> tuple[torch.utils.data.DataLoader, ImageTransform, int, int]:
    """The loader of `batch_size` images (global: each process loads its share), its transform (whose epoch `batches`
    sets), the number of usable images and of unreadable ones left out (`skip_corrupt_images`)."""
    try:
        dataset = images.load()
        dataset, transform, skipped = prepare_training_dataset(
            dataset, resolution, image_column=images.image_column, center_crop=center_crop,
            random_flip=random_flip, seed=seed, skip_corrupt_images=skip_corrupt_images,
            num_proc=num_workers or None,
        )
    except (DatasetError, CorruptImageError) as error:
        raise CommandError(str(error)) from error
    if len(dataset) < batch_size:
        raise CommandError(f"The dataset has {len(dataset)} usable images, fewer than one discriminator batch "
                           f"(--train_batch_size {batch_size}); add images or lower the batch size.")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size // accelerator.num_processes, shuffle=True, drop_last=True,
        collate_fn=collate_pixel_values, num_workers=num_workers,
    )
    return loader, transform, len(dataset), skipped


def batches(accelerator: Accelerator, dataloader, transform: ImageTransform,
            state: TrainingState) -> Iterator[torch.Tensor]:
    """Endless real batches from `state`'s data position; the epoch order is a function of (seed, epoch)."""
    skip = state.batch_in_epoch
    while True:
        dataloader.set_epoch(state.epoch)
        transform.set_epoch(state.epoch)
        loader = accelerator.skip_first_batches(dataloader, skip) if skip else dataloader
        for batch in loader:
            state.batch_in_epoch += 1
            yield batch
        skip = 0
        state.epoch += 1
        state.batch_in_epoch = 0
