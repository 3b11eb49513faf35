"""The CUDA lane's bursts (gpu_burst.py) over stand-ins, on the CPU: the order of a burst's device steps.

vLLM 0.26's Triton kernels, CUDA events and streams do not run here, so vLLM's runner is a stand-in whose "device"
is a few CPU tensors: `num_computed` and `last_sampled` per request slot (what vLLM's post_update advances), a
model whose next token depends on the input token and its position, and stand-ins for the two input kernels with
the semantics of vLLM's (positions and sequence lengths from num_computed; input ids from last_sampled). What is
real is `BurstRunner`: the plan it takes, which steps it runs, the order of sampling, state update and input
preparation, the joining of the tokens, the host's sequence-length bound, the broken variant, and the output
protocol: `BurstOutput` (real) over stand-in events and streams that log what they are asked, read the way vLLM's
executor reads it, at once without async scheduling and after the next burst was queued with it. Every "device"
operation here runs at once on the CPU, so no ordering hazard of a real stream can show: the CUDA lane is
unverified until its GPU tests run (test_gpu_multistep.py, the same code in vLLM).
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

    def __init__(self, log: list[str]) -> None:
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
        self.device_seq_lens: list[list[int]] = []  # and the device's sequence lengths then (what it bounds)
        self.model_state.prepare_attn = lambda batch, *args: (
            self.bounds.append(batch.seq_lens_cpu_upper_bound[:n].tolist()),
            self.device_seq_lens.append(self.input_buffers.seq_lens[:n].tolist()),
        )
        self.cudagraph_manager = SimpleNamespace(ag_last_desc=SimpleNamespace(cg_mode=CUDAGraphMode.FULL))
        self.cudagraph_manager.run_fullgraph = lambda desc: self._model()
        self.supports_mm_inputs, self.sampler, self.speculator = False, SimpleNamespace(compute_nans=False), None
        self.pcp_manager, self.use_dcp, self.kv_cache_config, self.attn_groups = None, False, None, []
        self.kv_connector = SimpleNamespace(post_forward=lambda finished: None)
        self.log = log  # the forwards, and what the output's stand-in streams and events were asked
        self.main_stream, self.output_copy_stream = Stream(self.log, "main"), Stream(self.log, "copy")
        self.execute_model_state: Any = None
        self.hosts_sampling = 0
        slots = torch.tensor(SLOTS)  # what the requests' prefill left on the device
        self.num_computed[slots] = torch.tensor(COMPUTED)
        self.last_sampled[slots, 0] = torch.tensor(FIRST)

    def _model(self) -> torch.Tensor:
        """The FULL graph: reads the static input buffers, returns one "hidden state" (the next token) per row."""
        self.log.append("forward")
        ids, positions = self.input_buffers.input_ids, self.input_buffers.positions
        return (ids * 31 + positions * 7 + 5) % VOCAB

    def execute_model(self, scheduler_output: Any, *args: Any, **kwargs: Any) -> None:
        """vLLM's V2: the first step's inputs from the device state (input ids from the last sampled tokens,
        positions from the computed tokens) and its forward; the host's sequence-length bound from the scheduler's
        computed-token counts (`host_computed` on the stand-in scheduler output, COMPUTED unless given)."""
        n = len(SLOTS)
        slots = torch.tensor(SLOTS)
        host_computed = torch.tensor(getattr(scheduler_output, "host_computed", COMPUTED))
        self.input_buffers.input_ids[:n] = self.last_sampled[slots, 0]
        self.input_buffers.positions[:n] = self.num_computed[slots]
        self.input_buffers.seq_lens[:n] = self.num_computed[slots] + 1
        self.bounds.append((host_computed + 1).tolist())
        self.device_seq_lens.append(self.input_buffers.seq_lens[:n].tolist())
        batch = Batch(
            req_ids=["a", "b", "c"],
            num_reqs=n,
            idx_mapping=slots,
            query_start_loc=torch.arange(n + 1),
            seq_lens=self.input_buffers.seq_lens[:n],
            cu_num_logits=torch.arange(n + 1),
            input_ids=self.input_buffers.input_ids[:n],
            positions=self.input_buffers.positions[:n],
            seq_lens_cpu_upper_bound=host_computed + 1,
            num_computed_tokens_np=host_computed.numpy(),
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


class Stream:
    """Stands in for a CUDA stream: logs the waits it is asked for."""

    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def wait_stream(self, other: Stream) -> None:
        self.log.append(f"{self.name} waits for {other.name}")


class Event:
    """Stands in for a CUDA event: logs records and host waits; 0.5 ms between any two timing events."""

    def __init__(self, log: list[str], enable_timing: bool = False, blocking: bool = False) -> None:
        self.log, self.timing = log, enable_timing

    def record(self, stream: Stream | None = None) -> None:
        if not self.timing:  # the output's copy event (the timing events are recorded on the main stream)
            self.log.append(f"copy event recorded on {stream.name if stream else 'main'}")

    def synchronize(self) -> None:
        self.log.append("host waits for the copy")

    def elapsed_time(self, end: Event) -> float:
        return 0.5


def _prepare_pos_seq_lens(idx_mapping, query_start_loc, num_computed, positions, seq_lens) -> None:  # noqa: ANN001
    n = idx_mapping.shape[0]
    positions[:n] = num_computed[idx_mapping]
    seq_lens[:n] = num_computed[idx_mapping] + 1


def _combine(input_ids, idx_mapping, last_sampled, *args: Any) -> torch.Tensor:  # noqa: ANN001
    n = idx_mapping.shape[0]
    input_ids[:n] = last_sampled[idx_mapping, 0]
    return torch.arange(n)


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """vLLM's input kernels and the CUDA events and streams replaced; returns the log the events, the streams and
    the runners' forwards share."""
    log: list[str] = []
    monkeypatch.setattr(gpu_burst, "prepare_pos_seq_lens", _prepare_pos_seq_lens)
    monkeypatch.setattr(gpu_burst, "combine_sampled_and_draft_tokens", _combine)
    monkeypatch.setattr(gpu_burst, "build_slot_mappings_by_layer", lambda *args: None)
    monkeypatch.setattr(gpu_burst.torch.cuda, "Event", lambda **kwargs: Event(log, **kwargs))
    monkeypatch.setattr(gpu_burst.torch.cuda, "stream", _stream_context)
    reset_counters()
    return log


