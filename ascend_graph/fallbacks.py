"""Capture sizes that run eagerly, and why: a failed capture or a verifier mismatch.

A graph that cannot be captured at one size (device memory exhausted, device streams exhausted, an operation
that capture forbids, the model failing on padded inputs at that size, any other exception in warm-up or capture)
must not take the whole model down, and must not fail silently either. That size runs eagerly from then on; one
warning says which size, what happened and which setting to change; counters count it; `GraphCompiled.report()`
lists it.

Error classification reads torch's exception types and the messages of the CUDA caching allocator and of
torch_npu / CANN. The NPU messages ("Stream resources are insufficient", error codes 207005 / 207008 from
`AclmdlRICaptureBegin`, "Failed to apply for memory") are taken from vllm-ascend bug reports: UNVERIFIED here, no
NPU is in reach.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CAPTURE_FAILED = "capture_failed"
VERIFY_MISMATCH = "verify_mismatch"

_MEMORY_MARKERS = ("out of memory", "failed to apply for memory", "207005", "alloc sq cq fail")
_STREAM_MARKERS = ("stream resource", "no stream resource", "207008", "resource alloc fail", "capture stream failed")
_CAPTURE_FORBIDDEN_MARKERS = ("operation not permitted when stream is capturing", "capture mode does not support")


@dataclass(frozen=True)
class SizeFallback:
    """One capture size served eagerly: `cause` is CAPTURE_FAILED or VERIFY_MISMATCH."""

    size: int | None
    cause: str
    reason: str
    advice: str

    def message(self) -> str:
        return f"ascend_graph: size {self.size} runs eagerly ({self.cause}): {self.reason}. {self.advice}"

    def as_dict(self) -> dict[str, object]:
        return {"size": self.size, "cause": self.cause, "reason": self.reason, "advice": self.advice}


def error_kind(error: BaseException) -> str:
    """'memory', 'streams', 'forbidden_op' or 'other': what a capture failure was about."""
    text = str(error).lower()
    if isinstance(error, torch.OutOfMemoryError) or any(marker in text for marker in _MEMORY_MARKERS):
        return "memory"
    if any(marker in text for marker in _STREAM_MARKERS):
        return "streams"
    if any(marker in text for marker in _CAPTURE_FORBIDDEN_MARKERS):
        return "forbidden_op"
    return "other"


def capture_failure(
    size: int | None, sizes: tuple[int | None, ...], error: BaseException, bucketed: str | None = None
) -> SizeFallback:
    """The fallback record for a capture of `size` that raised `error`, with advice naming the setting;
    `bucketed` says which dimension was padded to `size` (GraphSignature.batch_where)."""
    kind = error_kind(error)
    first_line = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    reason = f"capture failed with {type(error).__name__}: {first_line}"
    others = sorted(s for s in sizes if s != size and s is not None)
    fewer = f"capture_sizes={others}" if others else "fewer or smaller capture_sizes"
    if kind == "memory":
        advice = (
            f"Device memory ran out while capturing size {size}: set {fewer} (drop the largest sizes) or free "
            "memory; inside vLLM lower compilation_config.cudagraph_capture_sizes / max_cudagraph_capture_size "
            "or --gpu-memory-utilization so that graphs fit beside the KV cache"
        )
    elif kind == "streams":
        advice = (
            "The device ran out of streams or graph resources (each captured size and piece holds some; "
            f"UNVERIFIED NPU diagnosis): set {fewer}; inside vLLM shorten compilation_config.cudagraph_capture_sizes"
        )
    elif kind == "forbidden_op":
        advice = (
            "The model does something graph capture forbids (a host synchronisation such as .item(), .cpu() or "
            "print of a device tensor, or a data-dependent shape): remove it from the forward pass, or leave "
            "this size eager"
        )
    else:
        padded = f"the bucketed dimension, {bucketed}," if bucketed else "the bucketed dimension"
        advice = (
            f"Warm-up or capture runs the model at size {size} on padded inputs (rows past a call's own size hold "
            f"pad values) and it failed there: if {padded} is not the batch/token dimension, name the right one "
            "with the batch_dim option (or torch._dynamo.mark_dynamic); if padded rows index a table or a cache, "
            f"set pad_values for that input; or set {fewer} to stop trying this size"
        )
    return SizeFallback(size, CAPTURE_FAILED, reason, advice)


def verify_mismatch(size: int | None, detail: str) -> SizeFallback:
    advice = (
        "Graph replay disagrees with eager at this size (a lowering or capture bug, or a model whose output depends "
        "on something capture bakes in); it runs eagerly. Loosen verify_tolerances only if the difference is "
        "expected rounding, e.g. of a compiled lowering in low precision"
    )
    return SizeFallback(size, VERIFY_MISMATCH, detail, advice)
