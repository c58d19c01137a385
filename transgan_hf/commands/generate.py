"""`transgan generate`: one PNG per seed, and optionally a grid, from a TransGAN pipeline (cf. StyleGAN generate.py).

The images go to a folder, so the flag is `--output_dir` (the shared vocabulary of `transgan_hf.cli`); `--outdir`, its
former spelling, still works for one release. A progress bar counts the images on stderr (`--no_progress` hides it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from ..cli import (
    CommandError,
    add_progress_argument,
    add_renamed_argument,
    as_command_error,
    check_minimums,
    check_output_path,
)
from ..cpu_memory import reuse_freed_cpu_memory
from ..images import image_grid, save_image
from ..onnx_export import OnnxRuntimeGenerator, export_onnx
from ..pipeline_transgan import TransGANPipeline, check_truncation
from .export import load_pipeline

MAX_SEEDS = 1_000_000
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
BACKENDS = ["pytorch", "onnxruntime"]

EXAMPLES = """\
examples:
  transgan generate --seeds 0-63 --grid grid.png --output_dir digits      # the bundled MNIST demo model
  transgan generate --model org/transgan-stl10 --seeds 0-15 --output_dir out
  transgan generate --model ./my-pipeline --seeds 0-63,100 --truncation 0.7 --grid grid.png --output_dir out
  transgan generate --model org/transgan-stl10 --seeds 0-7 --num_candidates 4 --device cuda --output_dir best
  transgan generate --model org/transgan-stl10 --seeds 0-999 --dtype bfloat16 --output_dir many
  transgan generate --backend onnxruntime --model demo-onnx --seeds 0-63 --output_dir digits   # transgan export

Seed s always uses the same latent and noise (torch.Generator().manual_seed(s)), whatever the other seeds and
--batch_size are.
Models are Hub repo ids or local pipeline folders; with HF_HUB_OFFLINE=1 only the Hugging Face cache is used.
--backend onnxruntime runs the generator with ONNX Runtime on the CPU (pip install 'transgan-hf[onnx]'), with the
same latents and noise per seed: --model is a folder with generator.onnx (written by `transgan export`) or that
file, or else a pipeline, exported to a temporary folder first (tens of seconds; export once to skip it).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate images for a list of seeds",
        description="Generate one PNG per seed (seed0000.png, ...) with a TransGAN pipeline, optionally a grid.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", metavar="ORG/NAME_OR_DIR",
                        help="Hub repo id or local folder of a TransGANPipeline (default: the bundled MNIST demo "
                             "model, transgan_hf.DEMO_MODEL_PATH)")
    parser.add_argument("--seeds", required=True, help="seeds: numbers and inclusive ranges, e.g. 0-15,20")
    add_renamed_argument(parser, "--output_dir", "--outdir", required=True, help="output folder (created if needed)")
    parser.add_argument("--truncation", type=float, default=None, metavar="T",
                        help="truncated latents, T in (0, 1]: N(0,1) restricted to [-2, 2], times T (default: none)")
    parser.add_argument("--num_candidates", type=int, default=1, metavar="K",
                        help="draw K candidates per seed and keep the one the discriminator scores highest")
    parser.add_argument("--grid", metavar="PATH",
                        help="also write all images as one grid image (relative paths are inside --output_dir)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    parser.add_argument("--batch_size", type=int, default=16, help="seeds generated per forward pass (default: 16)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="weights and compute in this type (default: float32); bfloat16 samples about 2x faster "
                             "on CPUs with bf16 units (benchmarks/README.md), pixels within a few levels of float32")
    parser.add_argument("--backend", choices=BACKENDS, default="pytorch",
                        help="run the generator with PyTorch (default) or ONNX Runtime on the CPU (float32; --model: "
                             "a folder with generator.onnx from `transgan export`, or a pipeline to export first)")
    add_progress_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    seeds = parse_seeds(args.seeds)
    check_minimums(args, {"num_candidates": 1, "batch_size": 1})
    try:
        check_truncation(args.truncation)
    except ValueError as error:
        raise CommandError(f"--truncation: {error}") from None
    if args.backend == "onnxruntime":
        check_onnxruntime_arguments(args)
    device = resolve_device(args.device or ("cpu" if args.backend == "onnxruntime" else None))
    if device.type == "cpu":
        reuse_freed_cpu_memory()  # a batch job: freed activations are reused by the next batch (cpu_memory.py)
    outdir = check_output_path(args.output_dir, "--output_dir", folder=True)
    grid_path = None
    if args.grid:
        grid_path = check_output_path(outdir / args.grid, "--grid", folder=False)
        if Image.registered_extensions().get(grid_path.suffix.lower()) not in Image.SAVE:
            raise CommandError(f"--grid {args.grid!r} needs an image file extension that PIL writes, such as .png or "
                               ".jpg.")

    if args.backend == "onnxruntime":
        onnx_generator = load_onnx_generator(args.model)

        def sample(generators: list[torch.Generator]) -> list[Image.Image]:
            return onnx_generator.sample_images(generators, args.truncation)
    else:
        if args.model is None:
            from .. import DEMO_MODEL_PATH

            args.model = DEMO_MODEL_PATH
        with as_command_error(f"cannot load --model {args.model!r}: "):
            pipeline = TransGANPipeline.from_pretrained(args.model, dtype=DTYPES[args.dtype]).to(device)

        def sample(generators: list[torch.Generator]) -> list[Image.Image]:
            return pipeline(batch_size=len(generators), generator=generators, truncation=args.truncation,
                            num_candidates=args.num_candidates).images

    grid_images = []
    with tqdm(total=len(seeds), unit="img", desc="generate", disable=args.no_progress) as bar:
        for start in range(0, len(seeds), args.batch_size):
            chunk = seeds[start:start + args.batch_size]
            try:
                images = sample([torch.Generator().manual_seed(seed) for seed in chunk])
            except ValueError as error:
                raise CommandError(str(error)) from None
            for seed, image in zip(chunk, images):
                write_image(image, outdir / f"seed{seed:04d}.png")
            if grid_path is not None:
                grid_images.extend(images)
            bar.update(len(chunk))
    message = f"Wrote {len(seeds)} image{'s' * (len(seeds) != 1)} to {outdir}"
    if grid_path is not None:
        write_image(image_grid(grid_images), grid_path)
        message += f" and the grid {grid_path}"
    print(message)
    return 0


