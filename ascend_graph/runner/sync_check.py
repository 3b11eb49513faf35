"""Debug-mode detection of silent synchronisation inside a step loop.

Two habits turn an asynchronous loop into a synchronous one without any error:
- a `non_blocking=True` host-to-device copy from unpinned memory (including the result of advanced indexing),
  which quietly runs synchronously;
- a host read of a device tensor (`.item()`, `.tolist()`, `.cpu()`, `bool(t)`), which waits for the device.

`SilentSyncDetector` is a TorchDispatchMode for the host thread that runs the step loop. Dispatch modes are
per thread, so the stream worker threads of the CPU device and torch's own work are not seen. On the CPU lane
"device tensors" are host tensors, so the runner registers the storages that stand for device memory.
"""

from __future__ import annotations

import os
import traceback
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import AscendGraphError

_OWN_FILES = (os.sep + "torch" + os.sep, __file__, os.path.join("ascend_graph", "runner", "runner.py"))


# Under inference mode `.item()` dispatches aten.item without decomposing it into _local_scalar_dense.
_SCALAR_READS = (torch.ops.aten._local_scalar_dense, torch.ops.aten.item)


class SilentSyncError(AscendGraphError):
    """A copy or read inside the step loop would silently synchronise the host with the device."""


def caller_line() -> str:
    """`file:line in function: code` of the innermost frame outside torch and this module."""
    for frame in reversed(traceback.extract_stack()[:-1]):
        if not any(part in frame.filename for part in _OWN_FILES):
            return f"{frame.filename}:{frame.lineno} in {frame.name}: {(frame.line or '').strip()}"
    return "<unknown>"


def _is_device(tensor: Any, device_storages: set[int]) -> bool:
    if not isinstance(tensor, torch.Tensor):
        return False
    if tensor.device.type != "cpu":
        return True
    return tensor.untyped_storage().data_ptr() in device_storages


class SilentSyncDetector(TorchDispatchMode):
    """Raises SilentSyncError at the first silent synchronisation issued by this thread while active.

    `device_storages`: data pointers of CPU storages that stand for device memory (the CPU lane);
    `is_pinned`: the device layer's notion of pinned host memory."""

    def __init__(self, device_storages: set[int], is_pinned: Any) -> None:
        super().__init__()
        self.device_storages = device_storages
        self.is_pinned = is_pinned

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in _SCALAR_READS and _is_device(args[0], self.device_storages):
            raise SilentSyncError(f"host read of a device tensor (.item()/.tolist()/bool()) at {caller_line()}")
        if packet is torch.ops.aten.copy_:
            dst, src = args[0], args[1]
            non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
            if _is_device(dst, self.device_storages) and not _is_device(src, self.device_storages):
                if non_blocking and not self.is_pinned(src):
                    raise SilentSyncError(f"non_blocking host-to-device copy from unpinned memory at {caller_line()}")
            elif _is_device(src, self.device_storages) and not _is_device(dst, self.device_storages):
                if not non_blocking:
                    raise SilentSyncError(f"blocking device-to-host copy at {caller_line()}")
        if packet is torch.ops.aten._to_copy and _is_device(args[0], self.device_storages):
            if kwargs.get("device") is not None and torch.device(kwargs["device"]).type == "cpu":
                raise SilentSyncError(f"host read of a device tensor (.cpu()/.to('cpu')) at {caller_line()}")
        return func(*args, **kwargs)
