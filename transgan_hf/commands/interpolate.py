"""`transgan interpolate`: a latent walk through several seeds (or given latents) as an animated GIF, WebP or MP4.

The walk is spherical interpolation (`transgan_hf.sampling.slerp`, as `TransGANPipeline.interpolate`) from each key
latent to the next at a constant pace per segment; `--frames` counts the frames of the whole walk, both ends included.
Repeating the first seed at the end (`--seeds 1,2,3,1`) closes the loop: the last frame is then the first. The noise of
noise injection is held fixed along the walk, so only the latent moves (`TransGANPipeline.interpolate` does the same).

The video is one file, so the flag is `--output_file` (the shared vocabulary of `transgan_hf.cli`); it is written under
a temporary name and renamed into place. A progress bar counts the frames on stderr (`--no_progress` hides it).
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..atomic_files import atomic_write
from ..cli import CommandError, add_progress_argument, as_command_error, check_minimums, check_output_path
from ..pipeline_transgan import TransGANPipeline, check_truncation
from ..sampling import slerp
from .generate import DTYPES, parse_seeds, resolve_device

FORMATS = {".gif": "GIF", ".webp": "WEBP", ".mp4": "MP4"}
MAX_FRAMES = 10_000
MAX_FPS = 240
DEFAULT_LATENTS_NOISE_SEED = 0

EXAMPLES = """\
examples:
  transgan interpolate --seeds 1,2,3,1 --frames 60 --output_file walk.gif          # the bundled MNIST demo model
  transgan interpolate --model org/transgan-church --seeds 0,7,42,0 --frames 180 --fps 30 --output_file walk.mp4
  transgan interpolate --model ./my-pipeline --latents a_latent.npy b_latent.npy a_latent.npy --output_file walk.webp

--frames is the number of frames of the whole walk, both end points included, spread evenly over the segments (each
key is a frame when frames - 1 is a multiple of the number of segments). --seeds 1,2,3,1 loops: its last frame is its
first. The first frame of a walk through seeds is `transgan generate --seeds FIRST`'s image (same latent and noise).
--latents: .npy arrays (N, latent_dim), e.g. the *_latent.npy files of `transgan project`: their rows, in order, are
the keys instead of seeds, with the noise of --noise_seed (default 0, as in `transgan project`).
Formats by extension: .gif (Pillow; 256 colours a frame, delays in 1/100 s, so 50 fps at most), .webp (Pillow,
lossless), .mp4 (H.264 via PyAV, which bundles FFmpeg: pip install 'transgan-hf[video]'; even width and height).
GIF and WebP merge identical consecutive frames into one longer frame.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "interpolate",
        help="render a latent walk through several seeds as a GIF, WebP or MP4",
        description="Render a smooth spherical-interpolation walk through the latents of several seeds (or of a .npy "
                    "file) as an animated GIF, WebP or MP4.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", metavar="ORG/NAME_OR_DIR",
                        help="Hub repo id or local folder of a TransGANPipeline (default: the bundled MNIST demo "
                             "model, transgan_hf.DEMO_MODEL_PATH)")
    keys = parser.add_mutually_exclusive_group(required=True)
    keys.add_argument("--seeds", help="key seeds in walk order, repeats allowed, e.g. 1,2,3,1 (ranges: 0-3 = 0,1,2,3)")
    keys.add_argument("--latents", metavar="FILE.npy", nargs="+",
                      help="key latents: .npy arrays (N, latent_dim), their rows in walk order, 2 or more in all "
                           "(e.g. the *_latent.npy files of `transgan project`)")
    parser.add_argument("--output_file", required=True, help="the video: .gif, .webp or .mp4")
    parser.add_argument("--frames", type=int, default=60,
                        help="frames of the whole walk, both ends included (default: 60)")
    parser.add_argument("--fps", type=int, default=30, help=f"frames per second, 1 to {MAX_FPS} (default: 30)")
    parser.add_argument("--truncation", type=float, default=None, metavar="T",
                        help="truncated latents for the seeds, T in (0, 1], as in `transgan generate`")
    parser.add_argument("--noise_seed", type=int, default=None,
                        help="seed of the noise held fixed along the walk (generators with noise injection; default: "
                             f"the first seed's noise, or {DEFAULT_LATENTS_NOISE_SEED} with --latents, as in "
                             "`transgan project`)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    parser.add_argument("--batch_size", type=int, default=16, help="frames generated per forward pass (default: 16)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="weights and compute in this type (default: float32)")
    add_progress_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_minimums(args, {"frames": 2, "fps": 1, "batch_size": 1, "noise_seed": 0})
    if args.frames > MAX_FRAMES:
        raise CommandError(f"--frames must be <= {MAX_FRAMES:,}, got {args.frames}; render a long walk in parts.")
    if args.fps > MAX_FPS:
        raise CommandError(f"--fps must be <= {MAX_FPS}, got {args.fps}.")
    if args.noise_seed is not None and args.noise_seed >= 2**63:
        raise CommandError(f"--noise_seed must be below 2**63, got {args.noise_seed}.")
    try:
        check_truncation(args.truncation)
    except ValueError as error:
        raise CommandError(f"--truncation: {error}") from None
    if args.latents is not None and args.truncation is not None:
        raise CommandError("--truncation shapes the latents of seeds; it cannot be combined with --latents.")
    path = check_output_path(args.output_file, "--output_file", folder=False)
    if path.suffix.lower() not in FORMATS:
        raise CommandError(f"--output_file {args.output_file!r} must end in .gif, .webp or .mp4.")
    seeds = parse_key_seeds(args.seeds) if args.seeds is not None else None
    device = resolve_device(args.device)

    if args.model is None:
        from .. import DEMO_MODEL_PATH

        args.model = DEMO_MODEL_PATH
    with as_command_error(f"cannot load --model {args.model!r}: "):
        pipeline = TransGANPipeline.from_pretrained(args.model, dtype=DTYPES[args.dtype], discriminator=None)
    pipeline.to(device)
    if seeds is not None:
        keys, noise_state = seed_keys(pipeline, seeds, args.truncation, args.noise_seed)
    else:
        keys = torch.cat([read_latents(file, pipeline.generator.config.latent_dim) for file in args.latents])
        if len(keys) < 2:
            raise CommandError(f"--latents holds {len(keys)} latent; a walk needs at least two (rows of one file or "
                               "several files).")
        noise_seed = DEFAULT_LATENTS_NOISE_SEED if args.noise_seed is None else args.noise_seed
        noise_state = torch.Generator().manual_seed(noise_seed).get_state()
    latents = walk(keys, args.frames)

    frames: list[Image.Image] = []
    with tqdm(total=args.frames, unit="frame", desc="interpolate", disable=args.no_progress) as bar:
        for start in range(0, args.frames, args.batch_size):
            chunk = latents[start:start + args.batch_size]
            same_noise = [torch.Generator().set_state(noise_state) for _ in range(len(chunk))]
            frames.extend(pipeline(latents=chunk.to(device), generator=same_noise).images)
            bar.update(len(chunk))
    with as_command_error(f"cannot write --output_file {str(path)!r}: "):
        write_animation(frames, path, args.fps)
    print(f"Wrote {args.frames} frames ({args.frames / args.fps:.1f} s at {args.fps} fps) to {path}")
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# Keys and the walk
# ---------------------------------------------------------------------------------------------------------------------


