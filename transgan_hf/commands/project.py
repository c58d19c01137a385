"""`transgan project`: the latents that reproduce given images, and the reconstructions (cf. StyleGAN2-ADA
projector.py).

For every image `<name>.<ext>` it writes `<name>_projected.png` (the reconstruction) and `<name>_latent.npy` (a `(1,
latent_dim)` float32 array) into `--output_dir`; `pipe(latents=torch.from_numpy(np.load(path)),
generator=torch.Generator().manual_seed(noise_seed))` draws the reconstruction again (the generator only matters for
models with noise injection). With `--video`, also `<name>_projection.gif`: the image beside the reconstruction as the
optimisation goes. A progress bar counts the steps on stderr (`--no_progress` hides it).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..atomic_files import atomic_write
from ..cli import CommandError, add_progress_argument, as_command_error, check_minimums, check_output_path
from ..data import decode_image
from ..pipeline_transgan import MAX_PROJECTION_STEPS, TransGANPipeline
from ..projection import target_pixels
from .generate import resolve_device, write_image
from .interpolate import write_animation

VIDEO_FRAMES = 60
"""About this many frames of the optimisation go into a `--video` animation, whatever the number of steps."""
VIDEO_MIN_SIDE = 256
"""Animation frames are enlarged by a whole factor (nearest neighbour) to at least this many pixels high."""
VIDEO_FPS = 12

EXAMPLES = """\
examples:
  transgan project --images digit.png --output_dir projected           # the bundled MNIST demo model
  transgan project --model org/transgan-stl10 --images a.png b.jpg --num_steps 500 --video --output_dir out

The starting latents come from --seed; the same images, seed and flags give the same latents.
Models are Hub repo ids or local pipeline folders; with HF_HUB_OFFLINE=1 only the Hugging Face cache is used.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "project",
        help="find the latents that reproduce images",
        description="Project images into a TransGAN generator's latent space: write each image's reconstruction "
                    "(<name>_projected.png) and latent (<name>_latent.npy).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", metavar="ORG/NAME_OR_DIR",
                        help="Hub repo id or local folder of a TransGANPipeline (default: the bundled MNIST demo "
                             "model, transgan_hf.DEMO_MODEL_PATH)")
    parser.add_argument("--images", nargs="+", required=True, metavar="IMAGE",
                        help="image files (any size and mode: read as RGB, resized and centre-cropped to the model's "
                             "size)")
    parser.add_argument("--output_dir", required=True, help="output folder (created if needed)")
    parser.add_argument("--num_steps", type=int, default=200, help="optimisation steps (default: 200)")
    parser.add_argument("--num_starts", type=int, default=4,
                        help="starting latents per image; the best goes on after 30%% of the steps (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starting latents (default: 0)")
    parser.add_argument("--noise_seed", type=int, default=0,
                        help="seed of the fixed noise, for models with noise injection (default: 0)")
    parser.add_argument("--video", action="store_true",
                        help="also write <name>_projection.gif: the image and the reconstruction during the "
                             "optimisation")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    add_progress_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_minimums(args, {"num_steps": 1, "num_starts": 1, "seed": 0, "noise_seed": 0})
    if args.num_steps > MAX_PROJECTION_STEPS:
        raise CommandError(f"--num_steps must be <= {MAX_PROJECTION_STEPS}, got {args.num_steps}.")
    for flag in ("seed", "noise_seed"):
        if getattr(args, flag) >= 2**63:
            raise CommandError(f"--{flag} must be below 2**63, got {getattr(args, flag)}.")
    names = output_names(args.images)
    device = resolve_device(args.device)
    outdir = check_output_path(args.output_dir, "--output_dir", folder=True)
    images = []
    for path in args.images:
        with as_command_error(f"cannot read --images {path!r}: "):
            images.append(decode_image({"path": path, "bytes": None}))

    if args.model is None:
        from .. import DEMO_MODEL_PATH

        args.model = DEMO_MODEL_PATH
    with as_command_error(f"cannot load --model {args.model!r}: "):
        pipeline = TransGANPipeline.from_pretrained(args.model).to(device)
    pipeline.set_progress_bar_config(desc="project", unit="step", disable=args.no_progress)

    record_every = max(1, math.ceil(args.num_steps / VIDEO_FRAMES)) if args.video else None
    try:
        result = pipeline.project(images, num_steps=args.num_steps, num_starts=args.num_starts,
                                  generator=torch.Generator().manual_seed(args.seed), noise_seed=args.noise_seed,
                                  record_every=record_every)
    except ValueError as error:
        raise CommandError(str(error)) from None

    with as_command_error(f"cannot create --output_dir {str(outdir)!r}: "):
        outdir.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        write_image(result.images[index], outdir / f"{name}_projected.png")
        write_latent(result.latents[index:index + 1].numpy(), outdir / f"{name}_latent.npy")
    if args.video:
        videos = [outdir / f"{name}_projection.gif" for name in names]
        write_videos(pipeline, images, result.trajectory, args.noise_seed, videos)
    files = "_projected.png, _latent.npy" + (", _projection.gif" if args.video else "")
    print(f"Projected {len(names)} image{'s' * (len(names) != 1)} into {outdir} ({files})")
    return 0


def output_names(paths: list[str]) -> list[str]:
    """The file stem of each image; two images with one stem would overwrite each other's outputs."""
    names: dict[str, str] = {}
    for path in paths:
        stem = Path(path).stem
        if stem in names:
            raise CommandError(f"--images {names[stem]!r} and {path!r} have the same name {stem!r}, so their outputs "
                               "would overwrite each other; project them in separate runs or rename one.")
        names[stem] = path
    return list(names)


def write_latent(latent: np.ndarray, path: Path) -> None:
    with as_command_error(f"cannot write {str(path)!r}: "), atomic_write(path) as temporary:
        with open(temporary, "wb") as file:  # a file object: `np.save` would add `.npy` to the temporary name
            np.save(file, latent)


def write_videos(pipeline: TransGANPipeline, images: list[Image.Image], trajectory: torch.Tensor, noise_seed: int,
                 paths: list[Path]) -> None:
    """One GIF per image: the image as the model sees it beside the reconstruction at each recorded step."""
    config = pipeline.generator.config
    targets = pipeline.image_processor.postprocess(target_pixels(images, config.image_size, config.out_channels),
                                                   output_type="pil")
    frames = [pipeline(latents=latents, generator=[torch.Generator().manual_seed(noise_seed) for _ in latents]).images
              for latents in trajectory]
    for index, (target, path) in enumerate(zip(targets, paths)):
        video = [side_by_side(target, step[index]) for step in frames]
        with as_command_error(f"cannot write {str(path)!r}: "):
            write_animation(video + video[-1:] * VIDEO_FPS, path, VIDEO_FPS)  # the result held for a second


def side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    """The two images next to each other, enlarged (nearest neighbour) so that small images stay visible."""
    scale = max(1, math.ceil(VIDEO_MIN_SIDE / left.height))
    frame = Image.new("RGB", (2 * left.width * scale, left.height * scale))
    for column, image in enumerate((left, right)):
        enlarged = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
        frame.paste(enlarged, (column * left.width * scale, 0))
    return frame

