"""The CPU lane's forward-async output (AscendGraphAsyncOutput): tokens come from the device job's host copy once
the job's event fired; a job that failed surfaces as one error naming the cause, in get_output()."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
import torch

pytest.importorskip("vllm")


def launched(tokens: Future[torch.Tensor]) -> object:
    from ascend_graph.device.cpu import CPU_DEVICE, CpuEvent
    from ascend_graph.vllm_plugin.model_runner import _Launched

    stream = CPU_DEVICE.new_stream()
    done = CpuEvent()
    stream.submit(lambda: tokens.set_result(torch.tensor([[5], [7], [9]])))
    done.record(stream)
    return _Launched(scheduler_output=None, sampled=torch.zeros(3, 1), tokens=tokens, done=done)


def output() -> object:
    from vllm.v1.outputs import ModelRunnerOutput

    return ModelRunnerOutput(req_ids=["a", "b", "c"], req_id_to_index={"a": 0, "b": 1, "c": 2})


def test_tokens_come_from_the_job_and_discarded_rows_are_emptied() -> None:
    from ascend_graph.vllm_plugin.model_runner import AscendGraphAsyncOutput

    result = AscendGraphAsyncOutput(output(), launched(Future()), invalid_req_indices=[1]).get_output()
    assert result.sampled_token_ids == [[5], [], [9]]


def test_a_failed_job_raises_one_error_naming_its_cause() -> None:
    from ascend_graph.device.cpu import CpuEvent
    from ascend_graph.vllm_plugin.model_runner import AscendGraphAsyncOutput, _Launched

    failed: Future[torch.Tensor] = Future()
    failed.set_exception(ValueError("sampler blew up"))

    step = _Launched(scheduler_output=None, sampled=torch.zeros(1, 1), tokens=failed, done=CpuEvent())
    with pytest.raises(RuntimeError, match="forward-async device job failed: ValueError.*sampler blew up") as caught:
        AscendGraphAsyncOutput(output(), step, invalid_req_indices=[]).get_output()
    assert isinstance(caught.value.__cause__, ValueError)
