"""--streaming: a dataset of parquet shards read as a `datasets.IterableDataset`, split among processes by shard (or by
example when the shards do not divide), shuffled through a buffer, and resumed exactly from the checkpointed position.

Every image is 16x16 with pixel (y, x) = 8·id + x: its mean names it (flips keep the mean) and a flip changes it."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SUBPROCESS_ENV, assert_same_weights
from PIL import Image

from transgan_hf.cli import CommandError
from transgan_hf.data import CorruptImageError, ImageTransform, load_image_dataset, prepare_streaming_dataset
from transgan_hf.training.args import parse_args
from transgan_hf.training.checkpointing import TrainingState
from transgan_hf.training.dataloader import ImageStream

pytestmark = pytest.mark.usefixtures("single_thread")

SHARDS, PER_SHARD = 4, 6


def image_ids(batch: torch.Tensor) -> list[int]:
    """The ids of a batch of images in [-1, 1] (the mean of image `id` is 8·id + 7.5 in 0..255)."""
    means = (batch.double().mean(dim=(1, 2, 3)) + 1) * 127.5
    return [round(value) for value in ((means - 7.5) / 8).tolist()]


def write_shard(path: Path, ids: list[int], corrupt: tuple[int, ...] = ()) -> None:
    """A parquet shard of the images `ids` as PNG files (`corrupt`: those ids as bytes no decoder reads)."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "id": datasets.Value("int64")})
    ramp = np.arange(16, dtype=np.uint8)[None, :, None]
    images = []
    for i in ids:
        buffer = io.BytesIO()
        Image.fromarray(np.broadcast_to(8 * i + ramp, (16, 16, 3)).copy()).save(buffer, format="PNG")
        images.append({"bytes": b"not an image" if i in corrupt else buffer.getvalue(), "path": None})
    datasets.Dataset.from_dict({"image": images, "id": ids}, features=features).to_parquet(str(path))


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """4 parquet shards of 6 PNG images each (ids 0-23; shard = id // 6), as `Dataset.to_parquet` writes them."""
    folder = tmp_path_factory.mktemp("shards")
    for shard in range(SHARDS):
        write_shard(folder / f"train-{shard:05d}-of-{SHARDS:05d}.parquet",
                    list(range(shard * PER_SHARD, (shard + 1) * PER_SHARD)))
    return folder


def make_stream(shards: Path, *, rank: int = 0, world_size: int = 1, batch_size: int = 3, buffer_size: int = 5,
                **options) -> ImageStream:
    dataset, column = prepare_streaming_dataset(load_image_dataset(str(shards), streaming=True))
    transform = ImageTransform(column, 16, center_crop=False, random_flip=True, seed=0)
    return ImageStream(dataset, column, transform, batch_size=batch_size, buffer_size=buffer_size, seed=0, rank=rank,
                       world_size=world_size, device=torch.device("cpu"), **options)


def take(stream: ImageStream, state: TrainingState, count: int) -> list[torch.Tensor]:
    batches = stream.batches(state)
    return [next(batches) for _ in range(count)]


def saved_and_loaded(state: TrainingState) -> TrainingState:
    """`state` after the round trip of a checkpoint (`torch.save`, `torch.load(weights_only=True)`)."""
    buffer = io.BytesIO()
    torch.save(vars(state), buffer)
    buffer.seek(0)
    return TrainingState(**torch.load(buffer, weights_only=True))


