"""The training images: where they come from, the `DataLoader`, and endless batches from a resumable position.

A dataset in memory (or memory-mapped): the epoch order is a function of (seed, epoch) (Accelerate's seedable
sampler) and the random crops/flips of row *i* in epoch *e* of (seed, *e*, *i*), so a run resumed at (epoch, batch)
sees exactly the batches it would have seen.

A streamed dataset (`--streaming`, `ImageStream`): each process reads its part of the shards (or, when the shards do
not divide among the processes, every process reads all of them and keeps every world_size-th example), in a shard
order shuffled per (seed, epoch), through a shuffle buffer of `--shuffle_buffer_size` images. Its position — the
`datasets` stream's `state_dict()`, the buffer's contents and its random state — is saved in every checkpoint, so a
resumed run sees exactly the batches it would have seen, with the same number of processes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from ..cli import CommandError
from ..data import (
    INDEX_COLUMN,
    CorruptImageError,
    DatasetError,
    ImageTransform,
    collate_pixel_values,
    load_image_dataset,
    prepare_streaming_dataset,
    prepare_training_dataset,
)
from .checkpointing import TrainingState

logger = logging.getLogger(__name__)  # also without an Accelerator: every process warns for itself


@dataclass(frozen=True)
class ImageSource:
    """The training images: a Hub dataset, a `save_to_disk` folder or `mnist-5k` (`dataset_name`), or an image
    folder (`train_data_dir`)."""

    dataset_name: str | None = None
    train_data_dir: str | None = None
    dataset_config_name: str | None = None
    image_column: str | None = None
    cache_dir: str | None = None

    def load(self, streaming: bool = False):
        """The `datasets.Dataset`, or with `streaming` the `datasets.IterableDataset` (`DatasetError` when there is
        none to read)."""
        return load_image_dataset(self.dataset_name, self.train_data_dir, self.dataset_config_name,
                                  cache_dir=self.cache_dir, streaming=streaming)


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


# ---------------------------------------------------------------------------------------------------------------------
# Streaming: a `datasets.IterableDataset` split among the processes, shuffled through a buffer, resumable exactly
# ---------------------------------------------------------------------------------------------------------------------


class _PassThroughBufferWarning(logging.Filter):
    """`ImageStream` asks `datasets` for its seeded shard order through `IterableDataset.shuffle(buffer_size=1)`, whose
    one-example buffer passes every example straight through; `datasets` still warns, when a position is restored,
    that a buffer's contents were lost. The examples are in `ImageStream`'s own buffer, which the checkpoint holds."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "shuffle buffer" not in record.getMessage()


