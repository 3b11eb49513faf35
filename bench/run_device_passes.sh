#!/usr/bin/env bash
# The passes issue's device run, in one call of the device tool (H100, torch 2.11, no vLLM, no network), < 8 min:
# GPU tests of the fused kernels (and the backend's GPU tests), then the decode benchmark for Qwen3-0.6B and 8B at
# batch 1 and 32: reduce_overhead | ascend_graph_inductor | ascend_graph_inductor+passes, ascend_graph_aten,
# ascend_graph_aten+passes, three processes per shape that all compile at the same time (compiling is the slow,
# host-bound part), then are timed one process at a time after all have compiled. Everything lands in $OUT.
#   bash bench/run_device_passes.sh                 # both shapes, 6 processes (~75 GB of GPU memory at peak)
#   SHAPES=qwen3-8b bash bench/run_device_passes.sh # one shape per call if memory or time is short
# Known problem (2026-11-26, H100 80 GB): both shapes at once ran out of GPU memory in the 8B processes, and the
# rendezvous then waited for the dead ranks until the call's limit. The published figures come from plain
# sequential runs instead, one shape per call:
#   python3 -m bench.decode_step --preset cuda-passes --shapes qwen3-8b --iters 20 --no-plot \
#     --variants reduce_overhead,ascend_graph_inductor,ascend_graph_inductor+passes --out $OUT/passes_h100_qwen3-8b.json
set -uo pipefail
SHAPES=${SHAPES:-qwen3-0.6b qwen3-8b}
source bench/device_prelude.sh
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  python3 -c "import torch, triton, sys; print(sys.version); print('torch', torch.__version__, 'triton', triton.__version__)"
} 2>&1 | tee "$OUT/env.txt"
RDV=$(mktemp -d)
GROUPS_=(reduce_overhead ascend_graph_inductor ascend_graph_inductor+passes,ascend_graph_aten,ascend_graph_aten+passes)
WORLD=$(( $(echo $SHAPES | wc -w) * ${#GROUPS_[@]} ))
pids=()
rank=0
for shape in $SHAPES; do
  for variants in "${GROUPS_[@]}"; do
    tag="${shape}_${variants%%,*}"
    tag="${tag/+/_}"
    python3 -m bench.decode_step --preset cuda-passes --shapes "$shape" --variants "$variants" \
      --rendezvous "$RDV" --rank $rank --world $WORLD \
      --out "$OUT/passes_h100_$tag.json" > "$OUT/bench_$tag.log" 2>&1 &
    pids+=($!)
    rank=$((rank + 1))
  done
done
# The kernel tests run while the benchmark processes compile (nothing is timed before all six have compiled).
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  python3 -m pytest -q tests/kernels tests/test_backend.py tests/test_verify.py tests/test_graph_memory.py -m gpu -rs -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log" | tail -15
fi
for pid in "${pids[@]}"; do wait "$pid"; done
grep -h -E "^qwen3|FAILED|skipped" "$OUT"/bench_*.log
python3 -m bench.report_backend "$OUT"/passes_h100_*.json --passes --png "$OUT/passes_h100.png" 2>&1 | tail -20
# At most 8 files come back from the device tool: the logs travel as one archive.
tar czf "$OUT/passes_h100_logs.tgz" -C "$OUT" env.txt gpu_tests.log $(cd "$OUT" && ls bench_*.log) && rm -f "$OUT"/bench_*.log