def _stream_context(stream: Stream) -> Any:
    import contextlib

    stream.log.append(f"on {stream.name}")
    return contextlib.nullcontext()


def _runner(log: list[str], decode_steps: int = 4, asynchronous: bool = False) -> Runner:
    runner = Runner(log)
    runner.scheduler_config.async_scheduling = asynchronous
    runner.setup_bursts(decode_steps)
    return runner


def _step(runner: Runner, steps: int, host_computed: list[int] | None = None) -> Any:
    """One scheduler step, as vLLM's engine core calls the runner: execute_model, then sample_tokens."""
    output = SimpleNamespace(total_num_scheduled_tokens=3, **{PLAN_ATTRIBUTE: BurstPlan(steps)})
    if host_computed is not None:
        output.host_computed = host_computed
    runner.execute_model(output)
    return runner.sample_tokens(None)


def _burst(log: list[str], steps: int, decode_steps: int = 4) -> tuple[Runner, Any]:
    runner = _runner(log, decode_steps)
    return runner, _step(runner, steps)


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
def test_a_burst_feeds_each_sampled_token_to_the_next_step(stand_ins: list[str], steps: int) -> None:
    runner, result = _burst(stand_ins, steps)
    assert isinstance(result, gpu_burst.BurstOutput)
    assert result.tokens.tolist() == _expected(steps)  # [num_reqs, steps]: request i's burst in row i
    # each step's attention metadata saw the host bound one higher, without a read of the device, and exact
    assert runner.bounds == [[c + 1 + step for c in COMPUTED] for step in range(steps)]
    assert runner.bounds == runner.device_seq_lens
    assert runner.num_computed[SLOTS].tolist() == [c + steps for c in COMPUTED]  # the state K = 1 would leave
    assert runner.hosts_sampling == 0 and runner.execute_model_state is None
    # One copy of all the steps' tokens, on the copy stream after the main stream; read when vLLM asks.
    assert stand_ins == ["forward"] * steps + ["on copy", "copy waits for main", "copy event recorded on copy"]
    output = result.get_output()
    assert stand_ins[-1] == "host waits for the copy"
    assert output.sampled_token_ids == _expected(steps)
    assert output.req_ids == ["a", "b", "c"] and output.req_id_to_index == {"a": 0, "b": 1, "c": 2}
    counts = counters()
    assert (counts["bursts"], counts["burst_steps"], counts["burst_device_us"]) == (1, steps, 500)
    assert counts.get("bursts_cut_short", 0) == (steps < 4)


