"""A plain conv GAN on the embedded MNIST-5k digits: the reference TransGAN's CPU recipe has to beat (issue 18).

What a user would pick instead of TransGAN, written from scratch: DCGAN generator and discriminator (about 1 M
parameters each; batch norm in G, none in D), non-saturating loss, lazy R1 penalty on real images every 4th D step
(weight multiplied by the interval, StyleGAN2), Adam 2e-4 with betas (0.5, 0.99), batch 64, one D step per G step,
EMA of G with decay 0.999 (after the usual `(1 + t) / (10 + t)` warm-up, so early evaluations are not of the
initial weights).

The data are the tensors `training/train.py` trains on by default: `mnist-5k` through `transgan_hf.data`
(`load_image_dataset` + `prepare_training_dataset` with the `tiny` recipe's crop/flip settings, 28x28 -> 32x32,
RGB, [-1, 1]). The score is the project's `fdd_mnist` protocol, as train.py's `--eval_steps` computes it: 5,000
EMA samples (image `i` from seed `SeedSequence([seed, i])`) against the statistics of the 5,000 training digits.

    python benchmarks/dcgan_reference.py --minutes 15 --threads 1 --eval_minutes 1,2,5,10,15 --output_dir runs/dcgan

Training stops after `--minutes` of training wall-clock or `--max_steps` steps; the evaluations (one JSON line each:
minutes, steps, kimg, fdd_mnist, digit_confidence) are not counted in the training time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as training/train.py: idle OpenMP threads sleep

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

LATENT_DIM = 100
RESOLUTION = 32


class Generator(nn.Module):
    """z (B, 100) -> 4x4x256 -> 8x8x128 -> 16x16x64 -> 32x32x3 in [-1, 1] (transposed convs, batch norm, ReLU)."""

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = 64) -> None:
        super().__init__()
        self.latent_dim, self.width = latent_dim, width
        self.project = nn.Sequential(nn.Linear(latent_dim, 4 * width * 16, bias=False), nn.BatchNorm1d(4 * width * 16),
                                     nn.ReLU())
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, 3, 4, 2, 1), nn.Tanh(),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.project(z).view(len(z), 4 * self.width, 4, 4))


class Discriminator(nn.Module):
    """(B, 3, 32, 32) -> logit (B,): three stride-2 convs with leaky ReLU (no normalisation: R1 needs none)."""

    def __init__(self, width: int = 80) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(4 * width * 16, 1),
        )  # fmt: skip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).squeeze(1)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


class DCGANTrainer:
    """One call of `step(real)` = one D update (R1 on every `r1_interval`-th) + one G update + the EMA update."""

    def __init__(self, seed: int = 0, r1_gamma: float = 0.1, r1_interval: int = 4, learning_rate: float = 2e-4,
                 betas: tuple[float, float] = (0.5, 0.99), ema_decay: float = 0.999, g_width: int = 64,
                 d_width: int = 80) -> None:
        torch.manual_seed(seed)
        self.generator, self.discriminator = Generator(width=g_width), Discriminator(width=d_width)
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.g_optimizer = torch.optim.Adam(self.generator.parameters(), lr=learning_rate, betas=betas)
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=learning_rate, betas=betas)
        self.r1_gamma, self.r1_interval, self.ema_decay = r1_gamma, r1_interval, ema_decay
        self.random = torch.Generator().manual_seed(seed + 1)
        self.steps = 0

    def _latents(self, batch_size: int) -> torch.Tensor:
        return torch.randn(batch_size, LATENT_DIM, generator=self.random)

    def step(self, real: torch.Tensor) -> dict[str, float]:
        """Train on one real batch; returns the losses (and `loss/r1` on the steps that apply the penalty)."""
        logs: dict[str, float] = {}
        penalize = self.steps % self.r1_interval == 0
        with torch.no_grad():
            fake = self.generator(self._latents(len(real)))
        real = real.detach().requires_grad_(penalize)
        real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
        d_loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        logs["loss/discriminator"] = float(d_loss.detach())
        if penalize:  # lazy R1: gamma/2 * E||grad D(x)||^2, weighted by the interval
            (gradient,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            r1 = gradient.square().sum(dim=(1, 2, 3)).mean()
            d_loss = d_loss + self.r1_gamma / 2 * self.r1_interval * r1
            logs["loss/r1"] = float(r1.detach())
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optimizer.step()

        self.discriminator.requires_grad_(False)
        g_loss = F.softplus(-self.discriminator(self.generator(self._latents(len(real))))).mean()
        self.g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optimizer.step()
        self.discriminator.requires_grad_(True)
        logs["loss/generator"] = float(g_loss.detach())
        self.steps += 1
        self.update_ema()
        return logs

    @torch.no_grad()
    def update_ema(self) -> None:
        """Parameters and batch-norm statistics of the EMA generator follow G with decay min(0.999, (1+t)/(10+t))."""
        decay = min(self.ema_decay, (1 + self.steps) / (10 + self.steps))
        live = self.generator.state_dict()
        for name, value in self.ema.state_dict().items():
            if value.is_floating_point():
                value.lerp_(live[name], 1 - decay)
            else:
                value.copy_(live[name])


def training_images(seed: int = 0):
    """The default training data of `training/train.py` as one (5000, 3, 32, 32) tensor, and the raw dataset.

    The `tiny` preset's recipe names the dataset and its crop/flip; with a centre crop and no flip the transform is
    deterministic, so the tensors are the same in every epoch and are decoded once."""
    from transgan_hf.data import collate_pixel_values, load_image_dataset, prepare_training_dataset
    from transgan_hf.training.presets import get_training_recipe

    recipe = get_training_recipe("tiny")
    raw = load_image_dataset(recipe.dataset_name)
    dataset, transform, _ = prepare_training_dataset(raw, RESOLUTION, center_crop=recipe.center_crop,
                                                     random_flip=recipe.random_flip, seed=seed)
    if transform.is_random:
        raise RuntimeError("The default training transform is random; decode it per epoch instead of once.")
    rows = dataset[: len(dataset)]
    return collate_pixel_values([{"pixel_values": pixels} for pixels in rows["pixel_values"]]), raw


class FddEvaluator:
    """`fdd_mnist` and digit confidence of a generator, as train.py's `--eval_steps` hook computes them on MNIST-5k."""

    def __init__(self, raw_dataset, num_images: int = 5000, seed: int = 0, batch_size: int = 250) -> None:
        from transgan_hf.data import find_image_column
        from transgan_hf.metrics import build_feature_extractor, compute_reference_statistics, reference_batches

        self.extractor = build_feature_extractor("digits")
        column = find_image_column(raw_dataset)
        batches = reference_batches(raw_dataset, column, len(raw_dataset), batch_size, RESOLUTION)
        self.reference = compute_reference_statistics(batches, self.extractor)
        self.num_images, self.seed, self.batch_size = num_images, seed, batch_size

    @torch.no_grad()
    def __call__(self, generator: nn.Module) -> dict[str, float]:
        from transgan_hf.metrics import evaluate_generator

        def generate(generators: list[torch.Generator]) -> torch.Tensor:
            z = torch.stack([torch.randn(LATENT_DIM, generator=g) for g in generators])
            return generator(z).add(1).div(2).clamp(0, 1)

        result = evaluate_generator(generate, self.num_images, self.extractor, self.reference,
                                    batch_size=self.batch_size, seed=self.seed, metrics=("fid", "confidence"),
                                    progress=False)
        metrics = result["metrics"]
        return {"fdd_mnist": metrics["fdd_mnist"], "digit_confidence": metrics["digit_confidence_mnist"]}


