"""The `ascend_graph` section of vLLM's `--additional-config`, parsed once into one typed, frozen object.

Opt-in: ascend_graph changes nothing in vLLM unless the user writes an `ascend_graph` section (`{}` takes every
default). Without one the platform behaves as the host platform it extends (`AscendGraphOptions.enabled` False).

The platform hook (`check_and_update_config`) parses the section, resolves what depends on the host (the mode from
vLLM's async scheduling, the lowering from the platform) and writes the resolved section back
(`AscendGraphOptions.section()`), so that the worker and runner processes, which receive the config pickled, read
the same options with `options_of(vllm_config)`: one parser, no defaults decided twice.

No torch or vLLM import at module level: vLLM reads the platform plugin (and so this module) at start-up.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

SECTION = "ascend_graph"


class Mode(enum.StrEnum):
    """The step structure. SYNC: vLLM's steps without async scheduling (prepare, replay, wait, read tokens).
    FORWARD_ASYNC: with vLLM's async scheduling, the host prepares step N+1 while step N runs and sampled tokens stay
    on the device."""

    SYNC = "sync"
    FORWARD_ASYNC = "forward-async"


class Lowering(enum.StrEnum):
    """What runs inside each captured piece: vLLM's inductor, the traced ATen ops, or the host platform's compiler."""

    INDUCTOR = "inductor"
    ATEN = "aten"
    HOST = "host"


class GraphRunner(enum.StrEnum):
    """Who captures and replays: ascend_graph's own wrapper and runner, or the host's (vLLM's CUDAGraphWrapper)."""

    ASCEND_GRAPH = "ascend_graph"
    VLLM = "vllm"


def _choices(kind: type[enum.StrEnum]) -> tuple[str, ...]:
    return tuple(member.value for member in kind)


@dataclasses.dataclass(frozen=True)
class AscendGraphOptions:
    """`enabled`: the user wrote an `ascend_graph` section. `mode` None: follow vLLM's async scheduling (resolved by
    the platform, `resolve_mode`). `lowering` None: the platform's default (`platform_default_lowering`). `passes`:
    ascend_graph fusion passes run on every piece vLLM compiles ("all" in the section names every pass). `verify`
    (or ASCEND_GRAPH_VERIFY=1, `verify_requested`): every graph ascend_graph captures is replayed once against the
    same computation run eagerly; one that disagrees runs eagerly, logged. `decode_steps` (default 1): when every
    request of a batch decodes, run that many decode steps per host round trip (CPU lane: mode "sync" and mode
    "forward-async"; CUDA: mode "sync", without vLLM's async scheduling; vllm_plugin/multistep.py,
    docs/multistep.md)."""

    enabled: bool = False
    mode: Mode | None = None
    lowering: Lowering | None = None
    debug: bool = False
    passes: tuple[str, ...] = ()
    graph_runner: GraphRunner = GraphRunner.ASCEND_GRAPH
    verify: bool = False
    decode_steps: int = 1

    def __post_init__(self) -> None:
        for name, kind in (("mode", Mode), ("lowering", Lowering), ("graph_runner", GraphRunner)):
            value = getattr(self, name)
            if value is None and name != "graph_runner":
                continue
            if value not in _choices(kind):
                raise ValueError(
                    f"additional_config.{SECTION}.{name}={value!r} is not allowed; allowed values are {_choices(kind)}"
                )
            object.__setattr__(self, name, kind(value))
        for name in ("debug", "verify"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"additional_config.{SECTION}.{name}={getattr(self, name)!r} is not allowed; allowed values are "
                    "(True, False)"
                )
        steps = self.decode_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(
                f"additional_config.{SECTION}.decode_steps={steps!r} is not allowed; allowed values are integers >= 1"
            )

    @classmethod
    def parse(cls, additional_config: Mapping[str, Any] | None) -> AscendGraphOptions:
        """`additional_config` -> options; an unknown key or value raises a ValueError naming the allowed ones."""
        if not additional_config or SECTION not in additional_config:
            return cls()
        section = additional_config[SECTION]
        if section is None:
            section = {}
        if not isinstance(section, Mapping):
            raise ValueError(f"additional_config.{SECTION} must be a mapping of options, not {section!r}")
        allowed = [field.name for field in dataclasses.fields(cls) if field.name != "enabled"]
        unknown = sorted(set(section) - set(allowed))
        if unknown:
            raise ValueError(
                f"additional_config.{SECTION}: unknown key(s) {unknown}; allowed keys are {sorted(allowed)}"
            )
        values = dict(section)
        if "passes" in values:
            values["passes"] = _pass_names(values["passes"])
        return cls(enabled=True, **values)

    def section(self) -> dict[str, Any]:
        """The resolved options as an `additional_config` section (plain strings, JSON-serialisable)."""
        return {
            "mode": None if self.mode is None else str(self.mode),
            "lowering": None if self.lowering is None else str(self.lowering),
            "debug": self.debug,
            "passes": list(self.passes),
            "graph_runner": str(self.graph_runner),
            "verify": self.verify,
            "decode_steps": self.decode_steps,
        }

    def replace(self, **changes: Any) -> AscendGraphOptions:
        return dataclasses.replace(self, **changes)

    @property
    def forward_async(self) -> bool:
        return self.mode == Mode.FORWARD_ASYNC

    @property
    def own_runner(self) -> bool:
        """ascend_graph captures and replays the graphs itself (else the host's runner does; it only compiles)."""
        return self.graph_runner == GraphRunner.ASCEND_GRAPH

    @property
    def verify_requested(self) -> bool:
        """`verify` in the options or ASCEND_GRAPH_VERIFY=1 in the environment (as for the standalone backend)."""
        from ascend_graph.config import env_flags

        return self.verify or env_flags()["verify"]


def _pass_names(passes: Any) -> tuple[str, ...]:
    from ascend_graph.passes import PASS_NAMES, check_pass_names

    chosen = PASS_NAMES if passes == "all" else passes
    return tuple(check_pass_names(chosen, where=f"additional_config.{SECTION}.passes"))


def options_of(vllm_config: Any) -> AscendGraphOptions:
    """The options of this vLLM config (as resolved by the platform hook when it ran on it)."""
    return AscendGraphOptions.parse(getattr(vllm_config, "additional_config", None))


def write_back(vllm_config: Any, options: AscendGraphOptions) -> AscendGraphOptions:
    """Store the resolved options in the config's own section, which every process of vLLM receives."""
    vllm_config.additional_config[SECTION] = options.section()
    return options


def platform_attribute(platform: Any, name: str, default: Any) -> Any:
    """`name` of the active vLLM platform, or `default` when its class has none. Read from the class: vLLM's
    `Platform.__getattr__` answers a missing instance attribute with None and a warning ("Current platform cpu
    does not have '...' attribute"), never with the default a plain getattr asks for."""
    return getattr(type(platform), name, default)


def platform_default_lowering(platform: Any) -> Lowering:
    """The lowering used when the user names none: the platform's `ascend_graph_default_lowering` ("host" on
    Ascend), else "inductor"."""
    return Lowering(platform_attribute(platform, "ascend_graph_default_lowering", Lowering.INDUCTOR))


def resolve_mode(options: AscendGraphOptions, async_scheduling: bool) -> AscendGraphOptions:
    """The mode the user named, checked against vLLM's async scheduling (which ascend_graph never changes on the
    hosts where vLLM decides it: CUDA, Ascend), or, unnamed, the one that setting implies. A contradiction raises a
    ValueError naming both settings and the ways out."""
    implied = Mode.FORWARD_ASYNC if async_scheduling else Mode.SYNC
    if options.mode is None:
        return options.replace(mode=implied)
    if options.mode != implied:
        state = "on" if async_scheduling else "off"
        needs = "with" if options.forward_async else "without"
        flag = (
            "--async-scheduling (async_scheduling=True)"
            if options.forward_async
            else ("--no-async-scheduling (async_scheduling=False)")
        )
        raise ValueError(
            f"additional_config.{SECTION}.mode={str(options.mode)!r} runs {needs} vLLM's async scheduling, which is "
            f"{state} here (vLLM's default for this configuration, or the flag given): pass {flag}, or leave "
            f"{SECTION}.mode unset to follow vLLM's setting"
        )
    return options
