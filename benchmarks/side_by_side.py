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
            paired_round(round_index, "train_step.py", train, ours_train, officials, ratios)
        if ours_sample:
            paired_round(round_index, "sample.py", sample, ours_sample, officials, ratios)
    medians = {name: round(statistics.median(values), 3) for name, values in ratios.items()}
    for name, value in medians.items():
        print(f"{name:<48} median {value:.2f}x  (rounds: {', '.join(f'{r:.2f}' for r in ratios[name])})")
    print(json.dumps({"median_speedup": medians, "rounds": ratios}))


def training_speed(result: dict[str, float]) -> float:
    return 1 / (result["d_step_s"] + result["g_step_s"])


TASKS = {  # our script -> the official re-enactment's task, speed from a result (higher is faster), how it is shown
    "train_step.py": ("train_step", training_speed, lambda speed: f"train step {1 / speed:.2f} s"),
    "sample.py": ("sample", lambda result: result["images_per_s"], lambda speed: f"sampling {speed:.2f} images/s"),
}


def paired_round(round_index: int, script: str, flags: list[str], ours: dict[str, list[str]],
                 officials: dict[str, list[str]], ratios: dict[str, list[float]]) -> None:
    """The official code (once per entry of `officials`), then each of our configurations; ratio = our speed / its."""
    task, speed_of, shown = TASKS[script]
    official_speed = {}
    for suffix, extra in officials.items():
        official_speed[suffix] = speed_of(run("official_reference.py", task, *flags, *extra))
        print(f"round {round_index + 1}: official{suffix.removeprefix(' vs official')} {shown(official_speed[suffix])}",
              flush=True)
    for name, extra in ours.items():
        speed = speed_of(run(script, *flags, *extra, environment=ENVIRONMENT.get(name)))
        for suffix, official in official_speed.items():
            ratios[name + suffix].append(round(speed / official, 3))
        speedups = ", ".join(f"{speed / official:.2f}x" for official in official_speed.values())
        print(f"  {name:<26} {shown(speed)}  {speedups}", flush=True)


if __name__ == "__main__":
    main()
