#!/usr/bin/env bash
# The backend issue's device run, in one call of the device tool (H100, torch 2.11, no vLLM, no network):
# GPU-marked tests, then the decode benchmark for the given shapes. Everything lands in $OUT.
#   bash bench/run_device_backend.sh qwen3-0.6b [qwen3-8b]
set -uo pipefail
source bench/device_prelude.sh
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  python3 -c "import torch, triton, transformers, sys; print(sys.version); print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/env.txt"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  python3 -m pytest -q tests -m gpu -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
fi
for shape in "$@"; do
  python3 -m bench.decode_step --preset cuda --shapes "$shape" --out "$OUT/backend_h100_$shape.json" 2>&1 \
    | tee "$OUT/bench_$shape.log" | grep -v -i "warn" | tail -40
done
