"""Ascend bursts across scheduler steps with vLLM's async scheduling (mode "forward-async": two static sets), over
stand-ins for vllm-ascend and the NPU: call order only, NOT NPU coverage (no NPU, CANN, torch_npu or vllm-ascend here).

Real here: `NpuBurstRunner` (with gpu_burst.BurstRunner), the static-set rotation of `gpu_runner.StaticSetsRunner`
and the FULL-graph manager `AscendGraphAclGraphs`. Stand-ins (test_npu_burst.py's): vllm-ascend's runner, its
metadata (views of the set's host sequence lengths), graphs, events and streams that log what they are asked to do.
Every stand-in "device" operation runs at once, so no timing hazard can show; what is pinned down is the order the
host asks for things and where its writes land (docs/multistep.md, "Ascend", for why that order is enough):

- burst N (4 steps) replays set 0's graph four times, each update after the update stream's wait for the previous
  replay of set 0; step N+1 (a burst of 2) first takes the counts of burst N's last step (vllm-ascend's
  `_update_seq_lens_cpu` waits for that copy), then writes set 1's host sequence lengths, and its update waits for
  set 1's last replay, not burst N's; burst N+2 writes set 0 again and its update waits for burst N's last replay;
- no host write for a later scheduler step lands in an array that an earlier step's metadata refers to;
- the tokens of the three bursts continue K = 1's recurrence.

Broken variants, each caught: the set not rotated per scheduler step; a second set that shares the first set's host
sequence lengths (step N+1 writes the array that burst N's first update read).
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("vllm")
np = pytest.importorskip("numpy")

from ascend_graph.staging import SetRing  # noqa: E402
from ascend_graph.vllm_plugin.gpu_runner import StaticSetsRunner, V2InputSet  # noqa: E402
from ascend_graph.vllm_plugin.multistep import PLAN_ATTRIBUTE, BurstPlan  # noqa: E402

from .test_gpu_burst import COMPUTED, SLOTS, _expected  # noqa: E402
from .test_npu_burst import FULL_4, PAD_SEQ_LEN, AscendHost, stand_in_ascend  # noqa: E402
from .test_npu_runner_order import FakeGraph  # noqa: E402

BURSTS = (4, 2, 2)  # the steps of scheduler steps N, N+1, N+2


@pytest.fixture
def ascend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    return stand_in_ascend(monkeypatch, tmp_path)


class ScheduledHost(AscendHost):
    """AscendHost whose later scheduler steps start where the last one left the requests, as vllm-ascend's do."""

    def _host_counts_and_tokens(self, slots: torch.Tensor) -> list[int]:
        index = next(i for i, s in enumerate(self.ag_sets) if s.input_buffers is self.input_buffers)
        if not self.counts_to_host:
            counts = super()._host_counts_and_tokens(slots)
        else:
            # _update_seq_lens_cpu (worker/v2/model_runner.py:421-439): the host waits for the event of the last copy
            # of the device's counts, then takes them; the input tokens are the last sampled ones, fed back on the
            # device by combine_sampled_and_draft_tokens
            counts = self.counts_to_host[-1]
            self.input_buffers.input_ids[: len(SLOTS)] = self.last_sampled[slots, 0]
        self.log.add("host waits for counts", counts)
        self.log.add("host writes set", index)
        return counts


def _make(ascend: Any, runner_cls: type, ring_cls: type = SetRing, share_host_array: bool = False) -> Any:
    """A forward-async runner with two static sets: set 0 is the host's buffers, set 1 a second copy of them."""
    acl_graph = sys.modules["vllm_ascend.compilation.acl_graph"]
    acl_graph.update_full_graph_params = lambda backend, stream, context, num_tokens, *rest: ascend.log.add(
        "update", acl_graph._graph_params, num_tokens, context.attn_metadata["layer.0"].tolist()
    )
    runner = ascend.make(runner_cls)  # one set, as in mode "sync"; made into two below, as initialize_kv_cache does
    manager = runner.cudagraph_manager
    manager.adopt(2, "npu")
    manager.ag_last_desc = FULL_4  # what its dispatch records for each scheduler step's first step
    for index in (0, 1):  # the runner's capture_model: each set's graph with that set's parameters
        manager.use_set(index)
        manager.ag_graphs[(FULL_4, index)] = types.SimpleNamespace(graph=FakeGraph(ascend.log, f"graph{index}"))
    first = runner.input_buffers
    second = types.SimpleNamespace(
        **{name: value.clone() for name, value in vars(first).items() if name != "seq_lens_np"}
    )
    second.seq_lens_np = first.seq_lens_np if share_host_array else first.seq_lens_np.copy()
    runner.block_tables = types.SimpleNamespace(input_block_tables=[], input_block_table_ptrs=None, slot_mappings=None)
    runner.ag_sets = ring_cls([V2InputSet(buffers, [], None, None) for buffers in (first, second)])
    runner.ag_delay_ms, runner.ag_device_kind = 0.0, "npu"
    runner._use_set(0)
    runner.scheduler_config.async_scheduling = True  # vLLM's async scheduling: mode "forward-async"
    runner.setup_bursts(4)
    ascend.log.clear()
    return runner


