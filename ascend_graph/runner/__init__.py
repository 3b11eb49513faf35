"""The asynchronous graph-replay runner (double-buffered static inputs, device-side token feedback)."""

from .buffers import POISON, Field
from .runner import MODES, GraphRunner, RunnerConfig, StepHandle, StepMetrics
from .sync_check import SilentSyncDetector, SilentSyncError

__all__ = [
    "MODES",
    "POISON",
    "Field",
    "GraphRunner",
    "RunnerConfig",
    "SilentSyncDetector",
    "SilentSyncError",
    "StepHandle",
    "StepMetrics",
]
