#!/usr/bin/env bash
# The GPU lane: vLLM 0.26.0 for CUDA on the lent H200, from the offline bundle (the device machine has no index).
#
# Here, once: build the bundle into the ignored folder .gpuvllm (its builder ships beside the checkout, not in it):
#   echo /.gpuvllm/ >> .git/info/exclude; bash ../shared/gpu-vllm/build.sh .gpuvllm
# On the device, calls back to back (a machine stays warm ~30 s and keeps ignored folders):
#   1. carry [.gpuvllm/part1, .gpuvllm/install.sh]:  bash bench/gpu_lane.sh stage
#   2. carry [.gpuvllm/part2, .gpuvllm/install.sh]:  bash bench/gpu_lane.sh test [load]
#      (or, when device time is short: bash bench/gpu_lane.sh quick [TESTS], one forward-async test by default;
#       `quick burst`: decode_steps > 1, test_gpu_multistep.py)
#   3. (same machine)  AG_COMMIT=<commit> bash bench/gpu_lane.sh bench MODELS CONFIGS [ROUNDS]
#   or, as call 2 on a short budget: AG_COMMIT=<c> AG_TEST_S=<s> AG_STOP_AFTER_S=<s> bash bench/gpu_lane.sh short
#                      MODELS CONFIGS [BATCHES [REPEATS]]   (groups b, c, d cut at AG_TEST_S, then the profile)
#   or, as call 2:     AG_COMMIT=<commit> bash bench/gpu_lane.sh both TESTS MODELS CONFIGS [ROUNDS]
#                      (the tests matching -k TESTS while the servers start; benchmarks once the tests are done)
#                      bash bench/gpu_lane.sh load [MODE]   (run `install` first to start several modes side by side)
#                      bash bench/gpu_lane.sh steps CONFIGS [REPEATS]   (decode step time in LLM(), tiny model)
#   AG_COMMIT=<commit> bash bench/gpu_lane.sh profile [MODELS [CONFIGS [BATCHES [REPEATS]]]]
#     (decode step, kernels and GPU busy per step, capture, side by side with stock: bench/gpu_profile.py;
#      defaults qwen3-0.6b,qwen3-8b stock,ag-noopts,ag-forward-async 1,32 3; AG_PROFILE_ARGS adds arguments)
# `test` runs the gpu_vllm tests in two processes side by side, then the other GPU-marked tests (logs under $OUT),
# with `load` the load test beside them; `bench` runs bench/gpu_serve.py (JSON and logs under $OUT); `load` runs
# the bounded load test (500 requests, 64 in flight, mid-stream disconnects) against the OpenAI server.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ag-out}
mkdir -p "$OUT"
export VLLM_USE_FLASHINFER_SAMPLER=0 TVM_FFI_DISABLE_TORCH_C_DLPACK=1 PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export AG_SITE=/tmp/site_ag

REPO=$PWD

source bench/install_project.sh

install() {
  bash .gpuvllm/install.sh
  # The project installs beside vLLM (not into its folder), so vLLM finds its entry points only where AG_SITE is
  # on the path: stock-vLLM baselines leave it off; nothing of the project runs with the checkout as its working
  # directory or first on the path.
  PYTHONPATH=/tmp/site install_project "$AG_SITE" "$OUT/pip_install.log"
}

gpu_tests() {  # the gpu_vllm tests matching -k "$1" in file(s) $2, against the installed project and the bundle
  # shellcheck disable=SC2086  # $2: test files, split on spaces on purpose
  # AG_TEST_S: a time limit in seconds (0, the default: none)
  (cd /tmp/ag-tests && PYTHONPATH="$AG_SITE:/tmp/site:$REPO" timeout -k 10 "${AG_TEST_S:-0}" python3 -m pytest -q \
    -m gpu_vllm -p no:cacheprovider \
    -k "$1" ${2:-tests/vllm_plugin/test_gpu_vllm.py})
}