def _runner_cls(ascend: Any) -> type:
    return type("Runner", (ascend.npu_burst.NpuBurstRunner, StaticSetsRunner, ScheduledHost), {})


def _run(runner: Any) -> list[bool]:
    """Runs the scheduler steps; per step after the first, whether every array that the previous step's metadata
    views still holds what it held when built, once this step's host writes are done (its execute_model). Two steps
    back may be rewritten: step N+2 reuses burst N's set once step N+1's host waited for burst N's last counts."""
    intact, previous = [], range(0)
    for steps in BURSTS:
        plan = {PLAN_ATTRIBUTE: BurstPlan(steps)}
        start = len(runner.metadata)
        runner.execute_model(types.SimpleNamespace(total_num_scheduled_tokens=3, attn_state="DecodeOnly", **plan))
        if previous:
            intact.append(all(runner.metadata[i][0].tolist() == runner.metadata[i][1] for i in previous))
        runner.sample_tokens(None)
        previous = range(start, len(runner.metadata))
    return intact


def _expected_log() -> list[tuple[Any, ...]]:
    """Scheduler step s on set s % 2: the host's wait for the counts and its write of that set, then per step of the
    burst the rotary tables (further steps), the update stream's wait for the set's last replay, the replay, its
    event, the update of the set's parameters with the step's sequence lengths."""
    log: list[tuple[Any, ...]] = []
    done = 0  # steps before this scheduler step
    for scheduler_step, steps in enumerate(BURSTS):
        index = scheduler_step % 2
        log += [("host waits for counts", [c + done for c in COMPUTED]), ("host writes set", index)]
        for step in range(done, done + steps):
            if step > done:
                log.append(("cos_sin", [c + step for c in COMPUTED] + [0]))
            log += [
                ("update waits", f"replayed{index}"),
                ("replay", f"graph{index}"),
                ("record", f"replayed{index}"),
                ("update", f"params{index}", 4, [c + 1 + step for c in COMPUTED] + [PAD_SEQ_LEN]),
            ]
        done += steps
    return log


def test_bursts_across_scheduler_steps_rotate_the_sets_and_never_rewrite_what_an_update_read(ascend: Any) -> None:
    runner = _make(ascend, _runner_cls(ascend))
    assert _run(runner) == [True, True]  # no host write for step N+1 lands in an array burst N's metadata views
    assert ascend.log == _expected_log()
    total = _expected(sum(BURSTS))  # K = 1's recurrence over all the steps
    starts = np.cumsum((0, *BURSTS))
    assert [t.tolist() for t in ascend.copies] == [
        [row[a:b] for row in total] for a, b in zip(starts, starts[1:], strict=False)
    ]
    last = runner.metadata[-BURSTS[-1] :]  # the last scheduler step's: nothing wrote after it
    assert [view.tolist() for view, _ in last] == [built for _, built in last]
    assert runner.counts_to_host[-1] == [c + sum(BURSTS) for c in COMPUTED]


class OneSet(SetRing):
    """The broken variant: the ring never moves on, every scheduler step takes set 0."""

    def advance(self) -> None:
        pass


def test_sets_not_rotated_per_scheduler_step_rewrite_the_array_burst_n_read(ascend: Any) -> None:
    runner = _make(ascend, _runner_cls(ascend), ring_cls=OneSet)
    assert _run(runner) == [False, False]  # step N+1 wrote the set-0 array burst N's first update read: caught
    assert ("host writes set", 1) not in ascend.log and ("replay", "graph1") not in ascend.log
    assert ascend.log != _expected_log()


def test_a_second_set_sharing_the_host_sequence_lengths_is_caught(ascend: Any) -> None:
    """The broken variant of the second set: device buffers of its own, the host array of the first (step N+1's
    `_update_seq_lens_cpu` writes the array that burst N's first step's metadata views). The order of waits,
    replays and updates is the right one; only the views show it."""
    runner = _make(ascend, _runner_cls(ascend), share_host_array=True)
    assert _run(runner) == [False, False]  # caught
    assert [entry[0] for entry in ascend.log] == [entry[0] for entry in _expected_log()]


def test_the_runner_under_test_is_ascend_graphs_own(ascend: Any) -> None:
    """The MRO the tests above run is the real runner's (npu_runner.AscendGraphNPUModelRunner) over the host."""
    npu_runner = importlib.import_module("ascend_graph.vllm_plugin.npu_runner")
    real = [c.__name__ for c in npu_runner.AscendGraphNPUModelRunner.__mro__]
    assert real[1:4] == ["NpuBurstRunner", "BurstRunner", "StaticSetsRunner"]
    assert npu_runner.AscendGraphNPUModelRunner.ag_static_sets_for_async == 2
