#!/usr/bin/env bash
# The speed runs for a lent GPU, as one command (about 10 minutes at most): full-size
# random-weight Phi-4-multimodal in bf16, sdpa, with fast decode. Run on the device with
# .whl carried (see scripts/gpu-wheels.sh); results land in $OUT (or test-output/gpu).
set -uo pipefail
OUT=${OUT:-test-output/gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONUNBUFFERED=1 PHI_DEMO_CACHE=/tmp/phi-demo-cache HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.memory --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)" | tee -a "$OUT/gpu.txt"
timeout "${BENCH_TIMEOUT:-540}" python3 -m phi_demo_dev.bench --model full-random --device cuda --dtype bfloat16 \
  --attn "${BENCH_ATTN:-sdpa}" --runs 3 --new-tokens 256 --live-minutes 1 --no-server \
  --out "$OUT/gpu-bench.md" 2>&1 | tee "$OUT/bench.log"
