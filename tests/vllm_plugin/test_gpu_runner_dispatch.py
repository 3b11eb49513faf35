"""The FULL-graph manager's fallback, on the CPU lane against vLLM 0.32's own dispatch (the manager's state is set
by hand: building it needs CUDA and a distributed group). On the GPU lane the same code runs in vLLM 0.26."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

from vllm.config.compilation import CUDAGraphMode  # noqa: E402
from vllm.v1.worker.gpu.cudagraph_utils import (  # noqa: E402
    BatchExecutionDescriptor,
    CudaGraphManager,
    ModelCudaGraphManager,
)

from ascend_graph.fallbacks import capture_failure  # noqa: E402
from ascend_graph.vllm_plugin.gpu_runner import AscendGraphCudaGraphs  # noqa: E402

FULL_4 = BatchExecutionDescriptor(CUDAGraphMode.FULL, num_tokens=4, num_reqs=4, uniform_token_count=1)
PIECES_4 = BatchExecutionDescriptor(CUDAGraphMode.PIECEWISE, num_tokens=4, num_reqs=None)


def _manager(pieces: bool) -> AscendGraphCudaGraphs:
    manager = object.__new__(AscendGraphCudaGraphs)
    manager._graphs_captured = True
    manager._lora_dispatch_map, manager._max_lora_case = {}, 0
    candidates = [FULL_4, PIECES_4] if pieces else [FULL_4]
    manager._candidates = {(n, 0): candidates for n in range(1, 5)}
    manager.ag_eager = {}
    return manager


def test_the_manager_reaches_the_capture_loop_through_vllms_own_capture() -> None:
    """ModelCudaGraphManager.capture(model, ...) ends in super().capture(create_forward_fn): ascend_graph's loop."""
    order = AscendGraphCudaGraphs.__mro__
    after_vllms = order[order.index(ModelCudaGraphManager) + 1]
    assert after_vllms.__name__ == "CaptureLoop" and after_vllms.capture is not CudaGraphManager.capture


@pytest.mark.parametrize("pieces", [True, False])
def test_a_failed_full_size_goes_to_the_next_candidate(pieces: bool) -> None:
    manager = _manager(pieces)
    assert manager.dispatch(3, 3, 1, num_active_loras=0) == FULL_4  # padded 3 -> 4, FULL decode graph
    manager.ag_eager[FULL_4] = capture_failure(4, (1, 2, 4), RuntimeError("out of memory"))
    desc = manager.dispatch(3, 3, 1, num_active_loras=0)
    assert manager.ag_last_desc == desc  # what a burst's further steps replay (gpu_burst.py)
    if pieces:
        assert desc == PIECES_4  # the mixed-batch pieces of size 4 serve it
    else:
        assert desc.cg_mode == CUDAGraphMode.NONE and (desc.num_tokens, desc.num_reqs) == (3, 3)


def _verifying_manager(replay_rows: int, scale: float) -> tuple[AscendGraphCudaGraphs, object, object]:
    """A manager whose eager forward writes hidden = ids * 2 and whose "graph" writes ids * scale into the first
    `replay_rows` rows (stand-ins for vLLM's forward and a CUDA graph; the comparison is the real one)."""
    from types import SimpleNamespace

    import torch

    manager = object.__new__(AscendGraphCudaGraphs)
    manager.adopt(1, "cpu", verify=True)
    manager.is_last_pp_rank, manager.use_aux_hidden_state_outputs = True, False
    manager.hidden_states = torch.zeros(8, 3)
    manager.ag_inputs = SimpleNamespace(input_ids=torch.zeros(8, dtype=torch.int32))
    manager.vllm_config = SimpleNamespace(model_config=SimpleNamespace(get_vocab_size=lambda: 100))
    ids = manager.ag_inputs.input_ids

    def forward_fn(mode: object) -> None:
        manager.hidden_states[:4] = (ids[:4, None] * 2.0).expand(4, 3)

    def replay() -> None:
        manager.hidden_states[:replay_rows] = (ids[:replay_rows, None] * scale).expand(replay_rows, 3)

    return manager, forward_fn, SimpleNamespace(graph=SimpleNamespace(replay=replay))


@pytest.mark.parametrize(("rows", "scale", "ok"), [(4, 2.0, True), (4, 2.5, False), (3, 2.0, False)])
def test_full_graph_verification_catches_a_wrong_or_partial_replay(rows: int, scale: float, ok: bool) -> None:
    """verify: a FULL graph replayed on random token ids against the eager forward; a replay that computes
    something else, or leaves rows unwritten (they stay poisoned with NaN), does not pass."""
    manager, forward_fn, capture = _verifying_manager(rows, scale)
    result = manager._verify_full(FULL_4, forward_fn, capture)
    assert result.ok is ok, result.message()
    assert manager.ag_inputs.input_ids[:4].abs().sum() > 0  # the token ids were drawn at random
