#!/usr/bin/env bash
# Everything the tests need, on Debian or Ubuntu: the apt packages of packages-dev.txt (with
# sudo unless already root, e.g. in a container), a virtual environment in .venv with
# requirements-dev.txt, and the JS test client with axe-core. CI runs this same script.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2046 # one package name per line
$SUDO apt-get install -y -qq --no-install-recommends $(grep -v '^#' packages-dev.txt) >/dev/null
# Node.js with npm, for the JS-client test (many images have it; a bare Debian does not).
command -v npm >/dev/null || $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null

python3 -m venv .venv
. .venv/bin/activate
pip install -q -r requirements-dev.txt
npm ci --prefix tests/js --no-audit --no-fund
