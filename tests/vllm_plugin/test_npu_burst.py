"""Ascend bursts (npu_burst.py) over stand-ins for vllm-ascend and the NPU: call order only, NOT NPU coverage (no
NPU, CANN, torch_npu or vllm-ascend here; docs/ascend-conformance.md checks the names and signatures).

Real here: `NpuBurstRunner` (with gpu_burst.BurstRunner under it) and ascend_graph's FULL-graph manager
`AscendGraphAclGraphs` (its replay, the device-side wait of the update stream and the attention-parameter update per
replay). Stand-ins: vllm-ascend's runner (its "device" a few CPU tensors, the model and sampler a function of the
input token and position, as in test_gpu_burst.py), its attention metadata (views of the batch's host sequence
lengths, as vllm-ascend's builder keeps them), the graph, events and streams that log what they are asked to do.

What it pins down: a burst of K steps replays the graph K times with K updates, each after its replay; each step's
update sees host sequence lengths one higher than the last, and no step's array changes after its update (vllm-ascend's
metadata keeps views of it: an in-place `+= 1` would rewrite what an earlier update read, and the test catches that
variant); the rotary tables follow each step's positions; the tokens are K = 1's recurrence and reach the host in one
copy; a batch that is not decode-only runs one step (vllm-ascend's sampling); with vLLM's async scheduling, the copy
of the device's counts that the next scheduler step waits for is the burst's last step's.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("vllm")
np = pytest.importorskip("numpy")

from vllm.config.compilation import CUDAGraphMode  # noqa: E402
from vllm.v1.worker.gpu.cudagraph_utils import BatchExecutionDescriptor  # noqa: E402
from vllm.v1.worker.gpu.model_states.default import DefaultModelState  # noqa: E402

from ascend_graph.counters import counters, reset_counters  # noqa: E402
from ascend_graph.vllm_plugin import gpu_burst  # noqa: E402
from ascend_graph.vllm_plugin.multistep import PLAN_ATTRIBUTE, BurstPlan  # noqa: E402

from .test_gpu_burst import COMPUTED, FIRST, SLOTS, _expected, _prepare_pos_seq_lens  # noqa: E402
from .test_npu_runner_order import FakeDevice, FakeGraph, FakeUpdateStream, Log, _stand_in_vllm_ascend  # noqa: E402

FULL_4 = BatchExecutionDescriptor(CUDAGraphMode.FULL, num_tokens=4, num_reqs=4, uniform_token_count=1)
PAD_SEQ_LEN = 9  # the padding row's host sequence length, as the first step left it
VOCAB = 97


@dataclasses.dataclass
class AscendBatch:  # the fields of vllm-ascend's AscendInputBatch that a burst reads or replaces
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
    seq_lens_np: Any
    attn_state: Any


class AscendHost:
    """Stands in for vllm-ascend's V2 NPUModelRunner (what NpuBurstRunner and the graph manager call)."""

    def __init__(self, log: Log, manager: Any, state_enum: Any) -> None:
        self.log, self.state_enum = log, state_enum
        self.scheduler_config = types.SimpleNamespace(async_scheduling=False)
        self.num_computed = torch.zeros(8, dtype=torch.int64)
        self.last_sampled = torch.zeros(8, 1, dtype=torch.int64)
        self.input_buffers = types.SimpleNamespace(
            input_ids=torch.zeros(8, dtype=torch.int64),
            positions=torch.zeros(8, dtype=torch.int64),
            seq_lens=torch.zeros(8, dtype=torch.int64),
            seq_lens_np=np.zeros(8, dtype=np.int32),  # vllm-ascend's host buffer (AscendInputBuffers)
        )
        self.req_states = types.SimpleNamespace(
            num_computed_tokens=types.SimpleNamespace(gpu=self.num_computed),
            last_sampled_tokens=self.last_sampled,
            prefill_len=types.SimpleNamespace(gpu=None),
            draft_tokens=None,
        )
        self.model_state = object.__new__(DefaultModelState)  # vllm-ascend's AscendModelState subclasses it
        self.model_state.preprocess_state = lambda *args: None
        self.model_state.prepare_inputs = lambda batch, states: {}
        self.model_state.prepare_attn = self._prepare_attn
        self.metadata: list[tuple[torch.Tensor, list[int]]] = []  # each step's view and what it held when built
        self.cudagraph_manager = manager
        self.supports_mm_inputs, self.sampler, self.speculator = False, types.SimpleNamespace(compute_nans=False), None
        self.pcp_manager, self.use_dcp, self.kv_cache_config = None, False, None
        backend = types.SimpleNamespace(get_impl_cls=lambda: object)
        self.attn_groups = [[types.SimpleNamespace(backend=backend)]]
        self.update_stream, self.dp_size, self.speculative_config = FakeUpdateStream(log), 1, None
        self.kv_connector = types.SimpleNamespace(post_forward=lambda finished: None)
        self.main_stream = self.output_copy_stream = None
        self.execute_model_state: Any = None
        self.hosts_sampling = 0
        self.counts_to_host: list[list[int]] = []  # each copy of the counts whose event the next step waits for

    def _prepare_attn(self, batch: AscendBatch, *args: Any) -> dict[str, Any]:
        """vllm-ascend's AscendModelState.prepare_attn: metadata with a view of the batch's host sequence lengths
        (`torch.from_numpy(seq_lens_np)[:num_reqs]`, attn_utils.py:128), kept for the graph-task update."""
        view = torch.from_numpy(batch.seq_lens_np)[: FULL_4.num_reqs]
        self.metadata.append((view, view.tolist()))
        self.model_state.attn_metadata = {"layer.0": view}
        return self.model_state.attn_metadata

    def execute_model(self, scheduler_output: Any, *args: Any, **kwargs: Any) -> None:
        """vllm-ascend's (vLLM's execute_model with its prepare_inputs): the first step's inputs and its replay."""
        n = len(SLOTS)
        slots = torch.tensor(SLOTS)
        counts = self._host_counts_and_tokens(slots)
        self.input_buffers.positions[:n] = torch.tensor(counts)
        self.input_buffers.seq_lens_np[:n] = np.array(counts) + 1  # _update_seq_lens_cpu
        self.input_buffers.seq_lens_np[n] = PAD_SEQ_LEN
        batch = AscendBatch(
            req_ids=["a", "b", "c"],
            num_reqs=n,
            idx_mapping=slots,
            query_start_loc=torch.arange(n + 1),
            seq_lens=self.input_buffers.seq_lens[:n],
            cu_num_logits=torch.arange(n + 1),
            input_ids=self.input_buffers.input_ids[:4],
            positions=self.input_buffers.positions[:4],
            seq_lens_cpu_upper_bound=torch.tensor(counts) + 1,
            num_computed_tokens_np=np.array(counts),
            logits_indices=torch.arange(n),
            num_tokens_after_padding=4,
            is_padding=torch.zeros(4, dtype=torch.bool),
            seq_lens_np=self.input_buffers.seq_lens_np,
            attn_state=getattr(self.state_enum, scheduler_output.attn_state),
        )
        self._prepare_attn(batch)
        hidden = self.cudagraph_manager.run_fullgraph(FULL_4)
        self.execute_model_state = types.SimpleNamespace(
            input_batch=batch, hidden_states=hidden, finished_req_ids=set()
        )

    def _host_counts_and_tokens(self, slots: torch.Tensor) -> list[int]:
        """The computed counts the host takes for this step, and the step's input tokens: the requests as the test
        starts them (a later scheduler step's stand-in, test_npu_burst_async.py, takes them from the device)."""
        self.num_computed[slots] = torch.tensor(COMPUTED)
        self.input_buffers.input_ids[: len(SLOTS)] = torch.tensor(FIRST)
        return list(COMPUTED)

    def sample_tokens(self, grammar_output: Any) -> str:
        self.hosts_sampling += 1
        return "vllm-ascend's own sampling"

    def sample(self, hidden: torch.Tensor, batch: AscendBatch, grammar_output: Any) -> Any:
        """The stand-in model and greedy sampler: the next token of each request from its input token and position
        (what the graph read from the static input buffers)."""
        n = batch.num_reqs
        ids, positions = self.input_buffers.input_ids[:n], self.input_buffers.positions[:n]
        tokens = ((ids * 31 + positions * 7 + 5) % VOCAB).view(-1, 1)
        return types.SimpleNamespace(sampled_token_ids=tokens), None, None

    def postprocess_sampled(self, idx_mapping: torch.Tensor, sampled: torch.Tensor, *args: Any) -> None:
        """vllm-ascend's override (worker/v2/model_runner.py:388-419): vLLM's device update, then the copy of the
        device's counts to the host that the next scheduler step's `_update_seq_lens_cpu` waits for (its event)."""
        self.device_postprocess(idx_mapping, sampled)
        self.counts_to_host.append(self.num_computed[SLOTS].tolist())

    def device_postprocess(self, idx_mapping: torch.Tensor, sampled: torch.Tensor) -> None:
        """vLLM's GPUModelRunner.postprocess_sampled (post_update): the counts and last tokens on the device."""
        self.num_computed[idx_mapping] += 1
        self.last_sampled[idx_mapping] = sampled

    def prepare_attn(self, batch: AscendBatch) -> tuple[None, None]:
        return None, None


