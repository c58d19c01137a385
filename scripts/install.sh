#!/usr/bin/env bash
# Installs transgan_hf with every extra on a fresh machine. torch comes first and pinned: the local CPU wheel
# (torch==2.13.0); an unpinned torch would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
python3 -m pip install --quiet --disable-pip-version-check -e ".[all]"
