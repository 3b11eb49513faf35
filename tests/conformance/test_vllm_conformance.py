"""ascend_graph's uses of vLLM, checked against the sources of every pinned vLLM (no vLLM imported, no GPU).

The sdists are downloaded by `./dev test` (`python -m ascend_graph.conformance fetch`); where they are missing the
fixture tries the download itself and fails, never skips, when that does not work: CI has the package index.
The whole check over four versions takes ~35 s on the 2-core CI machine: those tests are marked slow and share
one run. docs/vllm-conformance.md holds the tables.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ascend_graph.conformance.__main__ import declared_failures, vllm_document
from ascend_graph.conformance.check import FAIL, OK, Row, run_check
from ascend_graph.conformance.fetch import fetch, sha256_of, unpacked
from ascend_graph.conformance.pins import VLLMS, Pin
from ascend_graph.conformance.reference import Reference
from ascend_graph.conformance.uses import VLLM_ROOTS
from ascend_graph.conformance.vllm_target import (
    CHECKED_LANES,
    LANE_BASELINE,
    VersionResult,
    check_versions,
    load_vllm_reference,
)
from ascend_graph.errors import ConformanceSourcesError
from ascend_graph.vllm_plugin.versions import SUPPORTED, in_range

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "vllm-conformance.md"
V2_RUNNER = "vllm.v1.worker.gpu.model_runner.GPUModelRunner"
CPU_RUNNER = "vllm.v1.worker.cpu_model_runner.CPUModelRunner"
MANAGER = "vllm.v1.worker.gpu.cudagraph_utils.CudaGraphManager"


def _sources(pins: tuple[Pin, ...]) -> list[Path]:
    try:
        try:
            return [unpacked(pin) for pin in pins]
        except ConformanceSourcesError:
            fetch(pins=pins)
            return [unpacked(pin) for pin in pins]
    except ConformanceSourcesError as error:
        pytest.fail(f"vLLM conformance sources unavailable: {error}", pytrace=False)


@pytest.fixture(scope="module")
def references() -> dict[str, Reference]:
    return {pin.version: load_vllm_reference(folder) for pin, folder in zip(VLLMS, _sources(VLLMS), strict=True)}


@pytest.fixture(scope="module")
def results(references: dict[str, Reference]) -> dict[str, VersionResult]:
    return {result.version: result for result in check_versions(references, ROOT)}


def _row(result: VersionResult, kind: str, name: str) -> Row:
    found = [row for row in result.rows if (row.kind, row.name) == (kind, name)]
    assert found, f"no {kind} row {name} in vLLM {result.version}"
    return found[0]


def test_the_pinned_sdists_are_the_ones_read(references: dict[str, Reference]) -> None:
    for pin in VLLMS:
        archive = unpacked(pin).parent / pin.filename
        if archive.is_file():  # unpacked() checked the marker; the archive may have been cleaned away since
            assert sha256_of(archive) == pin.sha256
        assert references[pin.version].distributions == {"vllm": pin.version}


@pytest.mark.slow
def test_every_declared_version_passes_for_its_lane(results: dict[str, VersionResult]) -> None:
    """SUPPORTED declares per lane only what the check passes, and contains the version the lane runs."""
    assert not declared_failures(list(results.values())), declared_failures(list(results.values()))
    for lane in CHECKED_LANES:
        assert in_range(lane, LANE_BASELINE[lane]), f"{lane} lane runs vLLM {LANE_BASELINE[lane]}, not declared"
        checked = [version for version in results if in_range(lane, version)]
        assert checked, f"{lane} lane declares {SUPPORTED[lane]}, and no pinned vLLM in it is checked"


@pytest.mark.slow
def test_what_the_review_found_is_reported(results: dict[str, VersionResult]) -> None:
    """The vLLM maintainer's review (issue 24): on CUDA at 0.32 the capture loop replaced; on the CPU lane at 0.26
    `_bookkeeping_sync` returns 7 values where the runner unpacks 8, and `_prepare_padding_mask` does not exist."""
    at_032, at_026 = results["0.32.0"], results["0.26.0"]
    replaced = _row(at_032, "replaces", f"{MANAGER}.capture")
    assert "_max_full_descs_to_capture" in replaced.problems[0] and "_capture_mem_samples" in replaced.problems[0]
    assert not at_032.passes("cuda") and at_032.passes("cpu")
    assert "unpacks 8 values" in _row(at_026, "call", f"{CPU_RUNNER}()._bookkeeping_sync").problems[0]
    assert "no '_prepare_padding_mask'" in _row(at_026, "call", f"{CPU_RUNNER}()._prepare_padding_mask").problems[0]
    assert at_026.passes("cuda") and not at_026.passes("cpu")
    # fixed: the override accepts the worker's and the memory profiler's calls (3 call sites in 0.32 are read)
    kv_cache = _row(at_032, "override", f"{V2_RUNNER}.initialize_kv_cache")
    assert kv_cache.status == OK and "call(s) in vllm 0.32.0 checked" in kv_cache.detail


@pytest.mark.slow
def test_the_docs_table_is_current(results: dict[str, VersionResult], references: dict[str, Reference]) -> None:
    assert DOC.read_text() == vllm_document(list(results.values()), references), (
        "docs/vllm-conformance.md is out of date: python -m ascend_graph.conformance vllm --markdown "
        "docs/vllm-conformance.md"
    )


PLANTED = """
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner
    from vllm.v1.worker.gpu.cudagraph_utils import CudaGraphManager
    from vllm.v1.worker.gpu.model_runner import GPUModelRunner
    from vllm.v1.worker.utils import bind_kv_cache


    class Runner(GPUModelRunner):
        def initialize_kv_cache(self, kv_cache_config):  # vLLM 0.32 passes is_profiling= too
            super().initialize_kv_cache(kv_cache_config)
            return self.input_buffers, self.no_such_buffers


    class CpuRunner(CPUModelRunner):
        def step(self, scheduler_output, sampler_output, logits, hidden_states, counts):
            a, b, c = self._bookkeeping_sync(scheduler_output, sampler_output, logits, hidden_states, counts)
            bind_kv_cache(kv_caches={}, forward_context={}, runner_kv_cahces=[])
            return a, b, c


    class Loop(CudaGraphManager):
        def capture(self, create_forward_fn, progress_bar_desc=""):  # replaces vLLM's, calls no super()
            pass
