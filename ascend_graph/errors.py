"""Named exceptions of ascend_graph, in one place.

Every error names what was wrong and what is allowed, so that a user can fix the call without reading our source.
"""

from __future__ import annotations


class AscendGraphError(RuntimeError):
    """Base class of every error ascend_graph raises on purpose."""


class ReplayInputError(AscendGraphError, ValueError):
    """An input given to a captured graph does not match what the graph was captured with."""


class InputDtypeError(ReplayInputError):
    """Input dtype differs from the captured one (a graph cannot cast its static buffers)."""


class InputDeviceError(ReplayInputError):
    """Input lives on another device than the captured graph."""


class InputRankError(ReplayInputError):
    """Input has another number of dimensions than the captured one."""


class InputShapeError(ReplayInputError):
    """Input sizes are inconsistent with the captured symbolic shapes."""


class StaticInputMovedError(ReplayInputError):
    """A tensor captured by reference (a weight, a KV cache) is at another address than at capture."""


class NonFiniteInputError(ReplayInputError):
    """Debug mode only: a floating-point input holds NaN or infinity (without debug they pass through, as in
    eager mode)."""


class AmbiguousBatchDimError(AscendGraphError, ValueError):
    """The batch/token dimension to bucket cannot be told apart: the inputs name several different dynamic sizes
    there (set the `batch_dim` option or `torch._dynamo.mark_dynamic` on that dimension only)."""


class CaptureError(AscendGraphError):
    """Capturing a device graph failed."""


class DeviceUnavailableError(AscendGraphError):
    """The requested device kind is not usable on this machine."""


class StreamError(AscendGraphError):
    """Work queued on a (CPU) stream raised; the error is re-raised at the next synchronisation point."""


class HostInterfaceError(AscendGraphError):
    """The host (vLLM, vllm-ascend) lacks an internal that ascend_graph builds on, at start-up: the message names it
    and the versions it was written against."""


class ConformanceSourcesError(AscendGraphError):
    """The pinned sources (torch_npu, vllm-ascend, vLLM) that the conformance checks read are not available."""


class UnsupportedVllmError(AscendGraphError, ValueError):
    """ascend_graph was asked for on a vLLM outside the range its lane declares (vllm_plugin/versions.py)."""
