"""The device layer: `get_device("cpu" | "cuda" | "npu")` returns an object satisfying `GraphDevice`."""

from __future__ import annotations

import functools

import torch

from ..errors import DeviceUnavailableError
from .accelerator import AcceleratorDevice, AcceleratorGraph, cuda_device, npu_device
from .base import DeviceGraph, Event, GraphDevice, Stream
from .cpu import CPU_DEVICE, CpuDevice, CpuEvent, CpuStream

__all__ = [
    "AcceleratorDevice",
    "AcceleratorGraph",
    "CpuDevice",
    "CpuEvent",
    "CpuStream",
    "DeviceGraph",
    "Event",
    "GraphDevice",
    "Stream",
    "available_kinds",
    "get_device",
]

KINDS = ("cpu", "cuda", "npu")


@functools.cache
def _make(kind: str) -> GraphDevice:
    if kind == "cpu":
        return CPU_DEVICE
    return cuda_device() if kind == "cuda" else npu_device()


def get_device(kind: str | torch.device) -> GraphDevice:
    """The device object for `kind`; raises DeviceUnavailableError when that device cannot be used here."""
    name = kind.type if isinstance(kind, torch.device) else str(kind).split(":")[0]
    if name not in KINDS:
        raise DeviceUnavailableError(f"device {kind!r} is not supported; supported devices are {KINDS}")
    device = _make(name)
    if not device.is_available():
        raise DeviceUnavailableError(f"device {name!r} is not available on this machine")
    return device


def available_kinds() -> list[str]:
    """Device kinds usable on this machine, CPU always among them."""
    kinds = []
    for kind in KINDS:
        try:
            get_device(kind)
        except DeviceUnavailableError:
            continue
        kinds.append(kind)
    return kinds
