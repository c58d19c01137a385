#!/usr/bin/env bash
# Set up and run the whole test suite (CPU only, offline). `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
start=$(date +%s)
python3 -m pytest -q --durations=15 "$@"
echo "test suite wall time: $(( $(date +%s) - start )) s"
