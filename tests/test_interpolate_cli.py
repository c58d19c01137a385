"""`transgan interpolate`: latent walks as GIF, WebP and MP4 with the requested frame count, loops that close, the
pipeline's own interpolation and images at the keys, latents from a .npy file, one-line errors."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from helpers import seeds, tiny_pipeline
from PIL import Image, ImageSequence

from transgan_hf.cli import main
from transgan_hf.commands.interpolate import walk


def interpolate(pipeline_folder, output_file, *flags: str) -> None:
    assert main(["interpolate", "--model", str(pipeline_folder), "--output_file", str(output_file), "--no_progress",
                 *flags]) == 0


def read_animation(path) -> tuple[list[np.ndarray], list[int], int]:
    """The frames of a GIF or WebP, each frame's duration (ms), and the loop count (0: for ever)."""
    frames, durations = [], []
    with Image.open(path) as animation:
        for frame in ImageSequence.Iterator(animation):
            frames.append(as_array(frame))  # loading the frame reads its duration
            durations.append(frame.info["duration"])
        return frames, durations, animation.info["loop"]


def as_array(image: Image.Image, mode: str = "RGB") -> np.ndarray:
    return np.asarray(image.convert(mode), dtype=np.int16)


def test_walk_passes_through_every_key_exactly_at_an_even_pace():
    keys = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    keys = 4 * keys / keys.norm(dim=1, keepdim=True)  # equal norms: slerp steps are equal chords
    latents = walk(keys, 10)  # 3 segments, 9 steps: a key every 3 frames
    assert latents.shape == (10, 16)
    for frame, key in zip((0, 3, 6, 9), keys):
        assert torch.equal(latents[frame], key)
    steps = (latents[1:] - latents[:-1]).norm(dim=1)
    assert (steps > 0).all()
    for segment in range(3):  # slerp moves at a constant angle per frame within a segment
        torch.testing.assert_close(steps[3 * segment:3 * segment + 3], steps[3 * segment].expand(3), rtol=1e-3,
                                   atol=0)
    uneven = walk(keys, 6)  # 5 steps over 3 segments: only the ends are keys
    assert torch.equal(uneven[0], keys[0]) and torch.equal(uneven[-1], keys[-1])


def test_webp_is_the_pipelines_interpolation_and_loops(pipeline_folder, tmp_path, single_thread):
    interpolate(pipeline_folder, tmp_path / "walk.webp", "--seeds", "1,2,3,1", "--frames", "7", "--fps", "20")
    frames, durations, loop = read_animation(tmp_path / "walk.webp")
    assert len(frames) == 7 and durations == [50] * 7 and loop == 0
    assert np.array_equal(frames[0], frames[-1])  # the loop closes (lossless WebP: exactly)
    assert np.abs(frames[0] - frames[1]).max() > 10  # and the walk moves
    pipe = tiny_pipeline()
    # Frames 0-2 are seeds 1 -> 2 (a key every 2 frames), with seed 1's noise: TransGANPipeline.interpolate.
    for frame, expected in zip(frames[:3], pipe.interpolate(1, 2, num_steps=3).images):
        assert np.abs(frame - as_array(expected)).max() <= 1
    # The first frame is `transgan generate --seeds 1`'s image.
    assert np.abs(frames[0] - as_array(pipe(generator=seeds(1)).images[0])).max() <= 1


def test_gif_has_the_frames_and_loops(pipeline_folder, tmp_path, single_thread):
    interpolate(pipeline_folder, tmp_path / "walk.gif", "--seeds", "4-5,4", "--frames", "9", "--fps", "25")
    frames, durations, loop = read_animation(tmp_path / "walk.gif")
    assert len(frames) == 9 and durations == [40] * 9 and loop == 0
    assert np.array_equal(frames[0], frames[-1])
    assert np.abs(frames[0] - frames[4]).max() > 10