def check_onnxruntime_arguments(args: argparse.Namespace) -> None:
    """Refuse the flags that need the PyTorch pipeline."""
    if args.num_candidates > 1:
        raise CommandError("--num_candidates ranks samples with the PyTorch discriminator; use --backend pytorch.")
    if args.dtype != "float32":
        raise CommandError(f"--dtype {args.dtype} is for --backend pytorch; the ONNX generator runs in float32.")
    if args.device not in (None, "cpu"):
        raise CommandError(f"--backend onnxruntime runs on the CPU; drop --device {args.device} or use --backend "
                           "pytorch.")


def load_onnx_generator(model: str | None) -> OnnxRuntimeGenerator:
    """The ONNX Runtime generator of `--model`: that `.onnx` file, `generator.onnx` in that folder, or else the
    pipeline's generator exported to a temporary folder (the session keeps the model once loaded)."""
    try:
        if model is not None and (model.endswith(".onnx") or (Path(model) / "generator.onnx").is_file()):
            with as_command_error(f"cannot load --model {model!r}: "):
                return OnnxRuntimeGenerator(model if model.endswith(".onnx") else Path(model) / "generator.onnx")
        pipeline = load_pipeline(model, with_discriminator=False)
        print("Exporting the generator to ONNX first (`transgan export` once skips this) ...", file=sys.stderr)
        with tempfile.TemporaryDirectory() as folder:
            export_onnx(pipeline.generator, Path(folder) / "generator.onnx")
            return OnnxRuntimeGenerator(Path(folder) / "generator.onnx")
    except ImportError as error:  # the onnx extra is not installed
        raise CommandError(str(error)) from None


def parse_seeds(text: str) -> list[int]:
    """`"0-3,7"` -> `[0, 1, 2, 3, 7]` (inclusive ranges, duplicates dropped, order kept)."""
    ranges = []
    for part in text.split(","):
        part = part.strip()
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()) or (_ and not high):
            raise CommandError(f"--seeds: {part!r} is not a seed or a range; write non-negative numbers and "
                               "inclusive ranges separated by commas, e.g. 0-15,20.")
        low, high = int(low), int(high or low)
        if high < low:
            raise CommandError(f"--seeds: range {part!r} goes backwards; write it as {high}-{low}.")
        if high >= 2**63:
            raise CommandError(f"--seeds: {high} is too large; seeds must be below 2**63.")
        ranges.append((low, high))
    if sum(high - low + 1 for low, high in ranges) > MAX_SEEDS:
        raise CommandError(f"--seeds asks for more than {MAX_SEEDS:,} images; split the work into several runs.")
    return list(dict.fromkeys(seed for low, high in ranges for seed in range(low, high + 1)))


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CommandError(f"--device {name!r} is not a device; use cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"--device {name}: CUDA is not available on this machine or torch build; use --device cpu.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CommandError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CommandError(f"--device {name}: MPS is not available on this machine; use --device cpu.")
    if device.type not in ("cpu", "cuda", "mps"):
        raise CommandError(f"--device {name!r} is not supported; use cpu, cuda, cuda:N or mps.")
    return device


def write_image(image: Image.Image, path: Path) -> None:
    """`transgan_hf.images.save_image` (atomic), a failure being one `error:` line."""
    with as_command_error(f"cannot write {str(path)!r}: "):
        save_image(image, path)