def parse_key_seeds(text: str) -> list[int]:
    """`"1,2,3,1"` -> `[1, 2, 3, 1]`: `transgan generate`'s seed syntax, but in walk order with repeats kept."""
    seeds = [seed for part in text.split(",") for seed in parse_seeds(part)]
    if len(seeds) < 2:
        raise CommandError(f"--seeds {text!r} names one seed; a walk needs at least two, e.g. 1,2,3,1.")
    return seeds


def seed_keys(
    pipeline: TransGANPipeline, seeds: list[int], truncation: float | None, noise_seed: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The key latents of `seeds` (on the CPU) and the state of the generator that draws the walk's noise: the first
    seed's right after its latent (as in `TransGANPipeline.interpolate`), or `noise_seed`'s."""
    keys = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        keys.append(pipeline.sample_latents(1, generator, truncation)[0].cpu())
        if len(keys) == 1:
            first_state = generator.get_state()
    noise_state = first_state if noise_seed is None else torch.Generator().manual_seed(noise_seed).get_state()
    return torch.stack(keys), noise_state


def read_latents(path: str, latent_dim: int) -> torch.Tensor:
    """The `(N, latent_dim)` latents of a .npy file, finite."""
    with as_command_error(f"--latents {path!r}: "):
        array = np.load(path, allow_pickle=False)
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise CommandError(f"--latents {path!r} must hold a numeric array (N, {latent_dim}), not "
                           f"{getattr(array, 'dtype', type(array).__name__)}.")
    if array.ndim != 2 or array.shape[1] != latent_dim:
        raise CommandError(f"--latents {path!r} has shape {array.shape}; the model needs (N, {latent_dim}): one "
                           f"latent of {latent_dim} values per row.")
    if not np.isfinite(array).all():
        raise CommandError(f"--latents {path!r} contains NaN or infinite values.")
    return torch.from_numpy(array.astype(np.float32))


def walk(keys: torch.Tensor, num_frames: int) -> torch.Tensor:
    """`num_frames` latents along the slerp path through `keys`, evenly spaced per segment, both ends included. Frame
    `i` lies at `i * segments / (num_frames - 1)` keys along; a frame that lands on a key is that key exactly."""
    segments = len(keys) - 1
    latents = []
    for index in range(num_frames):
        segment, remainder = divmod(index * segments, num_frames - 1)
        if remainder == 0:
            latents.append(keys[segment])
        else:
            latents.append(slerp(keys[segment], keys[segment + 1], remainder / (num_frames - 1)))
    return torch.stack(latents)


# ---------------------------------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------------------------------


def write_animation(frames: list[Image.Image], path: Path, fps: int) -> None:
    """Write `frames` as the animation format of `path`'s extension, through a temporary file beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = FORMATS[path.suffix.lower()]
    with atomic_write(path) as temporary:
        if kind == "MP4":
            write_mp4(frames, temporary, fps)
        else:
            options = {"lossless": True} if kind == "WEBP" else {}
            first, *rest = frames
            first.save(temporary, format=kind, save_all=True, append_images=rest, duration=round(1000 / fps), loop=0,
                       **options)


def write_mp4(frames: list[Image.Image], path: Path, fps: int) -> None:
    """H.264 in an MP4 container with PyAV (its wheel bundles FFmpeg and libx264), 4:2:0, near-lossless (CRF 18)."""
    try:
        import av
    except ImportError:
        raise CommandError("writing .mp4 needs PyAV; install it with `pip install 'transgan-hf[video]'`, or write "
                           ".gif or .webp.") from None
    width, height = frames[0].size
    if width % 2 or height % 2:
        raise CommandError(f"H.264 in .mp4 needs an even width and height, but the frames are {width}x{height}; "
                           "write .gif or .webp.")
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(frame.convert("RGB"))))
        container.mux(stream.encode())  # flush the encoder's delayed frames