def test_mp4_has_the_frames_rate_and_loops(pipeline_folder, tmp_path, single_thread):
    interpolate(pipeline_folder, tmp_path / "walk.mp4", "--seeds", "1,2,1", "--frames", "12", "--fps", "24",
                "--truncation", "0.7")
    with av.open(str(tmp_path / "walk.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 24 and (stream.width, stream.height) == (16, 16)
        frames = [as_array(frame.to_image(), "L") for frame in container.decode(stream)]
    assert len(frames) == 12
    # H.264 is lossy and keeps colour at half resolution (4:2:0): compare brightness.
    expected = as_array(tiny_pipeline()(generator=seeds(1), truncation=0.7).images[0], "L")
    assert np.abs(frames[0] - expected).mean() < 8  # about 5 levels at CRF 18 on these noisy 16-px images
    assert np.abs(frames[-1] - frames[0]).mean() < 10  # the loop closes (about 6)
    assert np.abs(frames[5] - frames[0]).mean() > 25  # the middle of the walk is another image (about 47)


def test_latents_from_npy_files(pipeline_folder, tmp_path, single_thread):
    keys = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    np.save(tmp_path / "first.npy", keys[:1])  # one latent, as `transgan project` writes them
    np.save(tmp_path / "more.npy", keys[1:])
    interpolate(pipeline_folder, tmp_path / "walk.webp", "--latents", str(tmp_path / "first.npy"),
                str(tmp_path / "more.npy"), "--frames", "5", "--noise_seed", "9")
    frames, _, _ = read_animation(tmp_path / "walk.webp")
    assert len(frames) == 5
    expected = tiny_pipeline()(latents=torch.from_numpy(keys), generator=seeds(9, 9, 9)).images
    for frame, image in zip(frames[::2], expected):  # frames 0, 2, 4 are the keys
        assert np.abs(frame - as_array(image)).max() <= 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seeds", "1,2", "--output_file", "{tmp}/walk.avi"], "must end in .gif, .webp or .mp4"),
        (["--seeds", "1,2", "--frames", "1"], "--frames must be >= 2, got 1"),
        (["--seeds", "1,2", "--fps", "0"], "--fps must be >= 1"),
        (["--seeds", "7"], "a walk needs at least two"),
        (["--seeds", "1,x"], "'x' is not a seed"),
        (["--latents", "{tmp}/wide.npy"], "has shape (3, 5); the model needs (N, 16)"),
        (["--latents", "{tmp}/one.npy"], "a walk needs at least two"),
        (["--latents", "{tmp}/one.npy", "{tmp}/wide.npy"], "wide.npy' has shape (3, 5)"),
        (["--latents", "{tmp}/text.npy"], "--latents"),
        (["--latents", "{tmp}/missing.npy"], "No such file"),
        (["--latents", "{tmp}/one.npy", "--truncation", "0.5"], "cannot be combined with --latents"),
        (["--seeds", "1,2", "--truncation", "2"], "--truncation"),
        (["--seeds", "1,2", "--output_file", "{tmp}"], "is a folder; pass a file name"),
    ],
    ids=["extension", "one frame", "fps", "one seed", "bad seed", "wrong width", "one latent", "second file wrong",
         "not npy", "no npy", "truncation with latents", "truncation range", "output is a folder"],
)
def test_bad_input_is_one_error_line(flags, message, pipeline_folder, tmp_path, capsys):
    np.save(tmp_path / "wide.npy", np.zeros((3, 5), dtype=np.float32))
    np.save(tmp_path / "one.npy", np.zeros((1, 16), dtype=np.float32))
    (tmp_path / "text.npy").write_text("not an array")
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    if "--output_file" not in flags:
        flags += ["--output_file", str(tmp_path / "walk.gif")]
    before = sorted(tmp_path.iterdir())
    assert main(["interpolate", "--model", str(pipeline_folder), *flags]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and err.endswith(lines[0] + "\n") and "Traceback" not in err, err
    assert message in lines[0]
    assert sorted(tmp_path.iterdir()) == before  # nothing written
