#!/usr/bin/env bash
# Re-resolves the exact versions that scripts/install.sh installs (requirements/constraints.txt): installs the newest
# release of every dependency into a brand-new virtual environment, runs the test suite there, and only when it
# passes writes the frozen set. The package's own ranges in pyproject.toml stay open for `pip install transgan-hf`.
#   bash scripts/refresh_constraints.sh            # resolve, test, write
#   bash scripts/refresh_constraints.sh --no-test  # resolve and write without running the suite
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d "${TMPDIR:-/tmp}/transgan-lock.XXXXXX")
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[all]"
if [ "${1:-}" != "--no-test" ]; then
    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false "$venv/bin/python" -m pytest -q -x
fi
{
    echo "# Exact versions scripts/install.sh installs; refreshed by scripts/refresh_constraints.sh on $(date -u +%F)."
    echo "# torch is pinned in scripts/install.sh (a local CPU wheel or your CUDA build); it is listed without a local label."
    "$venv/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check | sed -E 's/^(torch==[^+]+)\+.*/\1/' | sort -f
} > requirements/constraints.txt.tmp
mv requirements/constraints.txt.tmp requirements/constraints.txt
echo "wrote requirements/constraints.txt ($(grep -vc '^#' requirements/constraints.txt) packages)"
