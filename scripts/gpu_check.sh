#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the CUDA tests on the device, the kernel compile
# check, then the GPU benchmark (`fastoptim bench --device cuda`). About 3-4 minutes on
# an H100/H200 (most of it the 1e9-element cases and the first compile of each kernel).
#
#   bash scripts/gpu_check.sh            # installs ".[test,cuda13]" into the current Python
#   NO_INSTALL=1 bash scripts/gpu_check.sh
#
# Writes gpu-check/bench_cuda.json and gpu-check/log.txt (or under $OUT when set).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
mkdir -p "$out"
PY="${PYTHON:-python3}"
if [ -z "${NO_INSTALL:-}" ]; then
    "$PY" -m pip install --quiet ".[test,cuda13]"
fi
export NUMBA_ENABLE_CUDASIM=0  # on the device, never the simulator
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    (cd / && "$PY" - <<'PYEOF'
import fastoptim
from fastoptim import _cuda
print("backends:", fastoptim.available_backends())
if not _cuda.is_available():
    raise SystemExit("CUDA not usable: " + _cuda.why_unavailable())
dev = _cuda.cuda.get_current_device()
print("device:", dev.name, "cc", dev.compute_capability, "SMs", dev.MULTIPROCESSOR_COUNT)
PYEOF
    )
    timeout 120 "$PY" -m pytest -q tests/test_cuda.py tests/test_cuda_compile.py
    timeout 60 "$PY" -m pytest -q tests/test_clip.py -k device
    timeout 150 "$PY" -m fastoptim bench --device cuda --optimizers adam,adamw,sgd \
        --json "$out/bench_cuda.json"
} 2>&1 | tee "$out/log.txt"
