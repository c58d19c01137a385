#!/usr/bin/env bash
# The CPU benchmark table of benchmarks/README.md: CIFAR-10 preset, official batch sizes (D 8, G 16, sampling 64),
# fp32 and bf16 autocast, between two runs of the official code's computation (official_reference.py) so that every
# ratio comes from runs side by side. Run it alone on an otherwise idle machine (other programs on the two cores make
# OpenMP kernels many times slower). Prints one JSON line per configuration (the scripts' last line, tagged).
set -euo pipefail
cd "$(dirname "$0")"
# No OMP_WAIT_POLICY here: each script runs with the policy of what it times (train_step.py: training's PASSIVE;
# sample.py: `transgan generate`'s, the OpenMP default; the official code: the OpenMP default).
steps="${STEPS:-5}"
warmup="${WARMUP:-2}"

run() {  # name, script, flags...
    local name="$1" script="$2"
    shift 2
    local result
    result="$(python "$script" "$@" | tail -n 1)"
    echo "{\"config\": \"$name\", \"command\": \"python benchmarks/$script $*\", \"result\": $result}"
}

run "matmul before" matmul.py  # the machine's raw speed today (the official figures: 200 / 860 GFLOP/s)
official() {  # the official code's pattern, fp32 (the official code has no mixed precision)
    run "official train $1" official_reference.py train_step --preset cifar10 --batch_size 8 --gen_batch_size 16 --check \
        --steps "$steps" --warmup "$warmup"
    run "official sample $1" official_reference.py sample --preset cifar10 --batch_size 64 --steps "$steps" --warmup 1
}
official before
run "train fp32" train_step.py --preset cifar10 --batch_size 8 --gen_batch_size 16 --steps "$steps" --warmup "$warmup"
run "train bf16" train_step.py --preset cifar10 --batch_size 8 --gen_batch_size 16 --mixed_precision bf16 \
    --steps "$steps" --warmup "$warmup"
# Memory-saving setting: gradient checkpointing re-runs each block in the backward instead of keeping its activations.
run "train fp32 checkpointing" train_step.py --preset cifar10 --batch_size 8 --gen_batch_size 16 --gradient_checkpointing \
    --steps "$steps" --warmup "$warmup"
run "train bf16 checkpointing" train_step.py --preset cifar10 --batch_size 8 --gen_batch_size 16 --mixed_precision bf16 \
    --gradient_checkpointing --steps "$steps" --warmup "$warmup"
# Lazy gradient penalty (every 2nd D step, weighted x2; not the official algorithm; 4 diverged on the tiny recipe):
# D step = mean over 2 steps.
run "train fp32 gp_interval 2" train_step.py --preset cifar10 --batch_size 8 --gen_batch_size 16 --gp_interval 2 \
    --steps "$steps" --warmup "$warmup"
run "train bf16 gp_interval 2" train_step.py --preset cifar10 --batch_size 8 --gen_batch_size 16 --mixed_precision bf16 \
    --gp_interval 2 --steps "$steps" --warmup "$warmup"
# The same with spinning OpenMP threads, which training/README.md advises on a dedicated machine.
OMP_WAIT_POLICY=ACTIVE run "train bf16 gp_interval 2 OMP active" train_step.py --preset cifar10 --batch_size 8 \
    --gen_batch_size 16 --mixed_precision bf16 --gp_interval 2 --steps "$steps" --warmup "$warmup"
run "sample fp32" sample.py --preset cifar10 --batch_size 64 --steps "$steps" --warmup 1
run "sample bf16" sample.py --preset cifar10 --batch_size 64 --mixed_precision bf16 --steps "$steps" --warmup 1
official after
run "matmul after" matmul.py

# Memory of the 256-px presets per image (forward + backward of one D step and one G step), with and without
# gradient checkpointing: peak RSS at batch 1 and batch 2; the difference is the memory of one more image.
if [[ "${MEMORY:-0}" == "1" ]]; then
    for preset in celeba_hq_256 church_256; do
        for checkpointing in "" "--gradient_checkpointing"; do
            for batch in 1 2; do
                run "$preset batch $batch ${checkpointing:-no-checkpointing}" train_step.py --preset "$preset" \
                    --batch_size "$batch" --gen_batch_size "$batch" --mixed_precision bf16 $checkpointing \
                    --steps 1 --warmup 0
            done
        done
    done
fi
