"""The runner's buffer sets: host staging (pinned) and device static inputs, each guarded by events.

A `StagingSet` is what the host writes: pinned tensors, one per input field, plus the event recorded after the
host-to-device copy that reads them (`copied`); the host waits on it before writing the set again (hazard 1 of
docs/design.md).

A `StaticSet` is what a captured graph reads and writes: device tensors at fixed addresses, the sampled-token
buffer the graph writes, the pinned host buffer those tokens are fetched into, and events for "the last replay
on this set finished" (`replayed`, hazard 3) and "its tokens reached the host buffer" (`fetched`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..device import Event, GraphDevice

TOKEN_FIELDS = ("token_ids", "prev_rows")  # fields the runner itself adds: host tokens and device feedback
POISON = -7777  # what freed host buffers are filled with in poison mode: a leaked value is recognisable


@dataclass(frozen=True)
class Field:
    """One per-row input of the model step, e.g. positions (int64, ()) or block_tables (int32, (max_blocks,))."""

    name: str
    dtype: torch.dtype = torch.int64
    row_shape: tuple[int, ...] = ()
    pad: int = 0  # what padded rows hold: keep them away from real cache slots


class StagingSet:
    def __init__(self, fields: tuple[Field, ...], max_batch: int, device: GraphDevice) -> None:
        self.tensors = {f.name: device.pinned_empty((max_batch, *f.row_shape), f.dtype) for f in fields}
        self.arrays = {name: tensor.numpy() for name, tensor in self.tensors.items()}  # views, no copies
        self.copied: Event = device.new_event()

    def poison(self) -> None:
        for array in self.arrays.values():
            array.fill(POISON)

    def write(self, batch: dict[str, np.ndarray], size: int) -> None:
        for name, array in self.arrays.items():
            array[:size] = batch[name]


class StaticSet:
    def __init__(self, fields: tuple[Field, ...], max_batch: int, device: GraphDevice) -> None:
        where = device.torch_device
        self.tensors = {
            f.name: torch.full((max_batch, *f.row_shape), f.pad, dtype=f.dtype, device=where) for f in fields
        }
        self.pads = {f.name: f.pad for f in fields}
        self.sampled = torch.zeros(max_batch, dtype=torch.int64, device=where)
        self.host_tokens = device.pinned_empty((max_batch,), torch.int64)
        self.replayed: Event = device.new_event()
        self.fetched: Event = device.new_event()
        self.replay_start: Event = device.new_event(timing=True)
        self.replay_end: Event = device.new_event(timing=True)