@pytest.mark.parametrize("world_size", [2, 3], ids=["shards-divide", "shards-do-not-divide"])
def test_processes_read_disjoint_parts_of_every_epoch(shards, world_size):
    """4 shards among 2 processes: 2 whole shards each; among 3: every process keeps every 3rd example."""
    per_process = SHARDS * PER_SHARD // world_size
    seen = []
    for rank in range(world_size):
        stream = make_stream(shards, rank=rank, world_size=world_size, batch_size=2)
        assert stream.split == ("shards" if world_size == 2 else "examples")
        state = TrainingState()
        epochs = [sum(map(image_ids, take(stream, state, per_process // 2)), []) for _ in range(2)]
        assert state.epoch == 1 and sorted(epochs[0]) == sorted(epochs[1]) and epochs[0] != epochs[1]  # reshuffled
        seen.append(set(epochs[0]))
    assert all(len(ids) == per_process for ids in seen)
    assert set.union(*seen) == set(range(SHARDS * PER_SHARD))  # disjoint and complete
    if world_size == 2:  # whole shards per process
        assert all(len({i // PER_SHARD for i in ids}) == SHARDS // world_size for ids in seen)


@pytest.mark.parametrize("buffer_size", [0, 5])
@pytest.mark.parametrize("cut", [3, 7, 8, 11], ids=["mid-epoch", "buffer-draining", "epoch-end", "next-epoch"])
def test_a_stream_resumes_exactly_from_its_saved_position(shards, buffer_size, cut):
    """8 batches of 3 per epoch; with a buffer of 5 the last 5 images of an epoch are drawn from the draining buffer."""
    uninterrupted = take(make_stream(shards, buffer_size=buffer_size), TrainingState(), 16)
    state = TrainingState()
    first = take(make_stream(shards, buffer_size=buffer_size), state, cut)
    assert state.data_position and len(state.data_position["buffer"]) <= buffer_size
    resumed = saved_and_loaded(state)
    rest = take(make_stream(shards, buffer_size=buffer_size), resumed, 16 - cut)
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted, first + rest, strict=True))  # pixels: flips included
    order = sum(map(image_ids, uninterrupted[:8]), [])
    assert sorted(order) == list(range(24))
    within_shards = [[i for i in order if i // PER_SHARD == shard] for shard in range(SHARDS)]
    shuffled = any(ids != sorted(ids) for ids in within_shards)
    assert shuffled == bool(buffer_size)  # without a buffer only the shard order is shuffled


def test_decoding_threads_give_the_same_batches(shards):
    single = take(make_stream(shards), TrainingState(), 10)
    threaded = take(make_stream(shards, num_workers=2), TrainingState(), 10)
    assert all(torch.equal(a, b) for a, b in zip(single, threaded, strict=True))


def test_unreadable_images_stop_the_stream_or_are_skipped(tmp_path):
    write_shard(tmp_path / "train.parquet", list(range(8)), corrupt=(2, 5))
    with pytest.raises(CorruptImageError, match=r"Cannot read the image row \d+: .*--skip_corrupt_images"):
        take(make_stream(tmp_path, buffer_size=0), TrainingState(), 2)
    state = TrainingState()
    batches = take(make_stream(tmp_path, buffer_size=0, skip_corrupt_images=True), state, 2)
    assert sum(map(image_ids, batches), []) == [0, 1, 3, 4, 6, 7]  # full batches of the readable images
    assert state.data_position["drawn"] == 8


def streaming_flags(micro_args, shards: Path, output: Path, *extra: str) -> list[str]:
    """`micro_args` reading the parquet shards as a stream, one D iteration per step."""
    flags = micro_args(output, "--dataset_name", str(shards), "--streaming", "--n_critic", "1",
                       "--gradient_accumulation_steps", "1", "--checkpointing_steps", "2", *extra)
    index = flags.index("--train_data_dir")
    return flags[:index] + flags[index + 2:]


def test_streaming_training_resumes_to_the_weights_of_an_uninterrupted_run(micro_args, run_training_in_process,
                                                                           shards, tmp_path):
    """Batches of 4 from 24 images, one per step: 6 steps an epoch. The checkpoint at step 5 is taken while the buffer
    of 6 drains (the stream ended at 18 images drawn); the run ends in the second epoch."""
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    buffer = ("--shuffle_buffer_size", "6", "--checkpointing_steps", "5")
    run_training_in_process(streaming_flags(micro_args, shards, reference, "--max_train_steps", "8", *buffer))
    run_training_in_process(streaming_flags(micro_args, shards, resumed, "--max_train_steps", "5", *buffer))
    state = torch.load(resumed / "checkpoint-5" / "training_state_0.pt", weights_only=True)
    assert (state["epoch"], state["data_position"]["drawn"], len(state["data_position"]["buffer"])) == (0, 20, 4)
    run_training_in_process(streaming_flags(micro_args, shards, resumed, "--max_train_steps", "8", *buffer,
                                            "--resume_from_checkpoint", "latest"))
    assert torch.load(resumed / "checkpoint-8" / "training_state_0.pt", weights_only=True)["epoch"] == 1
    for folder in ("generator", "generator_ema", "discriminator"):
        assert_same_weights(reference / "checkpoint-8" / folder, resumed / "checkpoint-8" / folder)
    with pytest.raises(CommandError, match=r"--shuffle_buffer_size 6 -> 2"):
        run_training_in_process(streaming_flags(micro_args, shards, resumed, "--max_train_steps", "8",
                                                "--shuffle_buffer_size", "2", "--resume_from_checkpoint", "latest"))
    with pytest.raises(CommandError, match=r"--streaming True -> False"):
        run_training_in_process(micro_args(resumed, "--max_train_steps", "8", "--n_critic", "1",
                                           "--gradient_accumulation_steps", "1", "--resume_from_checkpoint", "latest"))


RECORDING_WRAPPER = """
import json, sys
from transgan_hf.training import dataloader
from transgan_hf.training.loop import main

read = dataloader.ImageStream.batches


def recorded(self, state):  # every batch a process trains on, by image id (the mean of image id is 8 id + 7.5)
    for batch in read(self, state):
        means = (batch.double().mean(dim=(1, 2, 3)) + 1) * 127.5
        with open({output!r} + f"/ids_rank{{self.rank}}.jsonl", "a") as handle:
            handle.write(json.dumps([state.epoch, [round(v) for v in ((means - 7.5) / 8).tolist()]]) + "\\n")
        yield batch


dataloader.ImageStream.batches = recorded
main(sys.argv[1:])
"""


def test_two_processes_train_on_disjoint_shards(micro_args, shards, tmp_path):
    output = tmp_path / "two"
    output.mkdir()
    wrapper = tmp_path / "record_ids.py"
    wrapper.write_text(RECORDING_WRAPPER.format(output=str(output)))
    command = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(wrapper),
               *streaming_flags(micro_args, shards, output, "--max_train_steps", "4", "--shuffle_buffer_size", "3")]
    finished = subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=420)
    assert finished.returncode == 0, finished.stderr[-8000:]
    assert "a stream of 4 shards, 2 per process" in finished.stderr
    seen = []
    for rank in (0, 1):
        rows = [json.loads(line) for line in (output / f"ids_rank{rank}.jsonl").read_text().splitlines()]
        assert len(rows) == 4 and all(len(ids) == 2 for _, ids in rows)  # 4 steps of 2 images per process
        seen.append({i for epoch, ids in rows if epoch == 0 for i in ids})
        state = torch.load(output / "checkpoint-4" / f"training_state_{rank}.pt", weights_only=True)
        assert state["data_position"]["buffer"]  # every process saved its own position
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    shards_of = [{i // PER_SHARD for i in ids} for ids in seen]
    assert not shards_of[0] & shards_of[1]  # whole shards per process


@pytest.mark.parametrize(("extra", "message"), [
    (("--shuffle_buffer_size", "10"), "--shuffle_buffer_size: only with --streaming"),
    (("--streaming", "--eval_steps", "5"), "--eval_reference: 'train' reads the whole training set"),
])
def test_streaming_flag_errors(extra, message):
    with pytest.raises(CommandError, match=message):
        parse_args(["--report_to", "none", *extra])


def test_streaming_refuses_datasets_it_cannot_stream(micro_args, run_training_in_process, tmp_path):
    with pytest.raises(CommandError, match="'mnist-5k' is built in memory: drop --streaming"):
        run_training_in_process(["--streaming", "--report_to", "none", "--output_dir", str(tmp_path / "out")])
