#!/usr/bin/env bash
# The tensor-parallel issue's device run, one call of the device tool on nvidia-h200-x2 (2 GPUs, torch 2.11, no
# vLLM, no network): the 2-GPU pytest (tiny shape, NCCL), then bench/tp_decode.py under torchrun (Qwen3-8B shape: float32 token
# identity TP=2 vs TP=1 for batch 1, 8, 32; bf16 step time). Everything lands in $OUT.
#   bash bench/run_device_tp.sh
set -uo pipefail
# NVLink multicast off (KINDS.md), exported so that every child process inherits it.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
source bench/device_prelude.sh
{
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv
  nvidia-smi topo -m
  env | grep -E '^(NCCL_NVLS_ENABLE|TORCH_SYMM_MEM_DISABLE_MULTICAST|NVSHMEM_DISABLE_NVLS)='
  python3 -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'nccl', torch.cuda.nccl.version(), 'gpus', torch.cuda.device_count())"
} 2>&1 | tee "$OUT/env.txt"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout 120 python3 -m pytest -q tests/runner/test_tp_decode.py -m gpu -p no:cacheprovider 2>&1 \
    | tee "$OUT/tp_tests.log" | tail -15
fi
timeout 360 torchrun --nproc-per-node 2 -m bench.tp_decode --preset gpu --out "$OUT/tp_h200_qwen3-8b.json" "$@" 2>&1 \
  | tee "$OUT/tp_decode.log" | grep -v -i "warn" | tail -60
status=${PIPESTATUS[0]}
echo "torchrun exit status: $status" | tee -a "$OUT/tp_decode.log"
if [ -f "$OUT/tp_h200_qwen3-8b.json" ]; then
  python3 -m bench.report_tp "$OUT/tp_h200_qwen3-8b.json" --png "$OUT/tp_h200.png" 2>&1 | tee "$OUT/tp_report.md"
fi
exit "$status"
