#!/usr/bin/env bash
# The checks to run when a GPU is lent (benchmarks/gpu_check.py): official-fixture parity on the device, bf16 training
# steps of every official preset (s/kimg, images/s, peak memory, model-FLOP utilisation), sampling images/s, --compile
# off and on; one JSON line per figure, within 8 minutes (the figures printed before the limit stay valid).
#
#   bash benchmarks/gpu_check.sh FIXTURE_DIR [gpu_check.py flags]           # e.g. .../fixtures/official
#   bash benchmarks/gpu_check.sh FIXTURE_DIR --device cpu --tiny            # the same code path on a CPU, in seconds
set -euo pipefail
if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: bash benchmarks/gpu_check.sh FIXTURE_DIR [--device cpu] [--tiny] [gpu_check.py flags]" >&2
    exit 2
fi
fixtures="$1"
shift
# SIGINT at 470 s lets the script print its summary line; SIGKILL 10 s later if it cannot.
exec timeout --signal=INT --kill-after=10 470 python "$(dirname "$0")/gpu_check.py" --fixtures "$fixtures" "$@"
