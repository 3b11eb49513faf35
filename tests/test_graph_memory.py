"""Graph memory per size is measured and reported, and does not grow over 1 000 replays.

CPU: a graph's memory is its static buffers and outputs (`static_bytes`), checked against the tensors it holds;
over 1 000 replays those tensors keep their addresses and no tensor is left behind (live tensor count before and
after). CUDA (`-m gpu`): the allocator's allocated and reserved bytes are the same before and after 1 000 replays,
and the graph pool grew when the largest size was captured."""

from __future__ import annotations

import gc

import pytest
import torch

import ascend_graph

from .helpers import compile_recording, poison_outputs
from .models import qwen3

REPLAYS = 1000
SIZES = [2, 4, 8]


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor))


def _decoder_graph(device: str, output_mode: str) -> tuple[object, object, list]:
    model = qwen3(device, max_batch=8, max_seq=64)
    compiled, pieces = compile_recording(
        model, capture_sizes=SIZES, pad_values=model.pad_values, output_mode=output_mode
    )
    return model, compiled, pieces


def test_memory_per_size_is_the_static_buffers_and_outputs_it_holds() -> None:
    """The reported static bytes per size are what the decoder's signature implies, worked out here from the model
    alone: two int64 inputs of the size (token ids, positions) and the float32 logits (size x vocab) it returns."""
    model, compiled, pieces = _decoder_graph("cpu", "clone")
    with torch.inference_mode():
        compiled(torch.randint(0, 512, (3,)), torch.zeros(3, dtype=torch.long))
    report = pieces[0].report()
    rows = {row["size"]: row for row in report["captured"]}
    assert sorted(rows) == SIZES
    vocab = model.embed.num_embeddings
    int64, float32 = 8, 4
    for size in SIZES:
        assert rows[size]["static_bytes"] == size * (2 * int64 + vocab * float32), (size, rows[size])
    assert report["memory_bytes"]["static"] == sum(row["static_bytes"] for row in rows.values())


@pytest.mark.parametrize("output_mode", ["static", "clone"])
def test_graph_memory_does_not_grow_over_1000_replays_cpu(output_mode: str) -> None:
    _, compiled, pieces = _decoder_graph("cpu", output_mode)
    sizes = [(3, 8, 5, 2, 4, 7, 6, 8)[i % 8] for i in range(REPLAYS)]
    with torch.inference_mode():
        compiled(torch.randint(0, 512, (3,)), torch.zeros(3, dtype=torch.long))
        for n in sizes[:16]:  # settle lazily created state (dynamo guards, caches)
            compiled(torch.randint(0, 512, (n,)), torch.zeros(n, dtype=torch.long))
        piece = pieces[0]
        addresses = {
            size: [t.data_ptr() for t in (*c.buffers.values(), *c.outputs)] for size, c in piece.captures.items()
        }
        report_before = piece.report()["captured"]
        tensors_before = _live_tensors()
        replays_before = ascend_graph.counters()["replays"]
        for step, n in enumerate(sizes):
            compiled(torch.randint(0, 512, (n,)), torch.full((n,), step % 64, dtype=torch.long))
        piece.device.synchronize()
        tensors_after = _live_tensors()
    assert ascend_graph.counters()["replays"] - replays_before == REPLAYS
    assert ascend_graph.counters()["eager_calls"] == 0
    assert tensors_after <= tensors_before, (tensors_before, tensors_after)
    assert piece.report()["captured"] == report_before
    assert {
        size: [t.data_ptr() for t in (*c.buffers.values(), *c.outputs)] for size, c in piece.captures.items()
    } == addresses


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device)")
@pytest.mark.parametrize("output_mode", ["static", "clone"])
def test_graph_memory_does_not_grow_over_1000_replays_cuda(output_mode: str) -> None:
    _, compiled, pieces = _decoder_graph("cuda", output_mode)
    sizes = [(3, 8, 5, 2, 4, 7, 6, 8)[i % 8] for i in range(REPLAYS)]
    ids = {n: torch.randint(0, 512, (n,), device="cuda") for n in set(sizes)}
    with torch.inference_mode():
        compiled(ids[3], torch.zeros(3, dtype=torch.long, device="cuda"))
        for n in sizes[:16]:
            compiled(ids[n], torch.zeros(n, dtype=torch.long, device="cuda"))
        torch.cuda.synchronize()
        piece = pieces[0]
        report = piece.report()
        largest = next(row for row in report["captured"] if row["size"] == max(SIZES))
        assert largest["pool_bytes"] > 0 and largest["static_bytes"] > 0, report["captured"]
        positions = torch.zeros(8, dtype=torch.long, device="cuda")  # before the snapshot: 512 bytes of its own
        gc.collect()
        allocated, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
        replays_before = ascend_graph.counters()["replays"]
        for step, n in enumerate(sizes):
            positions.fill_(step % 64)
            out = compiled(ids[n], positions[:n])
            del out
        torch.cuda.synchronize()
        gc.collect()
    assert ascend_graph.counters()["replays"] - replays_before == REPLAYS
    assert torch.cuda.memory_allocated() == allocated
    assert torch.cuda.memory_reserved() == reserved


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device)")
def test_real_out_of_memory_at_the_largest_size_falls_back_with_advice_cuda() -> None:
    """A real CUDA OOM: the process may use only a little more than it holds, and the largest size needs a
    1 GiB intermediate; the smaller sizes are captured and replay correctly, the largest is reported."""
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    width = 1 << 20  # 4 MiB of float32 per row of the intermediate

    class Wide(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(width, device="cuda"))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x[:, :1] * self.weight).mean(-1, keepdim=True) + x  # (n, width) intermediate

    model = Wide().eval()
    compiled, pieces = compile_recording(model, capture_sizes=[2, 4, 256], lowering="aten")
    limit = torch.cuda.memory_allocated() + (256 << 20)  # 256 MiB more: size 256 needs 1 GiB
    torch.cuda.set_per_process_memory_fraction(limit / total)
    try:
        with torch.no_grad():
            for n in (3, 2, 4):
                x = torch.randn(n, 16, device="cuda")
                poison_outputs(pieces)
                torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-4)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    piece = pieces[0]
    assert set(piece.captures) == {2, 4}, piece.report()
    fallback = piece.size_fallbacks[256]
    assert fallback.cause == "capture_failed" and "capture_sizes=[2, 4]" in fallback.advice, fallback
    assert ascend_graph.counters()["capture_failures"] == 1 and ascend_graph.counters()["replays"] == 3
