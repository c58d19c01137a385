#!/usr/bin/env bash
# Set up and run the main job: train the `tiny` TransGAN on the embedded MNIST-5k digits (CPU is fine: 4,000 steps,
# about 18 minutes on one core of this project's 2-core CPU). Extra arguments go to training/train.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1
# accelerate launch gives each process one CPU thread unless told otherwise; the main job is one process and uses every
# core of the machine (set TRANSGAN_CPU_THREADS to give it fewer).
exec accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
    --num_cpu_threads_per_process "${TRANSGAN_CPU_THREADS:-$(nproc)}" training/train.py "$@"
