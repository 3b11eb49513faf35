"""The decode-step profiler's configurations, plan and incremental record (bench/profile_plan.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ascend_graph.passes import PASS_NAMES

from bench.profile_plan import Record, interleaved_plan, named_configs, parse_configs, split_specs

TABLE = named_configs(PASS_NAMES)


def test_named_configs_have_a_row_per_pass_and_ag_noopts_has_no_options() -> None:
    assert {f"ag-fa-pass-{name}" for name in PASS_NAMES} <= set(TABLE)
    assert TABLE["ag-fa-pass-silu_and_mul"].llm_args["additional_config"]["ascend_graph"]["passes"] == ["silu_and_mul"]
    assert TABLE["ag-noopts"].with_ag and TABLE["ag-noopts"].llm_args == {}
    assert not TABLE["stock"].with_ag and TABLE["stock"].llm_args == {}
    assert [TABLE[n].plugin_expected() for n in ("stock", "ag-noopts", "ag-forward-async")] == [False, None, True]


def test_decode_steps_configs_run_sync_without_async_scheduling() -> None:
    """ag-sync-k4 / -k8 (issue 25): the options the CUDA platform accepts for decode_steps > 1 (mode "sync" with
    vLLM's async scheduling off, as the user passes it), checked by the project's own parser; ag-sync is K = 1."""
    from ascend_graph.vllm_plugin.options import AscendGraphOptions

    for name, steps in (("ag-sync", 1), ("ag-sync-k4", 4), ("ag-sync-k8", 8)):
        args = TABLE[name].llm_args
        options = AscendGraphOptions.parse(args["additional_config"])
        assert (options.mode, options.decode_steps, args["async_scheduling"]) == ("sync", steps, False), name


def test_decode_steps_configs_with_async_scheduling_run_forward_async() -> None:
    """ag-fa-k4 / -k8: decode_steps > 1 over vLLM's async scheduling (left at vLLM's default), mode forward-async."""
    from ascend_graph.vllm_plugin.options import AscendGraphOptions

    for name, steps in (("ag-forward-async", 1), ("ag-fa-k4", 4), ("ag-fa-k8", 8)):
        args = TABLE[name].llm_args
        options = AscendGraphOptions.parse(args["additional_config"])
        assert (options.mode, options.decode_steps, "async_scheduling" in args) == ("forward-async", steps, False), name


def test_split_specs_keeps_json_commas_inside_braces() -> None:
    text = 'stock, fa4=ag:{"mode": "forward-async", "passes": ["a", "b"]},ag-sync'
    assert split_specs(text) == ["stock", 'fa4=ag:{"mode": "forward-async", "passes": ["a", "b"]}', "ag-sync"]
    with pytest.raises(ValueError, match="unbalanced"):
        split_specs('ag:{"mode": 1')
    with pytest.raises(ValueError, match="unbalanced"):
        split_specs("a}")


def test_ad_hoc_configs_name_themselves_or_take_the_given_name() -> None:
    text = 'stock,ag:{"mode":"forward-async","decode_steps":4},k8=ag:{"decode_steps": 8},'
    configs = parse_configs(text + 'na=stock:{"async_scheduling":false}', TABLE)
    assert [c.name for c in configs] == ["stock", 'ag:{"mode":"forward-async","decode_steps":4}', "k8", "na"]
    assert configs[1].with_ag and configs[1].llm_args == {
        "additional_config": {"ascend_graph": {"mode": "forward-async", "decode_steps": 4}}
    }
    assert not configs[3].with_ag and configs[3].llm_args == {"async_scheduling": False}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stock,ag-fast", "unknown configuration 'ag-fast'; allowed: .*ag-forward-async"),
        ("ag:{mode: 1}", "is not JSON"),
        ("ag:[1, 2]", "must be a JSON object"),
        ("stock,stock", "names a configuration twice"),
    ],
)
def test_bad_configs_are_refused_with_what_is_allowed(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_configs(text, TABLE)


def test_plan_interleaves_configurations_per_repeat_within_each_model() -> None:
    configs = parse_configs("stock,ag-noopts,ag-forward-async", TABLE)
    jobs = interleaved_plan(["qwen3-0.6b", "qwen3-8b"], configs, 2)
    assert [(j.model, j.config.name, j.repeat) for j in jobs[:6]] == [
        ("qwen3-0.6b", "stock", 0),
        ("qwen3-0.6b", "ag-noopts", 0),
        ("qwen3-0.6b", "ag-forward-async", 0),
        ("qwen3-0.6b", "stock", 1),
        ("qwen3-0.6b", "ag-noopts", 1),
        ("qwen3-0.6b", "ag-forward-async", 1),
    ]
    assert len(jobs) == 12 and {j.model for j in jobs[6:]} == {"qwen3-8b"}
    with pytest.raises(ValueError, match="unknown model shape"):
        interleaved_plan(["qwen3-70b"], configs, 1)
    with pytest.raises(ValueError, match="repeats=0"):
        interleaved_plan(["tiny"], configs, 0)


def test_record_is_on_disk_after_every_process(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    record = Record(path, {"environment": {"device": "x"}})
    assert json.loads(path.read_text())["processes"] == []
    record.add({"config": "stock"})
    record.add({"config": "ag-noopts"})
    assert [p["config"] for p in json.loads(path.read_text())["processes"]] == ["stock", "ag-noopts"]
    assert not list(tmp_path.glob("*.partial"))