def _combine(input_ids, idx_mapping, last_sampled, *rest: Any) -> torch.Tensor:  # noqa: ANN001
    assert len(rest) == 6, "called as vllm-ascend's prepare_inputs calls it: nine arguments"
    n = idx_mapping.shape[0]
    input_ids[:n] = last_sampled[idx_mapping, 0]
    return torch.arange(n)


@pytest.fixture
def ascend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    return stand_in_ascend(monkeypatch, tmp_path)


def stand_in_ascend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """npu_runner and npu_burst imported over the stand-in vllm-ascend; a runner factory and the shared log."""
    from vllm.engine.arg_utils import EngineArgs

    from ascend_graph.models.tiny_hf import build_tiny_model_dir

    log = Log()
    acl_graph = _stand_in_vllm_ascend(monkeypatch, log)
    npu_runner = importlib.import_module("ascend_graph.vllm_plugin.npu_runner")
    npu_burst = importlib.import_module("ascend_graph.vllm_plugin.npu_burst")
    monkeypatch.setattr("ascend_graph.vllm_plugin.gpu_runner.get_device", lambda kind: FakeDevice(log))
    acl_graph.update_full_graph_params = lambda backend, stream, context, num_tokens, *rest: log.add(
        "update", num_tokens, context.attn_metadata["layer.0"].tolist()
    )
    monkeypatch.setattr(gpu_burst, "prepare_pos_seq_lens", _prepare_pos_seq_lens)
    monkeypatch.setattr(npu_burst, "combine_sampled_and_draft_tokens", _combine)
    monkeypatch.setattr(gpu_burst, "build_slot_mappings_by_layer", lambda *args: None)
    monkeypatch.setattr(gpu_burst.torch.cuda, "Event", lambda **kwargs: types.SimpleNamespace(record=lambda: None))
    copies: list[Any] = []  # each BurstOutput is one copy of a burst's tokens to the host
    monkeypatch.setattr(gpu_burst, "BurstOutput", lambda output, tokens, *args: copies.append(tokens) or copies)
    vllm_config = EngineArgs(model=str(build_tiny_model_dir(tmp_path / "tiny")), max_model_len=64)
    vllm_config = vllm_config.create_engine_config()
    state_enum = importlib.import_module("vllm_ascend.attention.attention_v1").AscendAttentionState
    reset_counters()

    def make(runner_cls: type = npu_burst.NpuBurstRunner) -> Any:
        manager = object.__new__(npu_runner.AscendGraphAclGraphs)
        acl_graph._graph_params = None
        acl_graph.set_graph_params([4])  # what ModelAclGraphManager.__init__ does
        manager.capture_sizes, manager.vllm_config = [4], vllm_config
        manager.is_last_pp_rank, manager.use_aux_hidden_state_outputs = True, False
        manager.hidden_states = torch.zeros(4, 8)
        manager.adopt(1, "npu")  # mode "sync": one static set
        manager.use_set(0)
        manager.ag_graphs[(FULL_4, 0)] = types.SimpleNamespace(graph=FakeGraph(log, "graph"))
        manager.ag_last_desc = FULL_4  # what its dispatch recorded for the first step
        runner = type("Runner", (runner_cls, AscendHost), {})(log, manager, state_enum)
        manager.model_runner = runner
        runner.setup_bursts(4)
        return runner

    return types.SimpleNamespace(make=make, log=log, copies=copies, npu_burst=npu_burst)