def test_with_async_scheduling_the_next_burst_is_queued_before_any_token_is_read(stand_ins: list[str]) -> None:
    """vLLM's async scheduling: the engine core schedules the next step before reading this burst's output; the
    scheduler reserved the burst's 4 tokens (its computed-token counts are 4 ahead), the next step's first input is
    the burst's last token, taken from the device. Both bursts' tokens continue K = 1's recurrence; the host's
    bound equals the device's sequence lengths at every step; no host wait until vLLM reads the outputs, in order."""
    runner = _runner(stand_ins, decode_steps=4, asynchronous=True)
    first = _step(runner, 4)
    second = _step(runner, 3, host_computed=[c + 4 for c in COMPUTED])  # the placeholders' reservation
    copy = ["on copy", "copy waits for main", "copy event recorded on copy"]
    assert stand_ins == ["forward"] * 4 + copy + ["forward"] * 3 + copy  # queued, nothing read yet
    outputs = [first.get_output(), second.get_output()]
    assert stand_ins[-2:] == ["host waits for the copy"] * 2
    joined = [a + b for a, b in zip(*(output.sampled_token_ids for output in outputs), strict=True)]
    assert joined == _expected(7)
    assert runner.bounds == runner.device_seq_lens == [[c + 1 + step for c in COMPUTED] for step in range(7)]
    counts = counters()
    assert (counts["bursts"], counts["burst_steps"], counts["bursts_cut_short"]) == (2, 7, 1)


def test_the_runner_refuses_async_scheduling_only_where_bursts_do_not_compose_with_it(stand_ins: list[str]) -> None:
    _runner(stand_ins, asynchronous=True)  # CUDA's BurstRunner: composes
    not_built = type("NotBuilt", (Runner,), {"bursts_with_async_scheduling": False})
    runner = not_built(stand_ins)
    runner.scheduler_config.async_scheduling = True
    with pytest.raises(ValueError, match=r"runs without vLLM's async scheduling: pass --no-async-scheduling"):
        runner.setup_bursts(4)
    runner.setup_bursts(1)  # one step per round trip: nothing to refuse


def test_single_steps_and_blocked_bursts_are_vllms_own(stand_ins: list[str]) -> None:
    runner, result = _burst(stand_ins, 1, decode_steps=4)  # the scheduler planned one step (prefill, logprobs, ...)
    assert result == "vLLM's own sampling" and stand_ins == ["forward"]
    runner = _runner(stand_ins, 4)
    runner.supports_mm_inputs = True  # what only the runner knows blocks the burst: one step, counted
    assert _step(runner, 4) == "vLLM's own sampling" and stand_ins == ["forward"] * 2
    assert counters().get("burst_single_steps") == 2


@pytest.mark.parametrize("asynchronous", [False, True])
def test_stale_input_broken_variant_gives_other_tokens(
    stand_ins: list[str], monkeypatch: pytest.MonkeyPatch, asynchronous: bool
) -> None:
    monkeypatch.setenv("ASCEND_GRAPH_UNSAFE_BURST_STALE_INPUT", "1")
    runner = _runner(stand_ins, 4, asynchronous)
    tokens = _step(runner, 4).get_output().sampled_token_ids
    assert [row[0] for row in tokens] == [row[0] for row in _expected(4)]  # the first step is vLLM's, unchanged
    assert tokens != _expected(4)
