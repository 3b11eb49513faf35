"""Configurations and the run plan of the decode-step profiler (bench/gpu_profile.py), and its incremental record.

A configuration is a name, whether ascend_graph is on the path of its process, and its `LLM()` arguments. Named
ones come from `named_configs()`; ad hoc ones are written on the command line:

    ag:{"mode": "forward-async", "decode_steps": 4}     ascend_graph with these additional_config options
    stock:{"async_scheduling": false}                   no plugin, these extra LLM() arguments
    NAME=ag:{...}                                       the same, with a short name for the tables

so a new option (issue 25's decode_steps) or a new pass (issue 26) is measured without an edit here. The plan runs
every configuration in its own process, repeats interleaved (stock, A, B, stock, A, B, ...) per model shape.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

MODELS = ("tiny", "qwen3-0.6b", "qwen3-8b")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One configuration: `with_ag` puts ascend_graph's installed copy on the process's path."""

    name: str
    with_ag: bool
    llm_args: dict[str, Any]

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("configuration name: must be non-empty")

    def plugin_expected(self) -> bool | None:
        """Whether ascend_graph's platform must be active: never without it on the path, always with options for
        it; installed without options either is right (a pass-through plugin may stay out)."""
        if not self.with_ag:
            return False
        return True if self.llm_args.get("additional_config", {}).get("ascend_graph") else None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "with_ag": self.with_ag, "llm_args": self.llm_args}


def _ag(options: dict[str, Any]) -> dict[str, Any]:
    return {"additional_config": {"ascend_graph": options}}


def named_configs(pass_names: tuple[str, ...]) -> dict[str, BenchConfig]:
    """The named configurations; per-pass rows `ag-fa-pass-<name>` for each of `pass_names` (PASS_NAMES)."""
    table = {
        "stock": BenchConfig("stock", False, {}),
        "stock-no-async": BenchConfig("stock-no-async", False, {"async_scheduling": False}),
        # installed, no options: must measure as stock (the plugin is a pass-through then)
        "ag-noopts": BenchConfig("ag-noopts", True, {}),
        "ag-sync": BenchConfig("ag-sync", True, {**_ag({"mode": "sync"}), "async_scheduling": False}),
        # issue 25: K decode steps per host round trip (mode "sync", vLLM's async scheduling off; K = 1 is ag-sync)
        **{
            f"ag-sync-k{k}": BenchConfig(
                f"ag-sync-k{k}", True, {**_ag({"mode": "sync", "decode_steps": k}), "async_scheduling": False}
            )
            for k in (4, 8)
        },
        "ag-forward-async": BenchConfig("ag-forward-async", True, _ag({"mode": "forward-async"})),
        # issue 25 with vLLM's async scheduling on (its default): bursts composed with forward-async
        **{
            f"ag-fa-k{k}": BenchConfig(f"ag-fa-k{k}", True, _ag({"mode": "forward-async", "decode_steps": k}))
            for k in (4, 8)
        },
        "ag-fa-passes-all": BenchConfig("ag-fa-passes-all", True, _ag({"mode": "forward-async", "passes": "all"})),
    }
    for name in pass_names:
        config = BenchConfig(f"ag-fa-pass-{name}", True, _ag({"mode": "forward-async", "passes": [name]}))
        table[config.name] = config
    return table


def split_specs(text: str) -> list[str]:
    """Split a --configs value at the commas outside braces and brackets (JSON configs hold commas)."""
    specs, depth, current = [], 0, []
    for char in text:
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"--configs {text!r}: unbalanced '{char}'")
        if char == "," and depth == 0:
            specs.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if depth:
        raise ValueError(f"--configs {text!r}: unbalanced braces")
    specs.append("".join(current).strip())
    return [spec for spec in specs if spec]


def _ad_hoc(spec: str) -> BenchConfig:
    """`[NAME=]ag:{json}` or `[NAME=]stock:{json}`."""
    name, _, body = spec.partition("=") if "=" in spec.split(":", 1)[0] else ("", "", spec)
    kind, _, payload = body.partition(":")
    try:
        options = json.loads(payload)
    except json.JSONDecodeError as error:
        raise ValueError(f"configuration {spec!r}: the part after '{kind}:' is not JSON ({error})") from None
    if not isinstance(options, dict):
        raise ValueError(f"configuration {spec!r}: the part after '{kind}:' must be a JSON object")
    default_name = f"{kind}:{json.dumps(options, separators=(',', ':'))}"
    if kind == "ag":
        return BenchConfig(name or default_name, True, _ag(options))
    return BenchConfig(name or default_name, False, options)


def parse_configs(text: str, table: dict[str, BenchConfig]) -> list[BenchConfig]:
    """The --configs value: names from `table` or ad hoc `ag:{...}` / `stock:{...}`; unknown ones raise."""
    configs = []
    for spec in split_specs(text):
        body = spec.split("=", 1)[1] if "=" in spec.split(":", 1)[0] else spec
        if body.startswith(("ag:", "stock:")):
            configs.append(_ad_hoc(spec))
        elif spec in table:
            configs.append(table[spec])
        else:
            raise ValueError(
                f"unknown configuration {spec!r}; allowed: {sorted(table)}, or ad hoc [NAME=]ag:{{json options}} "
                "or [NAME=]stock:{json LLM() arguments}"
            )
    names = [config.name for config in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"--configs names a configuration twice: {names}")
    return configs


@dataclasses.dataclass(frozen=True)
class Job:
    """One process: one model shape, one configuration, one repeat."""

    model: str
    config: BenchConfig
    repeat: int


def interleaved_plan(models: list[str], configs: list[BenchConfig], repeats: int) -> list[Job]:
    """Per model: repeat 0 of every configuration, then repeat 1 of every one, ... (host drift hits all alike)."""
    unknown = [model for model in models if model not in MODELS]
    if unknown:
        raise ValueError(f"unknown model shape(s) {unknown}; allowed: {list(MODELS)}")
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: at least 1")
    return [Job(model, config, repeat) for model in models for repeat in range(repeats) for config in configs]


class Record:
    """The run's JSON, rewritten whole after every process (atomically), so a killed run keeps what finished."""

    def __init__(self, path: Path | None, header: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {**header, "processes": []}
        self.save()

    def add(self, entry: dict[str, Any]) -> None:
        self.data["processes"].append(entry)
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(self.data, indent=1))
        os.replace(partial, self.path)
