#!/usr/bin/env python
"""Speed-up over the official code from paired runs: each round runs the official code's computation
(`official_reference.py`) and then ours, so that every ratio compares runs minutes apart on the same machine; the
median over rounds is reported. On a shared machine whose speed drifts by 20 % between runs, single runs mislead.

    python benchmarks/side_by_side.py --rounds 3

Ratios: training = official (D step + G step) / ours; sampling = our images/s / official images/s. The last line is
one JSON object: the median ratio of each configuration, and the ratios of every round.

Our runs keep freed CPU memory for reuse (`transgan_hf.cpu_memory`, on by default in training and `transgan
generate`); the official code does not. `--also_official_with_cpu_memory_reuse` also runs the official code with that
setting in every round and reports ratios against it too ("... vs official + reuse"): the speed-up of the code alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OURS_TRAIN = {
    "train fp32": [],
    "train bf16": ["--mixed_precision", "bf16"],
    "train bf16 gp_interval 2": ["--mixed_precision", "bf16", "--gp_interval", "2"],
    "train bf16 gp_interval 2 OMP active": ["--mixed_precision", "bf16", "--gp_interval", "2"],
}
# Environment of a configuration: training/train.py lets idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE) unless
# told otherwise, which training/README.md advises against on a dedicated machine.
ENVIRONMENT = {"train bf16 gp_interval 2 OMP active": {"OMP_WAIT_POLICY": "ACTIVE"}}
OURS_SAMPLE = {
    "sample fp32": [],
    "sample bf16": ["--mixed_precision", "bf16"],
    "sample bf16 weights": ["--dtype", "bfloat16"],
}


def run(script: str, *flags: str, environment: dict[str, str] | None = None) -> dict[str, float]:
    """One benchmark process (with `environment` added to ours); its last stdout line is the result."""
    result = subprocess.run([sys.executable, script, *flags], cwd=HERE, capture_output=True, text=True,
                            env={**os.environ, **(environment or {})})
    if result.returncode != 0:
        raise SystemExit(f"error: {script} {' '.join(flags)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cifar10")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed repetitions per run (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=8, help="discriminator batch")
    parser.add_argument("--gen_batch_size", type=int, default=16)
    parser.add_argument("--sample_batch_size", type=int, default=64)
    parser.add_argument("--only", choices=("train", "sample"), help="run the training or the sampling rounds only")
    parser.add_argument("--also_official_with_cpu_memory_reuse", action="store_true",
                        help="also compare with the official code given our CPU allocator setting")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    timing = ["--preset", args.preset, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    train = timing + ["--batch_size", str(args.batch_size), "--gen_batch_size", str(args.gen_batch_size)]
    sample = timing + ["--batch_size", str(args.sample_batch_size)]
    ours_train = {} if args.only == "sample" else OURS_TRAIN
    ours_sample = {} if args.only == "train" else OURS_SAMPLE
    officials = {"": []}
    if args.also_official_with_cpu_memory_reuse:
        officials[" vs official + reuse"] = ["--cpu_memory_reuse"]
    ratios: dict[str, list[float]] = {name + suffix: [] for suffix in officials for name in (*ours_train, *ours_sample)}
    for round_index in range(args.rounds):
        if ours_train:
            train_round(round_index, train, ours_train, officials, ratios)
        if ours_sample:
            sample_round(round_index, sample, ours_sample, officials, ratios)
    medians = {name: round(statistics.median(values), 3) for name, values in ratios.items()}
    for name, value in medians.items():
        print(f"{name:<48} median {value:.2f}x  (rounds: {', '.join(f'{r:.2f}' for r in ratios[name])})")
    print(json.dumps({"median_speedup": medians, "rounds": ratios}))


Ratios = dict[str, list[float]]


def train_round(round_index: int, flags: list[str], ours: dict[str, list[str]], officials: dict[str, list[str]],
                ratios: Ratios) -> None:
    official_step = {}
    for suffix, extra in officials.items():
        official = run("official_reference.py", "train_step", *flags, *extra)
        official_step[suffix] = official["d_step_s"] + official["g_step_s"]
        print(f"round {round_index + 1}: official{suffix.removeprefix(' vs official')} train step "
              f"{official_step[suffix]:.2f} s", flush=True)
    for name, extra in ours.items():
        result = run("train_step.py", *flags, *extra, environment=ENVIRONMENT.get(name))
        step = result["d_step_s"] + result["g_step_s"]
        for suffix, official in official_step.items():
            ratios[name + suffix].append(round(official / step, 3))
        speedups = ", ".join(f"{official / step:.2f}x" for official in official_step.values())
        print(f"  {name:<26} {step:.2f} s  {speedups}", flush=True)


def sample_round(round_index: int, flags: list[str], ours: dict[str, list[str]], officials: dict[str, list[str]],
                 ratios: Ratios) -> None:
    official_rate = {}
    for suffix, extra in officials.items():
        official_rate[suffix] = run("official_reference.py", "sample", *flags, *extra)["images_per_s"]
        print(f"round {round_index + 1}: official{suffix.removeprefix(' vs official')} sampling "
              f"{official_rate[suffix]:.2f} images/s", flush=True)
    for name, extra in ours.items():
        images_per_s = run("sample.py", *flags, *extra)["images_per_s"]
        for suffix, official in official_rate.items():
            ratios[name + suffix].append(round(images_per_s / official, 3))
        speedups = ", ".join(f"{images_per_s / official:.2f}x" for official in official_rate.values())
        print(f"  {name:<26} {images_per_s:.2f} images/s  {speedups}", flush=True)


if __name__ == "__main__":
    main()
