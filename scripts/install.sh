#!/usr/bin/env bash
# Installs transgan_hf with every extra on a fresh machine, at the exact versions the suite was last run with
# (requirements/constraints.txt; `bash scripts/refresh_constraints.sh` re-resolves and re-tests them). torch comes
# first and pinned: the local CPU wheel (torch==2.13.0); an unpinned torch would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
python3 -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt -e ".[all]"

# Headless Chromium for the Space's browser test: Debian's package, driven by Playwright (which never downloads a
# browser here). Without it the browser test is skipped with this reason.
if [ ! -x /usr/bin/chromium ]; then
    sudo=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo="sudo"
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null; } ||
        echo "WARNING: could not install Debian's chromium; tests/test_space_browser.py will be skipped" >&2
fi
