"""`transgan export`: a pipeline's networks as ONNX files (`transgan_hf.onnx_export`), checked with ONNX Runtime.

The files go to a folder, so the flag is `--output_dir` (the shared vocabulary of `transgan_hf.cli`). They are written
in a staging folder beside it and moved in together, so an interrupted export leaves the folder as it was.
"""

from __future__ import annotations

import argparse

import torch
from tqdm.auto import tqdm

from ..atomic_files import move_entries_into_place, staging_folder
from ..cli import CommandError, add_progress_argument, as_command_error, check_output_path
from ..onnx_export import OPSET, PARITY_TOLERANCE, OnnxRuntimeNetwork, export_onnx, max_abs_difference
from ..pipeline_transgan import TransGANPipeline

FILE_NAMES = {"generator": "generator.onnx", "discriminator": "discriminator.onnx"}

EXAMPLES = f"""\
examples:
  transgan export --output_dir demo-onnx                          # the bundled MNIST demo model
  transgan export --model org/transgan-church --output_dir church-onnx --discriminator
  transgan generate --backend onnxruntime --model demo-onnx --seeds 0-15 --output_dir digits

Writes generator.onnx (and discriminator.onnx): ONNX opset {OPSET}, float32, dynamic batch dimension.
  generator:     latents (batch, latent_dim) -> images (batch, C, H, W), raw output in about [-1, 1]
  discriminator: pixel_values (batch, C, H, W) in [-1, 1] -> logits (batch, 1)
Networks with noise injection also take noise_0, noise_1, ...: the standard-normal per-token noise of each
transformer block in forward order, each (batch, tokens, 1); zeros turn the noise off.
Run them with ONNX Runtime, e.g. in Python:
  session = onnxruntime.InferenceSession("demo-onnx/generator.onnx")
  images = session.run(None, {{"latents": numpy.random.randn(4, 64).astype("float32")}})[0]
Each file is checked after export: ONNX Runtime (CPU) must give PyTorch's outputs within {PARITY_TOLERANCE:.0e}.
Exporter: torch.onnx.export(dynamo=True), torch's default (torch.export, then onnxscript; offline). Needs the onnx
extra: pip install 'transgan-hf[onnx]' (onnx, onnxscript, onnxruntime). The 256-px presets take minutes.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a pipeline's networks to ONNX",
        description="Export the generator (and, with --discriminator, the discriminator) of a TransGAN pipeline to "
                    "ONNX files in --output_dir, then check them with ONNX Runtime.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", metavar="ORG/NAME_OR_DIR",
                        help="Hub repo id or local folder of a TransGANPipeline (default: the bundled MNIST demo "
                             "model, transgan_hf.DEMO_MODEL_PATH)")
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="file format (default: onnx)")
    parser.add_argument("--output_dir", required=True,
                        help="output folder (created if needed; other files in it are kept)")
    parser.add_argument("--discriminator", action="store_true", help="also write discriminator.onnx")
    add_progress_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    outdir = check_output_path(args.output_dir, "--output_dir", folder=True)
    pipeline = load_pipeline(args.model, with_discriminator=args.discriminator)
    networks = {"generator": pipeline.generator}
    if args.discriminator:
        if pipeline.discriminator is None:
            raise CommandError(f"--discriminator: the pipeline {args.model or 'demo model'!r} has no discriminator.")
        networks["discriminator"] = pipeline.discriminator

    differences = {}
    with tqdm(total=len(networks), unit="network", desc="export", disable=args.no_progress) as bar:
        try:
            with staging_folder(outdir) as staging:
                for name, network in networks.items():
                    export_onnx(network, staging / FILE_NAMES[name])
                    differences[name] = max_abs_difference(network, OnnxRuntimeNetwork(staging / FILE_NAMES[name]))
                    bar.update()
                move_entries_into_place(staging, outdir)
        except ImportError as error:  # the onnx extra is not installed
            raise CommandError(str(error)) from None
        except OSError as error:
            raise CommandError(f"cannot write --output_dir {str(outdir)!r}: {error}") from None
    for name, difference in differences.items():
        verdict = "matches" if difference <= PARITY_TOLERANCE else "WARNING: differs from"
        print(f"Wrote {outdir / FILE_NAMES[name]} (opset {OPSET}); ONNX Runtime {verdict} PyTorch, max abs "
              f"difference {difference:.1e}")
    return 0


def load_pipeline(model: str | None, with_discriminator: bool) -> TransGANPipeline:
    """The float32 CPU pipeline `--model` names (the demo model by default), a failure being one `error:` line; also
    used by `transgan generate --backend onnxruntime` to export on the fly."""
    if model is None:
        from .. import DEMO_MODEL_PATH

        model = DEMO_MODEL_PATH
    kwargs = {} if with_discriminator else {"discriminator": None}
    with as_command_error(f"cannot load --model {model!r}: "):
        return TransGANPipeline.from_pretrained(model, dtype=torch.float32, **kwargs)
