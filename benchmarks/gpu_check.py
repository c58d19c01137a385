#!/usr/bin/env python
"""The checks to run when a GPU is lent, in one process and a time budget (`gpu_check.sh` runs it with a hard limit):

1. official-fixture parity: the official checkpoint converted and run on the device in fp32 (TF32 off) against the
   outputs the official code produced (`--fixtures`, the folder of `cifar_small_*`);
2. training steps of every official preset with its recipe (D loader iterations `n_critic x accumulation`, one G update
   of `gen_gradient_accumulation_steps` micro-batches, the EMA update; training's own `GANTrainer`), bf16 autocast:
   s/kimg, real images/s, peak memory, FLOPs per step (`torch.utils.flop_counter.FlopCounterMode`) and the model-FLOP
   utilisation against the device's dense bf16 peak;
3. sampling images/s of every preset's `TransGANPipeline`;
4. 2 and 3 with `--compile` (training's: the generator; with the penalty's double backward the discriminator stays
   eager) after all eager figures, with the compiled samples' largest difference from the eager ones.

    bash benchmarks/gpu_check.sh /path/to/fixtures/official            # CUDA, the official presets, < 8 minutes
    python benchmarks/gpu_check.py --device cpu --tiny --fixtures DIR    # the `tiny` preset on a CPU: a smoke test

Prints one JSON line per figure (`"check"`: `parity`, `train`, `sample`, then `summary`), each as it is measured; a
figure the budget (`--budget_s`) leaves no time for is printed with `"skipped"`. Weights and real images are random:
speed does not depend on them. The official runs used 8 GPUs, so the training figures time one GPU's share of such a
run by default (`--world_size 8`: the global batches divided by 8; `s_per_kimg_run` is the whole run's s/kimg if 8 GPUs
scale perfectly); `--world_size 1` times the whole recipe on one GPU (`--tiny`'s default).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from harness import median_seconds, peak_memory_mb, synchronize
from torch.utils.flop_counter import FlopCounterMode

OFFICIAL_PRESETS = ("cifar10", "stl10", "celeba_hq_256", "church_256")
SAMPLE_BATCH = {"cifar10": 64, "stl10": 64, "celeba_hq_256": 16, "church_256": 16, "tiny": 16}
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}
"""Dense bf16 peaks of the datasheets, matched in this order against the device name (`--peak_tflops` overrides)."""
MIN_SECONDS_LEFT = {"train": 20.0, "sample": 10.0, "compile": 120.0}
"""A figure starts only with this much of the budget left (compiling a 256-px generator takes minutes)."""


class TotalOnly:
    """Stands in for `FlopCounterMode`'s module tracker: its per-module counts register backward hooks that
    `torch.autograd.grad` (the gradient penalty's double backward) refuses, and only the total is needed here."""

    parents = frozenset({"Global"})

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        return None


def count_flops(step) -> int:
    """FLOPs of `step()`: matrix products, convolutions and attention kernels, forward and backward."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = TotalOnly()
    with counter:
        step()
    return counter.get_total_flops()


def significant(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((value for key, value in PEAK_BF16_TFLOPS.items() if key in name), None)


# ---------------------------------------------------------------------------------------------------------------------
# 1. Official-fixture parity
# ---------------------------------------------------------------------------------------------------------------------


def check_parity(fixtures: Path, device: torch.device) -> dict:
    """The converted official CIFAR pair on `device`, fp32 without TF32, against the official outputs."""
    from transformers import AutoModel

    import transgan_hf  # noqa: F401  (registers the Auto classes)
    from transgan_hf.convert_official import convert

    io = np.load(fixtures / "cifar_small_io.npz")
    matmul_tf32, cudnn_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with tempfile.TemporaryDirectory() as folder:
            convert(fixtures / "cifar_small_checkpoint.pth", folder, official_args=fixtures / "cifar_small_args.json")
            generator = AutoModel.from_pretrained(Path(folder) / "generator").to(device).eval()
            discriminator = AutoModel.from_pretrained(Path(folder) / "discriminator").to(device).eval()
        with torch.no_grad():
            images = generator(torch.from_numpy(io["z"]).to(device)).images.cpu()
            logits = discriminator(torch.from_numpy(io["disc_input"]).to(device)).logits.cpu()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul_tf32, cudnn_tf32
    image_error = (images - torch.from_numpy(io["images"])).abs().max().item()
    logit_error = (logits - torch.from_numpy(io["disc_logits"])).abs().max().item()
    return {"check": "parity", "device": str(device), "images_max_abs": image_error, "logits_max_abs": logit_error,
            "tolerance": 1e-4, "ok": image_error <= 1e-4 and logit_error <= 1e-4}


# ---------------------------------------------------------------------------------------------------------------------
# 2. Training steps
# ---------------------------------------------------------------------------------------------------------------------


def build_trainer(preset: str, device: torch.device, compile: bool, world_size: int, output_dir: str):
    """Training's own parts for `preset`'s recipe in bf16, one process holding one GPU's share of `world_size`."""
    from accelerate import Accelerator

    from transgan_hf.training.args import load_model_configs, parse_args, training_recipe
    from transgan_hf.training.presets import get_training_recipe
    from transgan_hf.training.trainer import GANTrainer, build_models, build_optimizers

    official = get_training_recipe(preset)
    flags = ["--preset", preset, "--mixed_precision", "bf16", "--report_to", "none", "--output_dir", output_dir,
             "--train_batch_size", str(max(1, official.train_batch_size // world_size)),
             "--gen_batch_size", str(max(1, official.gen_batch_size // world_size))]
    args = parse_args(flags + (["--compile"] if compile else []))
    generator_config, discriminator_config = load_model_configs(args)
    recipe = training_recipe(args)
    accelerator = Accelerator(mixed_precision="bf16", cpu=device.type == "cpu")
    generator, discriminator, ema = build_models(generator_config, discriminator_config, accelerator.device,
                                                 seed=0, loss=recipe.loss, compile=compile)
    optimizers = build_optimizers(generator, discriminator, recipe)
    generator, discriminator, *optimizers = accelerator.prepare(generator, discriminator, *optimizers)
    trainer = GANTrainer(accelerator, generator, discriminator, *optimizers, ema, recipe, seed=0)
    size = generator_config.image_size
    real = torch.rand((recipe.train_batch_size, 3, size, size), device=accelerator.device) * 2 - 1
    return trainer, recipe, real


def training_step(trainer, recipe, real: torch.Tensor) -> None:
    """One step of training's loop: `n_critic x accumulation` D iterations, the G update and EMA after the first."""
    for index in range(recipe.n_critic * recipe.gradient_accumulation_steps):
        update = (index + 1) % recipe.gradient_accumulation_steps == 0
        trainer.discriminator_iteration(real, step=1, update=update, penalize=True)
        if index == 0:
            trainer.generator_update(step=1)
            trainer.update_ema(cur_nimg=10**6)


def check_training(preset: str, device: torch.device, compile: bool, options: argparse.Namespace,
                   flops: dict[str, float]) -> dict:
    reset_peak_memory(device)
    with tempfile.TemporaryDirectory() as output_dir:
        trainer, recipe, real = build_trainer(preset, device, compile, options.world_size, output_dir)
        started = time.perf_counter()
        training_step(trainer, recipe, real)  # the first step compiles
        synchronize(device)
        first_step = time.perf_counter() - started
        if not compile:  # FLOPs of the eager step (the same computation compiled)
            flops[preset] = count_flops(lambda: training_step(trainer, recipe, real))
        seconds = median_seconds(lambda: training_step(trainer, recipe, real), device, options.steps, options.warmup)
    images = recipe.n_critic * recipe.gradient_accumulation_steps * recipe.train_batch_size
    record = {"check": "train", "preset": preset, "compile": compile, "mixed_precision": "bf16",
              "device": str(device), "world_size": options.world_size,
              "batch_d_g": [recipe.train_batch_size, recipe.gen_batch_size],
              "accumulation_d_g": [recipe.gradient_accumulation_steps, recipe.gen_gradient_accumulation_steps],
              "n_critic": recipe.n_critic, "step_s": round(seconds, 4), "first_step_s": round(first_step, 2),
              "s_per_kimg": round(seconds / images * 1000, 3), "img_per_s": round(images / seconds, 2),
              "s_per_kimg_run": round(seconds / images * 1000 / options.world_size, 3),
              "peak_mem_mb": round(peak_memory_mb(device), 1)}
    peak = peak_tflops(device, options.peak_tflops)
    if preset in flops:
        achieved = flops[preset] / seconds / 1e12
        record.update(tflop_per_step=significant(flops[preset] / 1e12), tflops=significant(achieved),
                      mfu=significant(achieved / peak) if peak else None)
    return record


# ---------------------------------------------------------------------------------------------------------------------
# 3. Sampling
# ---------------------------------------------------------------------------------------------------------------------


def check_sampling(preset: str, device: torch.device, compile: bool, options: argparse.Namespace) -> dict:
    from transgan_hf import TransGANGenerator, TransGANGeneratorConfig, TransGANPipeline

    reset_peak_memory(device)
    torch.manual_seed(0)
    pipeline = TransGANPipeline(generator=TransGANGenerator(TransGANGeneratorConfig.from_preset(preset))).to(device)
    pipeline.set_progress_bar_config(disable=True)
    batch = SAMPLE_BATCH[preset]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def sample() -> torch.Tensor:
        with autocast:
            return pipeline(batch_size=batch, generator=torch.Generator(device).manual_seed(0),
                            output_type="pt").images

    record = {"check": "sample", "preset": preset, "compile": compile, "mixed_precision": "bf16",
              "device": str(device), "batch_size": batch}
    if compile:
        eager = sample()
        pipeline.generator.compile()  # in place, as training's --compile
        record["max_abs_diff_vs_eager"] = (sample() - eager).abs().max().item()
    seconds = median_seconds(sample, device, options.steps, options.warmup)
    record.update(img_per_s=round(batch / seconds, 2), peak_mem_mb=round(peak_memory_mb(device), 1))
    return record


# ---------------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------------


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixtures", type=Path,
                        help="folder of the official fixtures (cifar_small_checkpoint.pth, cifar_small_args.json, "
                             "cifar_small_io.npz); without it the parity check is skipped")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="the `tiny` preset only: a quick run, e.g. on a CPU")
    parser.add_argument("--presets", help=f"comma-separated presets (default: {','.join(OFFICIAL_PRESETS)})")
    parser.add_argument("--compile", default="off,on", choices=("off", "on", "off,on"),
                        help="eager, compiled or both (default: both, the compiled figures after all eager ones)")
    parser.add_argument("--world_size", type=int,
                        help="time one GPU's share of an N-GPU run: the global batches divided by N (default: 8, as "
                             "the official runs; 1 with --tiny)")
    parser.add_argument("--steps", type=int, default=2, help="timed repetitions (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions first (after the first step)")
    parser.add_argument("--budget_s", type=float, default=450.0,
                        help="seconds for the whole run; figures that would start too late are printed as skipped")
    parser.add_argument("--peak_tflops", type=float,
                        help="the device's dense bf16 peak for the utilisation (default: from the device name)")
    options = parser.parse_args(argv)
    if options.presets and options.tiny:
        parser.error("--tiny is the `tiny` preset; give --presets or --tiny, not both")
    options.presets = ["tiny"] if options.tiny else (options.presets or ",".join(OFFICIAL_PRESETS)).split(",")
    unknown = sorted(set(options.presets) - set(SAMPLE_BATCH))
    if unknown:
        parser.error(f"--presets: unknown {unknown}; choose from {', '.join(SAMPLE_BATCH)}")
    if options.fixtures is not None and not (options.fixtures / "cifar_small_io.npz").is_file():
        parser.error(f"--fixtures {str(options.fixtures)!r} has no cifar_small_io.npz; give the official fixtures' "
                     "folder")
    if options.world_size is None:
        options.world_size = 1 if options.tiny else 8
    if options.world_size < 1 or options.steps < 1 or options.warmup < 0:
        parser.error("--world_size and --steps must be >= 1, --warmup >= 0")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but no CUDA device is available; use --device cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    started = time.perf_counter()
    skipped: list[str] = []
    failed: list[str] = []
    flops: dict[str, float] = {}

    def run(name: str, kind: str, measure) -> None:
        left = options.budget_s - (time.perf_counter() - started)
        if left < MIN_SECONDS_LEFT[kind]:
            skipped.append(name)
            emit({"check": name.split(" ")[0], "figure": name, "skipped": f"time budget ({left:.0f} s left)"})
            return
        try:
            record = measure()
            emit(record)
            if record.get("ok") is False:
                failed.append(name)
        except Exception as error:  # one figure failing (out of memory, a compiler error) must not stop the others
            failed.append(name)
            emit({"check": name.split(" ")[0], "figure": name, "error": f"{type(error).__name__}: {error}"[:500]})
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()

    try:
        if options.fixtures is None:
            skipped.append("parity")
            emit({"check": "parity", "skipped": "no --fixtures folder"})
        else:
            run("parity", "train", lambda: check_parity(options.fixtures, device))
        for compile in [mode == "on" for mode in options.compile.split(",")]:
            kind = "compile" if compile else "train"
            for preset in options.presets:
                run(f"train {preset} compile={compile}", kind,
                    lambda: check_training(preset, device, compile, options, flops))  # noqa: B023 (called at once)
            for preset in options.presets:
                run(f"sample {preset} compile={compile}", "compile" if compile else "sample",
                    lambda: check_sampling(preset, device, compile, options))  # noqa: B023
    except KeyboardInterrupt:  # gpu_check.sh's hard limit: say so, after the figures already printed
        skipped.append("the rest (interrupted)")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    emit({"check": "summary", "device": name, "torch": torch.__version__,
          "seconds": round(time.perf_counter() - started, 1), "skipped": skipped, "failed": failed})
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        raise SystemExit(main())
