"""ascend_graph's calls into torch_npu and vllm-ascend, checked against their pinned sources (no NPU needed).

The sources are downloaded by `./dev test` (`python -m ascend_graph.conformance fetch`); where they are missing the
fixture tries the download itself and fails, never skips, when that does not work: CI has the package index.
Run with `-rP` to see the table of checked names; docs/ascend-conformance.md holds the same table.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ascend_graph.conformance.__main__ import ascend_document
from ascend_graph.conformance.check import FAIL, markdown_table, run_check
from ascend_graph.conformance.fetch import fetch, sha256_of, unpacked
from ascend_graph.conformance.pins import PINS, TORCH_NPU, TORCH_NPU_NEWEST, TORCH_NPUS, VLLM_ASCEND, Pin
from ascend_graph.conformance.reference import Reference, load_reference
from ascend_graph.errors import ConformanceSourcesError

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ascend-conformance.md"

# Names the check must find in today's code (the gatherer finding nothing would pass silently otherwise).
EXPECTED = {
    "torch.npu.NPUGraph",
    "torch.npu.NPUGraph().replay",
    "torch.npu.graph",
    "torch.npu.graph_pool_handle",
    "torch.npu.Stream",
    "torch.npu.Stream.wait_event",
    "torch.npu.Event",
    "torch.npu.Event.record",
    "torch.npu.stream",
    "torch.npu.synchronize",
    "torch_npu.npu_rms_norm",
    "torch_npu.npu_add_rms_norm",
    "torch_npu.npu_rotary_mul",
    "torch_npu.npu_apply_rotary_pos_emb",
    "torch_npu.npu_swiglu",
    "npugraph_ex.get_npu_backend",
    "npugraph_ex.CompilerConfig().force_eager",
    "torchair.CompilerConfig().mode",
    "vllm_ascend.platform.NPUPlatform",
    "vllm_ascend.platform.NPUPlatform.check_and_update_config",
    "vllm_ascend.platform.NPUPlatform.get_compile_backend",
    "vllm_ascend.compilation.compiler_interface.AscendCompiler().compile",
}


def _sources(pins: tuple[Pin, ...]) -> list[Path]:
    try:
        try:
            return [unpacked(pin) for pin in pins]
        except ConformanceSourcesError:
            fetch(pins=pins)
            return [unpacked(pin) for pin in pins]
    except ConformanceSourcesError as error:
        pytest.fail(f"conformance sources unavailable: {error}", pytrace=False)


@pytest.fixture(scope="module")
def references() -> list[Reference]:
    *torch_npus, vllm_ascend = _sources((*TORCH_NPUS, VLLM_ASCEND))
    return [load_reference(torch_npu, vllm_ascend) for torch_npu in torch_npus]


@pytest.fixture(scope="module")
def reference(references: list[Reference]) -> Reference:
    return references[0]


def test_the_pinned_archives_are_the_ones_read(references: list[Reference]) -> None:
    for pin in PINS:
        archive = unpacked(pin).parent / pin.filename
        if archive.is_file():  # unpacked() checked the marker; the archive may have been cleaned away since
            assert sha256_of(archive) == pin.sha256
    assert [r.distributions for r in references] == [
        {"torch-npu": pin.version, "vllm-ascend": "0.23.0.post1"} for pin in (TORCH_NPU, TORCH_NPU_NEWEST)
    ]


@pytest.mark.parametrize("which", [0, 1], ids=[pin.version for pin in TORCH_NPUS])
def test_every_ascend_name_ascend_graph_uses_exists_and_fits(references: list[Reference], which: int) -> None:
    reference = references[which]
    rows = run_check(reference, ROOT)
    print("\n" + markdown_table(rows, reference))
    failed = [f"{row.name}: {'; '.join(row.problems)}" for row in rows if row.status == FAIL]
    assert not failed, f"Ascend conformance failures against {reference.label}:\n" + "\n".join(failed)
    missing = EXPECTED - {row.name for row in rows}
    assert not missing, f"the check no longer finds these uses: {sorted(missing)}"


def test_the_docs_table_is_current(references: list[Reference]) -> None:
    wanted = ascend_document(references, [run_check(reference, ROOT) for reference in references])
    assert DOC.read_text() == wanted, (
        "docs/ascend-conformance.md is out of date: python -m ascend_graph.conformance --markdown "
        "docs/ascend-conformance.md"
    )


PLANTED = """
    from types import ModuleType
    from typing import Annotated

    import torch
    import torch_npu
    import npugraph_ex
    from vllm_ascend.platform import NPUPlatform
    from vllm_ascend.worker.worker import NPUWorker


    def fused(x, w):
        y = torch_npu.npu_rms_norm(x, w, eps=1e-6)[0]
        z = torch_npu.npu_fused_magic(x)
        total, rstd = torch_npu.npu_add_rms_norm(x, x, w, 1e-6)
        graph = torch.npu.NPUGraph()
        with torch.npu.graph(graph, memory_pool=None):
            pass
        graph.replay_async()  # NPUGraph's C-extension base may define it: unverified, not failed
        pool = torch.npu.graph_pool_handel()
        config = npugraph_ex.CompilerConfig()
        config.force_eager = "yes"
        config.no_such_option = True
        return y, z, total, rstd, pool


    class Platform(NPUPlatform):
        def check_and_update_config(self, vllm_config, extra):
            super().check_and_update_config(vllm_config, extra)


    class Before:
        def init_device(self, extra):  # before the base in the MRO: it overrides NPUWorker.init_device
            pass


    class After:
        def load_model(self, any, signature):  # after the base: it overrides what NPUWorker inherits, not NPUWorker's
            pass


    class Worker(Before, NPUWorker, After):
        pass


    class Device:  # a device module chosen at run time, named for the check by its annotation's metadata
        api: Annotated[ModuleType, "torch.npu"]

        def new_stream(self):
            return self.api.Streem()
