"""The CUDA lane's bursts (gpu_burst.py) over stand-ins, on the CPU: the order of a burst's device steps.

vLLM 0.26's Triton kernels, CUDA events and streams do not run here, so vLLM's runner is a stand-in whose "device"
is a few CPU tensors: `num_computed` and `last_sampled` per request slot (what vLLM's post_update advances), a
model whose next token depends on the input token and its position, and stand-ins for the two input kernels with
the semantics of vLLM's (positions and sequence lengths from num_computed; input ids from last_sampled). What is
real is `BurstRunner`: the plan it takes, which steps it runs, the order of sampling, state update and input
preparation, the joining of the tokens, the host's sequence-length bound and the broken variant. The GPU lane runs
the same code in vLLM (test_gpu_multistep.py).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("vllm")

from vllm.config.compilation import CUDAGraphMode  # noqa: E402
from vllm.v1.worker.gpu.model_states.default import DefaultModelState  # noqa: E402

from ascend_graph.counters import counters, reset_counters  # noqa: E402
from ascend_graph.vllm_plugin import gpu_burst  # noqa: E402
from ascend_graph.vllm_plugin.multistep import PLAN_ATTRIBUTE, BurstPlan  # noqa: E402

VOCAB = 97
SLOTS = [3, 0, 5]  # the requests' state slots (vLLM's idx_mapping), not in batch order
FIRST = [11, 22, 33]  # each request's input token of the burst's first step
COMPUTED = [7, 12, 4]  # its computed tokens before that step


def next_token(token: int, position: int) -> int:
    """The stand-in model and greedy sampler: the token after `token` at `position`."""
    return (token * 31 + position * 7 + 5) % VOCAB


@dataclasses.dataclass
class Batch:  # the fields of vLLM's InputBatch that a burst reads or replaces
    req_ids: list[str]
    num_reqs: int
    idx_mapping: torch.Tensor
    query_start_loc: torch.Tensor
    seq_lens: torch.Tensor
    cu_num_logits: torch.Tensor
    input_ids: torch.Tensor
    positions: torch.Tensor
    seq_lens_cpu_upper_bound: torch.Tensor
    num_computed_tokens_np: Any
    logits_indices: torch.Tensor
    num_tokens_after_padding: int
    is_padding: torch.Tensor


class Host:
    """Stands in for vLLM's V2 GPUModelRunner (what BurstRunner calls), its device state on CPU tensors."""

    def __init__(self) -> None:
        n = len(SLOTS)
        self.scheduler_config = SimpleNamespace(async_scheduling=False)
        self.num_computed = torch.zeros(8, dtype=torch.int64)
        self.last_sampled = torch.zeros(8, 1, dtype=torch.int64)
        self.input_buffers = SimpleNamespace(
            input_ids=torch.zeros(8, dtype=torch.int64),
            positions=torch.zeros(8, dtype=torch.int64),
            seq_lens=torch.zeros(8, dtype=torch.int64),
        )
        self.req_states = SimpleNamespace(
            num_computed_tokens=SimpleNamespace(gpu=self.num_computed),
            last_sampled_tokens=self.last_sampled,
            prefill_len=SimpleNamespace(gpu=None),
            draft_tokens=None,
        )
        self.model_state = object.__new__(DefaultModelState)
        self.model_state.num_new_sampled_tokens_per_step = 1
        self.model_state.preprocess_state = lambda *args: None
        self.model_state.prepare_inputs = lambda batch, states: {}
        self.bounds: list[list[int]] = []  # the host's sequence-length bound each further step's metadata saw
        self.model_state.prepare_attn = lambda batch, *args: self.bounds.append(
            batch.seq_lens_cpu_upper_bound[:n].tolist()
        )
        self.cudagraph_manager = SimpleNamespace(ag_last_desc=SimpleNamespace(cg_mode=CUDAGraphMode.FULL))
        self.cudagraph_manager.run_fullgraph = lambda desc: self._model()
        self.supports_mm_inputs, self.sampler, self.speculator = False, SimpleNamespace(compute_nans=False), None
        self.pcp_manager, self.use_dcp, self.kv_cache_config, self.attn_groups = None, False, None, []
        self.kv_connector = SimpleNamespace(post_forward=lambda finished: None)
        self.main_stream = self.output_copy_stream = None
        self.execute_model_state: Any = None
        self.hosts_sampling = 0

    def _model(self) -> torch.Tensor:
        """The FULL graph: reads the static input buffers, returns one "hidden state" (the next token) per row."""
        ids, positions = self.input_buffers.input_ids, self.input_buffers.positions
        return (ids * 31 + positions * 7 + 5) % VOCAB

    def execute_model(self, scheduler_output: Any, *args: Any, **kwargs: Any) -> None:
        """vLLM's: the first step's inputs (from the host) and its forward."""
        n = len(SLOTS)
        slots = torch.tensor(SLOTS)
        self.num_computed[slots] = torch.tensor(COMPUTED)
        self.input_buffers.input_ids[:n] = torch.tensor(FIRST)
        self.input_buffers.positions[:n] = torch.tensor(COMPUTED)
        batch = Batch(
            req_ids=["a", "b", "c"],
            num_reqs=n,
            idx_mapping=slots,
            query_start_loc=torch.arange(n + 1),
            seq_lens=self.input_buffers.seq_lens[:n],
            cu_num_logits=torch.arange(n + 1),
            input_ids=self.input_buffers.input_ids[:n],
            positions=self.input_buffers.positions[:n],
            seq_lens_cpu_upper_bound=torch.tensor(COMPUTED) + 1,
            num_computed_tokens_np=torch.tensor(COMPUTED).numpy(),
            logits_indices=torch.arange(n),
            num_tokens_after_padding=n,
            is_padding=torch.zeros(n, dtype=torch.bool),
        )
        self.execute_model_state = SimpleNamespace(
            input_batch=batch, hidden_states=self._model(), finished_req_ids=set()
        )

    def sample_tokens(self, grammar_output: Any) -> str:
        self.hosts_sampling += 1
        return "vLLM's own sampling"

    def sample(self, hidden: torch.Tensor, batch: Batch, grammar_output: Any) -> Any:
        tokens = hidden[batch.logits_indices].view(-1, 1).clone()
        return SimpleNamespace(sampled_token_ids=tokens), None, None

    def postprocess_sampled(self, idx_mapping: torch.Tensor, sampled: torch.Tensor, *args: Any) -> None:
        """vLLM's post_update: one more computed token, the sampled token kept for the next step's input."""
        self.num_computed[idx_mapping] += 1
        self.last_sampled[idx_mapping] = sampled

    def prepare_attn(self, batch: Batch) -> tuple[None, None]:
        return None, None


