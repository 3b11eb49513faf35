import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from ascend_graph.cli import main


def test_info_reports_lane_and_versions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["torch"] and "cpu" in facts["devices"]
    assert facts["lane"] in ("cpu", "cuda", "npu (unverified)")


def _doctor(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """In a fresh process, as a user runs it: vLLM's import and logging must not touch the test process."""
    return subprocess.run(
        [sys.executable, "-m", "ascend_graph.cli", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


HAS_VLLM_CPU = importlib.util.find_spec("vllm") is not None and not torch.cuda.is_available()


def test_doctor_reports_versions_lane_and_that_the_plugins_activate() -> None:
    done = _doctor("--json")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    facts = json.loads(done.stdout)  # vLLM's log lines must not reach stdout
    lane = "cuda" if torch.cuda.is_available() else "cpu"
    assert facts["versions"]["torch"] and facts["lane"] == lane and facts["ok"] is True
    checks = {check["name"]: check for check in facts["checks"]}
    assert checks["dynamo backend"]["ok"] is True
    assert checks[f"graph capture on {lane}"]["ok"] is True
    if HAS_VLLM_CPU:  # the CPU lane: the plugin names, and vLLM activates, ascend_graph's CPU platform
        assert "AscendGraphCpuPlatform" in checks["vLLM platform plugin"]["detail"]
        assert checks["vLLM platform"]["ok"] is True
        assert "AscendGraphCpuPlatform" in checks["vLLM platform"]["detail"]
    else:  # the GPU lane has no vLLM: nothing to activate, nothing failed
        assert checks["vLLM platform"]["ok"] is None


@pytest.mark.skipif(not HAS_VLLM_CPU, reason="needs vllm-cpu (the CPU lane)")
def test_doctor_fails_when_vllm_would_not_activate_the_plugin() -> None:
    done = _doctor(VLLM_PLUGINS="")  # an allow-list without ascend_graph: vLLM picks its own CPU platform
    assert done.returncode == 1, done.stdout
    assert "FAIL] vLLM platform: vLLM would activate vllm.platforms.cpu.CpuPlatform" in done.stdout
    assert "some checks FAILED" in done.stdout


def test_inspect_prints_sizes_memory_passes_and_verification(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--capture-sizes", "2,4", "--verify", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    (graph,) = result["graphs"]
    assert [row["size"] for row in graph["captured"]] == [2, 4]
    assert all(row["static_bytes"] > 0 for row in graph["captured"])
    assert graph["passes"] == "none" or isinstance(graph["passes"], list)
    assert graph["fallbacks"] == [] and all(r["ok"] for r in graph["verify"]["results"])
    assert result["counters"]["captures"] == 2 and result["counters"]["verified_sizes"] == 2
    assert main(["inspect", "--capture-sizes", "2,4"]) == 0
    text = capsys.readouterr().out
    assert "passes applied:" in text and "static KiB" in text and "fallbacks: none" in text


@pytest.mark.parametrize("sizes", ["1,x", "", "0,2", "2,-4"])
def test_inspect_refuses_bad_capture_sizes_with_a_usage_error(capsys: pytest.CaptureFixture[str], sizes: str) -> None:
    """A bad --capture-sizes ends with argparse's usage error (exit status 2) naming the value and the expected
    form, not a traceback (at 9a9c1a4: ValueError from int('x'))."""
    from ascend_graph.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "--capture-sizes", sizes])
    assert exit_info.value.code == 2
    assert f"--capture-sizes {sizes!r}: expected positive integers separated by commas" in capsys.readouterr().err