"""


def test_a_planted_misuse_is_reported(reference: Reference, tmp_path: Path) -> None:
    package = tmp_path / "ascend_graph"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "planted.py").write_text(textwrap.dedent(PLANTED))
    rows = {(row.kind, row.name): row for row in run_check(reference, tmp_path)}
    problems = {name: " ".join(row.problems) for (_, name), row in rows.items() if row.status == FAIL}

    assert "unexpected keyword argument 'eps'" in problems["torch_npu.npu_rms_norm"]  # a wrong keyword
    assert "torch_npu has no 'npu_fused_magic'" in problems["torch_npu.npu_fused_magic"]  # a missing op
    assert "unpacks 2 results" in problems["torch_npu.npu_add_rms_norm"]  # it returns 3
    assert "unexpected keyword argument 'memory_pool'" in problems["torch.npu.graph"]
    assert "torch_npu.npu has no 'graph_pool_handel'" in problems["torch.npu.graph_pool_handel"]
    assert rows["call", "torch.npu.NPUGraph().replay_async"].status == "unverified"
    assert "force_eager='yes'; allowed: [True, False]" in problems["npugraph_ex.CompilerConfig().force_eager"]
    assert "has no option 'no_such_option'" in problems["npugraph_ex.CompilerConfig().no_such_option"]
    name = "vllm_ascend.platform.NPUPlatform.check_and_update_config"
    override, call = rows["override", name], rows["super() call", name]
    assert (
        "is a method; vllm_ascend.platform.NPUPlatform.check_and_update_config is a classmethod" in override.problems[0]
    )
    assert "too many positional arguments" in call.problems[0]  # the super() call passes one argument too many
    assert "requires 'extra'" in problems["vllm_ascend.worker.worker.NPUWorker.init_device"]  # a mixin before the base
    assert ("override", "vllm_ascend.worker.worker.NPUWorker.load_model") not in rows  # a mixin after it: not
    assert "torch_npu.npu has no 'Streem'" in problems["torch.npu.Streem"]
    assert sum(row.status == FAIL for row in rows.values()) == 11, sorted(problems)
    assert rows["call", "torch.npu.NPUGraph"].status == "ok"


def test_missing_sources_fail_with_the_command_to_run(tmp_path: Path) -> None:
    with pytest.raises(ConformanceSourcesError, match=r"python -m ascend_graph.conformance fetch"):
        unpacked(TORCH_NPU, tmp_path)