"""


def test_a_planted_misuse_is_reported(references: dict[str, Reference], tmp_path: Path) -> None:
    package = tmp_path / "ascend_graph"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "planted.py").write_text(textwrap.dedent(PLANTED))
    reference = references["0.32.0"]
    rows = {(row.kind, row.name): row for row in run_check(reference, tmp_path, VLLM_ROOTS)}
    problems = {key: " ".join(row.problems) for key, row in rows.items() if row.status == FAIL}

    override = problems["override", f"{V2_RUNNER}.initialize_kv_cache"]
    assert "the base accepts is_profiling=...; this does not" in override
    assert "vllm/v1/worker/gpu/cudagraph_utils.py:1013" in override and "vllm/v1/worker/gpu_worker.py:894" in override
    assert "has no 'no_such_buffers'" in problems["attribute", f"{V2_RUNNER}().no_such_buffers"]
    assert rows["attribute", f"{V2_RUNNER}().input_buffers"].status == OK
    assert "unpacks 3 values" in problems["call", f"{CPU_RUNNER}()._bookkeeping_sync"]  # it returns 8 in 0.32
    misspelt = problems["call", "vllm.v1.worker.utils.bind_kv_cache"]  # a wrong keyword
    assert "runner_kv_cahces=_" in misspelt and "missing a required argument: 'runner_kv_caches'" in misspelt
    assert len(problems) == 4, sorted(problems)

    results = check_versions({v: references[v] for v in ("0.26.0", "0.32.0")}, tmp_path)
    replaced = _row(results[1], "replaces", f"{MANAGER}.capture")
    assert "cuda lane: vLLM 0.32.0 changed the body this replaces" in replaced.problems[0]
    # the planted file is shared by every lane: at 0.26 it matches the CUDA lane's vLLM, not the CPU lane's 0.32
    at_026 = _row(results[0], "replaces", f"{MANAGER}.capture").problems
    assert len(at_026) == 1 and at_026[0].startswith("cpu lane: vLLM 0.26.0 changed the body")
