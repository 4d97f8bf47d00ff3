#!/usr/bin/env bash
# Fetch, on a machine with PyPI, the wheels a lent GPU box (Python 3.12, torch, no
# internet) lacks for `python -m phi_demo_dev.bench --no-server`, into .whl/ (git-ignored via
# .git/info/exclude). Then run scripts/gpu-bench.sh there with .whl carried.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl \
  transformers==5.24.0 peft==0.21.2 accelerate==1.15.0 soundfile==0.14.0 librosa==0.11.0 \
  soxr audioread pooch platformdirs decorator cffi pycparser regex av==18.1.0 pypdfium2==5.15.2
du -sh .whl