def save_grid(generator: nn.Module, path: Path, seed: int = 0, num_images: int = 64) -> None:
    from PIL import Image

    from transgan_hf.images import image_grid, save_image

    with torch.no_grad():
        z = torch.randn(num_images, LATENT_DIM, generator=torch.Generator().manual_seed(seed))
        images = generator(z).add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    save_image(image_grid([Image.fromarray(image) for image in images]), path)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training wall-clock budget (default 15)")
    parser.add_argument("--max_steps", type=int, help="also stop after this many steps")
    parser.add_argument("--eval_minutes", default="1,2,5,10,15",
                        help="comma-separated training minutes at which to evaluate (and at the end)")
    parser.add_argument("--num_eval_images", type=int, default=5000, help="samples per evaluation (protocol: 5000)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--r1_gamma", type=float, default=0.1)
    parser.add_argument("--r1_interval", type=int, default=4)
    parser.add_argument("--g_width", type=int, default=64, help="G channels 4w-2w-w (64: 1.08 M parameters)")
    parser.add_argument("--d_width", type=int, default=80, help="D channels w-2w-4w (80: 1.03 M, 64: 0.66 M)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", help="write samples.png (final EMA generator) here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, float]]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    images, raw = training_images(args.seed)
    evaluate = FddEvaluator(raw, args.num_eval_images, args.seed)
    trainer = DCGANTrainer(args.seed, r1_gamma=args.r1_gamma, r1_interval=args.r1_interval, g_width=args.g_width,
                           d_width=args.d_width)
    pending = sorted(float(m) for m in args.eval_minutes.split(",") if m.strip() and float(m) <= args.minutes)
    order, position, train_seconds, results = torch.empty(0, dtype=torch.long), 0, 0.0, []

    def report() -> None:
        row = {"minutes": round(train_seconds / 60, 3), "steps": trainer.steps,
               "kimg": round(trainer.steps * args.batch_size / 1000, 3), **evaluate(trainer.ema)}
        results.append(row)
        print(json.dumps(row), flush=True)

    while train_seconds < args.minutes * 60 and (args.max_steps is None or trainer.steps < args.max_steps):
        started = time.perf_counter()
        if position + args.batch_size > len(order):  # new epoch: shuffled, last partial batch dropped
            order, position = torch.randperm(len(images), generator=trainer.random), 0
        trainer.step(images[order[position : position + args.batch_size]])
        position += args.batch_size
        train_seconds += time.perf_counter() - started
        if pending and train_seconds >= pending[0] * 60:
            pending = [minute for minute in pending if minute * 60 > train_seconds]
            report()
    if not results or results[-1]["steps"] != trainer.steps:
        report()
    if args.output_dir:
        save_grid(trainer.ema, Path(args.output_dir) / "samples.png", args.seed)
    return results


if __name__ == "__main__":
    main()