class Runner(gpu_burst.BurstRunner, Host):
    pass


def _prepare_pos_seq_lens(idx_mapping, query_start_loc, num_computed, positions, seq_lens) -> None:  # noqa: ANN001
    n = idx_mapping.shape[0]
    positions[:n] = num_computed[idx_mapping]
    seq_lens[:n] = num_computed[idx_mapping] + 1


def _combine(input_ids, idx_mapping, last_sampled, *args: Any) -> torch.Tensor:  # noqa: ANN001
    n = idx_mapping.shape[0]
    input_ids[:n] = last_sampled[idx_mapping, 0]
    return torch.arange(n)


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """vLLM's input kernels and the CUDA pieces replaced; the burst's output object kept for the test."""
    made: list[Any] = []
    monkeypatch.setattr(gpu_burst, "prepare_pos_seq_lens", _prepare_pos_seq_lens)
    monkeypatch.setattr(gpu_burst, "combine_sampled_and_draft_tokens", _combine)
    monkeypatch.setattr(gpu_burst, "build_slot_mappings_by_layer", lambda *args: None)
    monkeypatch.setattr(gpu_burst.torch.cuda, "Event", lambda **kwargs: SimpleNamespace(record=lambda: None))
    monkeypatch.setattr(gpu_burst, "BurstOutput", lambda output, tokens, *args: made.append((output, tokens)) or made)
    reset_counters()
    return made


def _burst(steps: int, decode_steps: int = 4) -> tuple[Runner, Any]:
    runner = Runner()
    runner.setup_bursts(decode_steps)
    output = SimpleNamespace(total_num_scheduled_tokens=3, **{PLAN_ATTRIBUTE: BurstPlan(steps)})
    runner.execute_model(output)
    return runner, runner.sample_tokens(None)


def _expected(steps: int) -> list[list[int]]:
    """What K = 1 would sample, step after step: each token fed back at the next position."""
    rows = []
    for token, position in zip(FIRST, COMPUTED, strict=True):
        row = []
        for step in range(steps):
            token = next_token(token, position + step)
            row.append(token)
        rows.append(row)
    return rows


@pytest.mark.parametrize("steps", [2, 4])
def test_a_burst_feeds_each_sampled_token_to_the_next_step(stand_ins: list[Any], steps: int) -> None:
    runner, _ = _burst(steps)
    ((output, tokens),) = stand_ins
    assert tokens.tolist() == _expected(steps)  # [num_reqs, steps]: request i's burst in row i
    assert output.req_ids == ["a", "b", "c"] and output.req_id_to_index == {"a": 0, "b": 1, "c": 2}
    # each further step's attention metadata saw the host bound one higher, without a read of the device
    assert runner.bounds == [[c + 1 + step for c in COMPUTED] for step in range(1, steps)]
    assert runner.num_computed[SLOTS].tolist() == [c + steps for c in COMPUTED]  # the state K = 1 would leave
    assert runner.hosts_sampling == 0 and runner.execute_model_state is None


def test_single_steps_and_blocked_bursts_are_vllms_own(stand_ins: list[Any]) -> None:
    runner, result = _burst(1, decode_steps=4)  # the scheduler planned one step (prefill, logprobs, ...)
    assert result == "vLLM's own sampling" and stand_ins == []
    runner = Runner()
    runner.setup_bursts(4)
    runner.supports_mm_inputs = True  # what only the runner knows blocks the burst: one step, counted
    runner.execute_model(SimpleNamespace(total_num_scheduled_tokens=3, **{PLAN_ATTRIBUTE: BurstPlan(4)}))
    assert runner.sample_tokens(None) == "vLLM's own sampling" and stand_ins == []
    assert counters().get("burst_single_steps") == 2
    runner.scheduler_config.async_scheduling = True
    with pytest.raises(ValueError, match="without vLLM's async scheduling"):
        runner.setup_bursts(4)


def test_stale_input_broken_variant_gives_other_tokens(stand_ins: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASCEND_GRAPH_UNSAFE_BURST_STALE_INPUT", "1")
    _burst(4)
    ((_, tokens),) = stand_ins
    assert tokens[:, 0].tolist() == [row[0] for row in _expected(4)]  # the first step is vLLM's, unchanged
    assert tokens.tolist() != _expected(4)