class ImageStream:
    """Endless batches of `batch_size` images for one process from a streamed dataset (`ImageStream.build`).

    Per epoch *e*: `datasets` shuffles the shard order with (seed, *e*) and `split_dataset_by_node` gives each process
    its shards — or, when their number does not divide by the number of processes, every world_size-th example of
    all of them (`split`). The examples pass through a buffer of `buffer_size` (0: none) from which a generator
    seeded with (seed, rank, *e*) draws at random; the random crop/flip of the *n*-th example a process draws in
    epoch *e* is seeded by (seed, *e*, n · world_size + rank). A last incomplete batch of an epoch is dropped.

    After every batch the position (`TrainingState.data_position`: the stream's `state_dict()`, the buffer's
    undecoded images and the generator's state) is stored in the training state, so a checkpoint resumes exactly.
    `num_workers` threads decode the images of a batch (PIL releases the GIL) while the stream is read in the
    training process, where its position is known.
    """

    def __init__(self, dataset, column: str, transform: ImageTransform, *, batch_size: int, buffer_size: int,
                 seed: int, rank: int, world_size: int, device: torch.device, num_workers: int = 0,
                 skip_corrupt_images: bool = False) -> None:
        from datasets.distributed import split_dataset_by_node

        self.num_shards = dataset.num_shards
        self.split = "shards" if self.num_shards % world_size == 0 else "examples"  # what datasets' "auto" picks
        # Shards one at a time (max_buffer_input_shards=1): datasets' interleaving of several parquet shards pauses 5 s
        # whenever a pass over them ends (config.SLEEP_TIME_ON_THREADS_SHUTDOWN), i.e. at every epoch's end.
        shuffled = dataset.shuffle(seed=seed, buffer_size=1, max_buffer_input_shards=1)
        self.dataset = split_dataset_by_node(shuffled, rank=rank, world_size=world_size)
        datasets_logger = logging.getLogger("datasets.iterable_dataset")
        if not any(isinstance(f, _PassThroughBufferWarning) for f in datasets_logger.filters):
            datasets_logger.addFilter(_PassThroughBufferWarning())
        self.column, self.transform = column, transform
        self.batch_size, self.buffer_size = batch_size, buffer_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.device = device
        self.skip_corrupt_images = skip_corrupt_images
        self.decoders = ThreadPoolExecutor(num_workers, thread_name_prefix="decode") if num_workers else None

    @classmethod
    def build(cls, accelerator: Accelerator, images: ImageSource, *, resolution: int, batch_size: int,
              buffer_size: int, seed: int, center_crop: bool, random_flip: bool, skip_corrupt_images: bool = False,
              num_workers: int = 0) -> ImageStream:
        """The stream of `batch_size` images (global: each process reads its share) of `images`, checked by reading
        its first image."""
        try:
            dataset, column = prepare_streaming_dataset(images.load(streaming=True), images.image_column)
        except (DatasetError, CorruptImageError) as error:
            raise CommandError(str(error)) from error
        transform = ImageTransform(column, resolution, center_crop=center_crop, random_flip=random_flip, seed=seed)
        return cls(dataset, column, transform, batch_size=batch_size // accelerator.num_processes,
                   buffer_size=buffer_size, seed=seed, rank=accelerator.process_index,
                   world_size=accelerator.num_processes, device=accelerator.device, num_workers=num_workers,
                   skip_corrupt_images=skip_corrupt_images)

    def describe(self) -> str:
        """How the stream is split among the processes, for the run's log."""
        if self.world_size == 1:
            return f"a stream of {self.num_shards} shard(s)"
        if self.split == "shards":
            return f"a stream of {self.num_shards} shards, {self.num_shards // self.world_size} per process"
        return (f"a stream of {self.num_shards} shard(s), which do not divide among {self.world_size} processes: every "
                f"process reads all of them and keeps every {self.world_size}-th example")

    def batches(self, state: TrainingState) -> Iterator[torch.Tensor]:
        """Endless batches on the device from `state`'s position (`epoch`, `data_position`), which they advance."""
        position = state.data_position or None
        while True:
            self.dataset.set_epoch(state.epoch)
            self.transform.set_epoch(state.epoch)
            rng = np.random.default_rng((self.seed, self.rank, state.epoch))
            buffer: list[Any] = []
            drawn = 0  # examples drawn from the buffer this epoch (corrupt ones included)
            if position is not None:
                self.dataset.load_state_dict(position["source"])
                buffer, drawn = list(position["buffer"]), position["drawn"]
                rng.bit_generator.state = position["rng"]
            examples = self._shuffled(iter(self.dataset), buffer, rng)
            while (batch := self._next_batch(examples, drawn)) is not None:
                pixels, drawn = batch
                state.batch_in_epoch += 1
                state.data_position = {"source": self.dataset.state_dict(), "buffer": list(buffer),
                                       "rng": rng.bit_generator.state, "drawn": drawn}
                yield pixels.to(self.device)
            if state.batch_in_epoch == 0:
                raise CommandError(f"Process {self.rank} read fewer than one batch ({self.batch_size} usable images) "
                                   f"in epoch {state.epoch} of the stream ({self.describe()}); use more data or "
                                   "lower --train_batch_size.")
            position = None
            state.epoch += 1
            state.batch_in_epoch = 0
            state.data_position = {}

    def _shuffled(self, source: Iterator[dict], buffer: list[Any], rng: np.random.Generator) -> Iterator[Any]:
        """The images of `source` in the order drawn from `buffer` (kept up to date in place, for the position)."""
        if self.buffer_size <= 1:
            for example in source:
                yield example[self.column]
        else:
            for example in source:
                if len(buffer) < self.buffer_size:
                    buffer.append(example[self.column])
                    continue
                index = int(rng.integers(len(buffer)))
                chosen, buffer[index] = buffer[index], example[self.column]
                yield chosen
        while buffer:  # the stream's end: what is left, in random order
            index = int(rng.integers(len(buffer)))
            buffer[index], buffer[-1] = buffer[-1], buffer[index]
            yield buffer.pop()

    def _next_batch(self, examples: Iterator[Any], drawn: int) -> tuple[torch.Tensor, int] | None:
        """The next `batch_size` decoded images and the new count of drawn examples; None at the end of the epoch."""
        pixels: list[torch.Tensor] = []
        while len(pixels) < self.batch_size:
            values = list(islice(examples, self.batch_size - len(pixels)))
            if not values:
                return None
            indices = [(drawn + i) * self.world_size + self.rank for i in range(len(values))]
            drawn += len(values)
            decoded = (self.decoders.map(self._decode, values, indices) if self.decoders
                       else map(self._decode, values, indices))
            pixels += [image for image in decoded if image is not None]
        return torch.stack(pixels), drawn

    def _decode(self, value: Any, index: int) -> torch.Tensor | None:
        try:
            return self.transform({self.column: [value], INDEX_COLUMN: [index]})["pixel_values"][0]
        except CorruptImageError as error:
            if not self.skip_corrupt_images:
                raise
            logger.warning(f"Skipped an unreadable image ({error}).")
            return None