case "${1:-}" in
  stage) bash .gpuvllm/install.sh; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv ;;
  test)
    install
    # two groups side by side (each builds its own eager reference), the load test beside them when asked
    group() { gpu_tests "$1" "${3:-}" >"$OUT/gpu_vllm_tests_$2.log" 2>&1; }
    group "full_and_piecewise or random_delays or churn or broken or verify" a & a=$!
    # groups c and d: the passes and the decode-step bursts (own files, each building its own eager reference)
    group "" c "tests/vllm_plugin/test_gpu_passes.py tests/kernels/test_decode_qkv_rope_kv_cache_cuda.py" & c=$!
    group "" d tests/vllm_plugin/test_gpu_multistep.py & d=$!
    # group b, then the torch.compile-level GPU tests (no vLLM: backend, device, kernels, verify, graph memory)
    { rc=0; group "test_piecewise_equals_eager or baseline or tensor_parallel or installed_but_not_asked_for" b || rc=1
      (cd /tmp/ag-tests && PYTHONPATH="$AG_SITE:/tmp/site:$REPO" python3 -m pytest -q -m "gpu and not gpu_vllm" \
        -p no:cacheprovider tests) >"$OUT/gpu_tests.log" 2>&1 || rc=1; exit $rc; } & b=$!
    [ "${2:-}" = load ] && { bash "$0" load >"$OUT/load.log" 2>&1 & l=$!; }
    status=0; wait $a || status=1; wait $b || status=1; wait $c || status=1; wait $d || status=1
    [ -n "${l:-}" ] && { wait "$l" || status=1; tail -25 "$OUT/load.log"; }
    for log in gpu_vllm_tests_a gpu_vllm_tests_b gpu_vllm_tests_c gpu_vllm_tests_d gpu_tests; do grep -E "passed|failed|FAILED|Error" "$OUT/$log.log" | tail -8; done
    exit $status ;;
  short)  # the lane on a short device budget (one call after stage): groups b, c, d and the torch-level GPU tests side by side, each cut at
    # AG_TEST_S seconds (default 300), then the profile of CONFIGS (one process each, interleaved) until AG_STOP_AFTER_S
    install
    export AG_TEST_S=${AG_TEST_S:-300}
    group() { gpu_tests "$1" "${3:-}" >"$OUT/gpu_vllm_tests_$2.log" 2>&1; }
    group "test_piecewise_equals_eager or installed_but_not_asked_for" b & b=$!
    group "" c "tests/vllm_plugin/test_gpu_passes.py tests/kernels/test_decode_qkv_rope_kv_cache_cuda.py" & c=$!
    group "" d tests/vllm_plugin/test_gpu_multistep.py & d=$!
    (cd /tmp/ag-tests && PYTHONPATH="$AG_SITE:/tmp/site:$REPO" timeout -k 10 "$AG_TEST_S" python3 -m pytest -q \
      -m "gpu and not gpu_vllm" -p no:cacheprovider tests) >"$OUT/gpu_tests.log" 2>&1 & e=$!
    status=0; wait $b || status=1; wait $c || status=1; wait $d || status=1; wait $e || status=1
    for log in gpu_vllm_tests_b gpu_vllm_tests_c gpu_vllm_tests_d gpu_tests; do echo "$log:"; grep -E "passed|failed|FAILED|Error" "$OUT/$log.log" | tail -6; done
    pkill -f "pytest -q" || true; pkill -f EngineCore || true; sleep 2  # what a cut group left behind
    [ -n "${2:-}" ] && AG_PROFILE_ARGS="${AG_PROFILE_ARGS:-}" bash "$0" profile "$2" "$3" "${4:-1,32}" "${5:-1}" >/dev/null 2>&1
    tail -40 "$OUT/profile.log" 2>/dev/null || true
    # the device tool brings back at most 8 files: the per-process logs travel as one archive
    tar czf "$OUT/logs.tgz" -C "$OUT" $(cd "$OUT" && ls -d profile_logs pip_install.log 2>/dev/null) && \
      rm -rf "$OUT/profile_logs" "$OUT/pip_install.log"
    exit $status ;;
  quick)  # a smoke of the lane in one short call: install, then the gpu_vllm tests matching -k "$2" in every file
    install; gpu_tests "${2:-full_and_piecewise_equals_eager and forward}" "$(ls tests/vllm_plugin/test_gpu_*.py | tr '\n' ' ')" ;;
  both)
    install
    rm -f /tmp/ag-tests-done
    gpu_tests "$2" >"$OUT/gpu_vllm_tests.log" 2>&1 &
    # done when pytest prints its summary: the process itself was seen to linger for minutes after it (7ea32af)
    (until grep -qE "[0-9]+ (passed|failed|error|xfailed)" "$OUT/gpu_vllm_tests.log" 2>/dev/null; do sleep 2; done
     touch /tmp/ag-tests-done) &
    AG_HOLD_UNTIL=/tmp/ag-tests-done bash "$0" bench "$3" "$4" "${5:-3}"
    grep -E "passed|failed|FAILED|Error" "$OUT/gpu_vllm_tests.log" | tail -8; pkill -f "pytest -q -m gpu_vllm" || true ;;
  bench)
    [ -d "$AG_SITE/ascend_graph" ] || install
    PYTHONPATH=/tmp/site python3 bench/gpu_serve.py --models "$2" --configs "$3" --rounds "${4:-3}" \
      --stop-after-s "${AG_STOP_AFTER_S:-500}" --hold-until "${AG_HOLD_UNTIL:-}" \
      --out "$OUT/serve_h200_$(echo "$2" | tr ',' '_').json" 2>&1 | tee "$OUT/serve_bench.log" | grep -v "^INFO" | tail -60
    ;;
  steps)  # decode step time in offline LLM(), one process per configuration (bench/gpu_steps.py)
    [ -d "$AG_SITE/ascend_graph" ] || install
    PYTHONPATH=/tmp/site python3 bench/gpu_steps.py --configs "$2" --repeats "${3:-3}" --out "$OUT/steps_h200_tiny.json" ;;
  profile)  # JSON rewritten after every process, one log per process under $OUT/profile_logs
    [ -d "$AG_SITE/ascend_graph" ] || install
    models=${2:-qwen3-0.6b,qwen3-8b}
    # shellcheck disable=SC2086  # AG_PROFILE_ARGS: extra arguments, split on spaces on purpose
    PYTHONPATH=/tmp/site python3 bench/gpu_profile.py --models "$models" \
      --configs "${3:-stock,ag-noopts,ag-forward-async}" --batches "${4:-1,32}" --repeats "${5:-3}" \
      --stop-after-s "${AG_STOP_AFTER_S:-540}" --log-dir "$OUT/profile_logs" ${AG_PROFILE_ARGS:-} \
      --out "$OUT/profile_$(echo "$models" | tr ',' '_')_${AG_COMMIT:-unknown}.json" 2>&1 | tee "$OUT/profile.log" ;;
  install) install ;;
  load)  # load [MODE] (forward-async, sync, eager, or stock: vLLM's own server); AG_LOAD_REQUESTS (500)
    [ -d "$AG_SITE/ascend_graph" ] || install
    mode=${2:-forward-async}
    # bench/ from the checkout, ascend_graph from its installed copy (first on the path)
    (cd /tmp && PYTHONPATH="$AG_SITE:/tmp/site:$REPO" python3 -m bench.serve_load --mode "$mode" \
      --requests "${AG_LOAD_REQUESTS:-500}" --work-dir "/tmp/ag-load-$mode" --out "$OUT/load_h200_$mode.json" \
      --server-args="--attention-backend TRITON_ATTN --kv-cache-memory-bytes 1G --gpu-memory-utilization 0.1") \
      2>&1 | tail -25 || rc=$?  # 1: the verdict failed
    cp "/tmp/ag-load-$mode/server.log" "$OUT/load_h200_${mode}_server.log" 2>/dev/null || true
    exit "${rc:-0}" ;;
  *) echo "usage: bench/gpu_lane.sh stage|install|test [load]|quick [TESTS]|both TESTS MODELS CONFIGS [ROUNDS]|bench MODELS CONFIGS [ROUNDS]|steps CONFIGS [REPEATS]|profile [MODELS [CONFIGS [BATCHES [REPEATS]]]]|load [MODE]" >&2; exit 2 ;;
esac
