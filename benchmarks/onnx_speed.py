#!/usr/bin/env python
"""Generator throughput on the CPU: ONNX Runtime against PyTorch float32 and bfloat16, and the largest difference
between ONNX Runtime's and PyTorch's float32 images (the export of `transgan export`, `transgan_hf.onnx_export`).

    python benchmarks/onnx_speed.py --threads 1                          # the bundled demo model (tiny preset)
    python benchmarks/onnx_speed.py --preset church_256 --batch_size 2   # a full preset, random weights

Times one forward pass of the generator on a batch of latents and noise inputs, the same for the three backends
(latent drawing and post-processing excluded): PyTorch float32, PyTorch with bfloat16 weights (`transgan generate
--dtype bfloat16`), and ONNX Runtime's CPU session with as many threads as torch. Random presets get noise strengths
of 0.5, so that the noise inputs count in the difference. Prints human-readable lines, then one JSON object with
`max_abs_diff`, `export_s` and the images/s of each backend.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
from harness import median_seconds, report

from transgan_hf import DEMO_MODEL_PATH, TransGANGenerator, TransGANGeneratorConfig, TransGANPipeline
from transgan_hf.onnx_export import NoiseInputs, OnnxRuntimeNetwork, draw_noise_inputs, export_onnx


def load_generator(args: argparse.Namespace) -> tuple[TransGANGenerator, str]:
    if args.preset is not None:
        torch.manual_seed(0)
        generator = TransGANGenerator(TransGANGeneratorConfig.from_preset(args.preset))
        with torch.no_grad():
            for name, parameter in generator.named_parameters():
                if name.endswith("attention.noise_strength"):
                    parameter.fill_(0.5)
        return generator, f"preset {args.preset} (random weights)"
    model = args.model or DEMO_MODEL_PATH
    pipeline = TransGANPipeline.from_pretrained(model, dtype=torch.float32, discriminator=None)
    return pipeline.generator, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="pipeline folder or Hub id (default: the bundled demo model)")
    source.add_argument("--preset", choices=TransGANGeneratorConfig.available_presets(),
                        help="a generator preset with random weights instead of a trained model")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed repetitions (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions first")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of torch and ONNX Runtime (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    generator, name = load_generator(args)
    generator.eval()
    generator_bf16 = copy.deepcopy(generator).to(torch.bfloat16)

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        export_onnx(generator, Path(folder) / "generator.onnx")
        export_seconds = time.perf_counter() - start
        network = OnnxRuntimeNetwork(Path(folder) / "generator.onnx", num_threads=torch.get_num_threads())

    seed = torch.Generator().manual_seed(0)
    latents = torch.randn(args.batch_size, generator.config.latent_dim, generator=seed)
    noise = draw_noise_inputs(network.noise_tokens, args.batch_size, seed)

    @torch.no_grad()
    def pytorch(model: TransGANGenerator) -> torch.Tensor:
        return model(latents, noise_generator=NoiseInputs(noise)).images

    difference = (network(latents, noise) - pytorch(generator)).abs().max().item()
    rates = {
        "pytorch_fp32": args.batch_size / median_seconds(lambda: pytorch(generator), cpu, args.steps, args.warmup),
        "pytorch_bf16": args.batch_size / median_seconds(lambda: pytorch(generator_bf16), cpu, args.steps,
                                                         args.warmup),
        "onnxruntime": args.batch_size / median_seconds(lambda: network(latents, noise), cpu, args.steps, args.warmup),
    }
    report(
        {"generator": name, "batch_size": str(args.batch_size), "threads": str(torch.get_num_threads()),
         "export (s)": f"{export_seconds:.1f}", "max abs diff ORT vs fp32": f"{difference:.2e}",
         **{f"{backend} images/s": f"{rate:.2f}" for backend, rate in rates.items()},
         "ORT vs PyTorch fp32": f"{rates['onnxruntime'] / rates['pytorch_fp32']:.2f}x"},
        {"max_abs_diff": difference, "export_s": round(export_seconds, 2),
         **{f"{backend}_images_per_s": round(rate, 3) for backend, rate in rates.items()}},
    )


if __name__ == "__main__":
    main()
