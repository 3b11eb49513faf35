"""The runner's protocol under stress: random host delays, random device-side delays on every stream, poisoned
host buffers. Forward-async and scheduler-async must produce exactly the tokens of sync mode; a runner with the
staging guard switched off must not (so these tests can fail); the silent-sync detector names planted lines."""

from __future__ import annotations

import random

import pytest
import torch

from ascend_graph.models.qwen3 import Qwen3Shape
from ascend_graph.runner import GraphRunner, RunnerConfig, SilentSyncError
from ascend_graph.runner.harness import DecodeHarness, Workload, device_delays, paged_runner

# Small enough that 10 000 steps fit in CI on two cores; head_dim 32 as vLLM's CPU attention wants.
STRESS_SHAPE = Qwen3Shape(vocab=128, hidden=32, layers=1, heads=2, kv_heads=1, head_dim=32, intermediate=64)


def _runner(workload: Workload, device: str = "cpu", **config: object) -> GraphRunner:
    return paged_runner(STRESS_SHAPE, workload, device, RunnerConfig(capture_sizes=(1, 2, 4, 8), **config))  # type: ignore[arg-type]


def _run(workload: Workload, mode: str, host_delay_s: float = 0.0, delays=None, **config: object):  # type: ignore[no-untyped-def]
    runner = _runner(workload, mode=mode, **config)
    with torch.inference_mode():
        return DecodeHarness(workload, host_delay_s=host_delay_s, device_delay=delays).run(runner), runner


STRESS = Workload.race_stress(3_000, STRESS_SHAPE.vocab, seed=7)


@pytest.mark.slow
def test_forward_async_stress_10k_steps_matches_sync() -> None:
    reference, _ = _run(STRESS, "sync")
    result, runner = _run(STRESS, "forward-async", host_delay_s=0.0004, delays=device_delays(0.0006), poison=True)
    launched = len(runner.metrics.device_ms)  # one entry per launched step whose tokens were read
    assert launched >= 10_000, launched
    assert len(result.tokens) == STRESS.requests
    assert result.tokens == reference.tokens


@pytest.mark.slow
def test_scheduler_async_stress_matches_sync() -> None:
    workload = Workload.race_stress(400, STRESS_SHAPE.vocab, seed=3, arrivals_per_step=0.5)
    reference, _ = _run(workload, "sync")
    result, _ = _run(workload, "scheduler-async", host_delay_s=0.0004, delays=device_delays(0.0006), poison=True)
    assert result.tokens == reference.tokens


def test_stress_broken_staging_guard_gives_wrong_tokens() -> None:
    """One staging set, guard off, slow copies: the host rewrites staging before its copy ran (hazard 1)."""
    workload = Workload(requests=120, max_batch=8, num_blocks=160, new_tokens=(8, 40), vocab=STRESS_SHAPE.vocab, seed=5)
    reference, _ = _run(workload, "sync")
    slow_copies = device_delays(0.002, probability=1.0)
    broken, _ = _run(workload, "forward-async", delays=slow_copies, staging_sets=1, guard_staging=False)
    assert broken.tokens != reference.tokens
    guarded, _ = _run(workload, "forward-async", delays=slow_copies, staging_sets=1)
    assert guarded.tokens == reference.tokens


def test_all_modes_agree_on_a_short_workload(device: str) -> None:
    workload = Workload(requests=24, max_batch=8, num_blocks=64, vocab=STRESS_SHAPE.vocab, seed=11)
    tokens = {
        mode: _run(workload, mode, device=device)[0].tokens for mode in ("sync", "scheduler-async", "forward-async")
    }
    assert tokens["sync"] == tokens["scheduler-async"] == tokens["forward-async"]
    assert len(tokens["sync"]) == workload.requests


def test_detector_names_a_planted_unpinned_copy() -> None:
    runner = _runner(Workload(requests=1), debug=True)
    static = runner.static[0].tensors["positions"]
    with pytest.raises(SilentSyncError, match=r"unpinned memory .*test_runner.py:\d+ in test_detector_names"):
        runner._h2d(static[:2], torch.arange(2))  # a fresh, unpinned tensor


def test_detector_names_a_planted_unpinned_copy_in_user_code() -> None:
    runner = _runner(Workload(requests=1))
    with runner.detect_silent_syncs(), pytest.raises(SilentSyncError, match=r"unpinned memory at .*test_runner.py"):
        runner.static[0].tensors["positions"][:2].copy_(torch.arange(2), non_blocking=True)


def test_detector_names_a_planted_device_read_in_the_step_loop() -> None:
    workload = Workload(requests=8, vocab=STRESS_SHAPE.vocab)

    def planted(runner: GraphRunner, rng: random.Random) -> None:
        runner.static[0].sampled[0].item()  # reads a device tensor every step: a silent sync

    runner = _runner(workload)
    harness = DecodeHarness(workload, device_delay=planted, detect_silent_syncs=True)
    with torch.inference_mode(), pytest.raises(SilentSyncError, match=r"device tensor .* in planted"):
        harness.run(runner)


def test_detector_passes_a_clean_loop() -> None:
    workload = Workload(requests=16, vocab=STRESS_SHAPE.vocab)
    runner = _runner(workload, debug=True)
    with torch.inference_mode():
        result = DecodeHarness(workload, detect_silent_syncs=True).run(runner)
    assert len(result.tokens) == workload.requests


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"mode='fast' is not allowed; mode must be one of"):
        RunnerConfig(mode="fast")
    with pytest.raises(ValueError, match=r"staging_sets=3"):
        RunnerConfig(staging_sets=3)


def test_batch_above_largest_capture_size_is_refused_with_advice() -> None:
    workload = Workload(requests=1)
    runner = _runner(workload)
    import numpy as np

    batch = {f.name: np.zeros((9, *f.row_shape), np.int64) for f in runner.fields}
    with pytest.raises(ValueError, match="above the largest capture size 8"):
        runner.launch(batch)