def _burst(runner: Any, steps: int, attn_state: str = "DecodeOnly") -> Any:
    plan = {PLAN_ATTRIBUTE: BurstPlan(steps)}
    runner.execute_model(types.SimpleNamespace(total_num_scheduled_tokens=3, attn_state=attn_state, **plan))
    return runner.sample_tokens(None)


def _step_log(step: int) -> list[tuple[Any, ...]]:
    """What step `step` of a burst asks of the device: (further steps) the rotary tables at its positions, then the
    update stream's wait for the previous replay, the replay, its event, and the update with its sequence lengths."""
    rotary = [("cos_sin", [c + step for c in COMPUTED] + [0])] if step else []
    seq_lens = [c + 1 + step for c in COMPUTED] + [PAD_SEQ_LEN]
    return rotary + [
        ("update waits", "replayed0"),
        ("replay", "graph"),
        ("record", "replayed0"),
        ("update", 4, seq_lens),
    ]


@pytest.mark.parametrize("steps", [2, 4])
def test_a_burst_replays_k_times_with_k_updates_one_sequence_length_higher_each(ascend: Any, steps: int) -> None:
    runner = ascend.make()
    _burst(runner, steps)
    assert ascend.log == [entry for step in range(steps) for entry in _step_log(step)]
    (tokens,) = ascend.copies  # one host copy of the whole burst's tokens
    assert tokens.tolist() == _expected(steps)  # K = 1's recurrence: each sampled token fed to the next step
    # no step's host array changed after its update read it (vllm-ascend's metadata keeps views of it)
    assert [view.tolist() for view, _ in runner.metadata] == [built for _, built in runner.metadata]
    assert runner.num_computed[SLOTS].tolist() == [c + steps for c in COMPUTED]
    assert runner.hosts_sampling == 0 and runner.input_batch.seq_lens_np[3] == PAD_SEQ_LEN


def test_sequence_lengths_raised_in_place_rewrite_what_earlier_updates_read(ascend: Any) -> None:
    """The broken variant: one host array raised in place for every step. The updates still log rising lengths
    (each read at its turn), but every earlier step's metadata now holds the last step's: caught."""

    class InPlace(ascend.npu_burst.NpuBurstRunner):
        def _further_batch(self, previous: Any, logits_indices: torch.Tensor) -> Any:
            previous.seq_lens_np[: previous.num_reqs] += 1
            return gpu_burst.BurstRunner._further_batch(self, previous, logits_indices)

    runner = ascend.make(InPlace)
    _burst(runner, 4)
    assert [view.tolist() for view, _ in runner.metadata] != [built for _, built in runner.metadata]


def test_a_batch_that_is_not_decode_only_runs_one_step(ascend: Any) -> None:
    runner = ascend.make()
    assert _burst(runner, 4, attn_state="PrefillNoCache") == "vllm-ascend's own sampling"
    assert ascend.copies == [] and counters().get("burst_single_steps") == 1
    assert [entry[0] for entry in ascend.log].count("replay") == 1  # the first step's, vllm-ascend's execute_model


def _async_runner(ascend: Any, runner_cls: type | None = None) -> Any:
    runner = ascend.make(runner_cls or ascend.npu_burst.NpuBurstRunner)
    runner.scheduler_config.async_scheduling = True  # vLLM's async scheduling: mode "forward-async"
    runner.setup_bursts(4)
    return runner


def test_with_async_scheduling_the_next_step_waits_for_the_counts_of_the_bursts_last_step(ascend: Any) -> None:
    """With vLLM's async scheduling the host prepares the next scheduler step while the burst runs; vllm-ascend's
    `_update_seq_lens_cpu` then waits for the event of the last copy of the device's counts and takes them as the
    host's. Every step of the burst is postprocessed by vllm-ascend's own override, so the last copy is the
    burst's last step's: the counts after all four steps, not after the first."""
    runner = _async_runner(ascend)
    assert runner.ag_async_scheduling
    _burst(runner, 4)
    assert runner.counts_to_host == [[c + step for c in COMPUTED] for step in (1, 2, 3, 4)]
    assert ascend.log == [entry for step in range(4) for entry in _step_log(step)]  # the same order as "sync"
    (tokens,) = ascend.copies
    assert tokens.tolist() == _expected(4)


def test_further_steps_without_vllm_ascends_copy_leave_the_first_steps_counts_for_the_host(ascend: Any) -> None:
    """The broken variant: further steps postprocessed by vLLM's device update alone (as if ascend_graph overrode
    vllm-ascend's `postprocess_sampled`). The tokens are still right, but the copy the next step waits for holds
    the counts after the first step: its host sequence lengths would be three short. Caught."""

    class DeviceUpdateOnly(ascend.npu_burst.NpuBurstRunner):
        def _sample_step(self, hidden: torch.Tensor, batch: Any) -> torch.Tensor:
            if not self.counts_to_host:
                return super()._sample_step(hidden, batch)
            sampled = self.sample(hidden, batch, None)[0].sampled_token_ids
            self.device_postprocess(batch.idx_mapping, sampled)
            return sampled

    runner = _async_runner(ascend, DeviceUpdateOnly)
    _burst(runner, 4)
    assert ascend.copies[0].tolist() == _expected(4)
    assert runner.counts_to_host[-1] != [c + 4 for c in COMPUTED]
