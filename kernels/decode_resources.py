"""What the decode kernel (`kernels/decode_triton_kernel.py`) costs on a Hopper GPU, read off the compiler without
one: Triton compiles it for sm_90 here (its wheel carries ptxas and cuobjdump) with the specialisation its JIT
gives a real call (16-aligned pointers and sizes, one token a constant), and the cubin's resource report gives
registers, stack (spills) and shared memory; `hopper_k_loop` counts what a step of the compiled K loop does (loads
waited for or pipelined, layout conversions, reductions). That is how the block-size rules of
`kernels/decode_tuning.py` and its NORM_VARIANTS were checked, and how tests keep them free of spills and their
loads pipelined; it says nothing about time.

Seen this way (Triton 3.6, the H100 lane's, and 3.9, this machine's; bf16, sm_90): every load of the K loop is
software-pipelined through shared memory (cp.async, `LDGSTS` in the SASS; none without the 16-alignment
specialisation, which is why it is reproduced here), the products are mma.sync (`HMMA`, no wgmma at M <= 32), and
the plain GEMV takes 40-64 registers; f534d05's fused gate-up config at 32 tokens took 255 and spilled.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from .decode_triton_kernel import decode_linear_kernel
from .decode_tuning import DecodeConfig, GemvShape

HOPPER = GPUTarget("cuda", 90, 32)
_INTS = ("M", "N", "K", "x_stride", "res_stride", "w_stride", "add_stride", "up_offset")


@dataclass(frozen=True)
class Resources:
    """A compiled kernel's registers a thread, stack bytes a thread (spills) and shared memory bytes a program."""

    registers: int
    stack: int
    shared: int


def _signature(shape: GemvShape, flags: dict[str, bool], config: DecodeConfig, dtype: str) -> ASTSource:
    names = decode_linear_kernel.arg_names
    ints = dict(zip(_INTS, (shape.tokens, shape.n, shape.k, shape.k, shape.k, shape.k, shape.n, shape.n), strict=True))
    signature = {name: f"*{dtype}" if name.endswith("_ptr") else "i32" for name in names[:15]} | {"eps": "fp32"}
    constants: dict[str, object] = {
        **flags, "SQUARES_2D": config.squares_2d, "NW_TILE": config.nw_tile, "BLOCK_M": shape.block_m,
        "BLOCK_N": config.block_n, "BLOCK_K": min(config.block_k, shape.k),
    }  # fmt: skip
    if shape.tokens == 1:  # the JIT makes an int argument equal to 1 a constant
        constants["M"] = 1
    for name in constants:
        signature[name] = "constexpr"
    aligned = {
        (index,): [["tt.divisibility", 16]]
        for index, name in enumerate(names)
        if signature.get(name, "").startswith("*") or (signature.get(name) == "i32" and ints[name] % 16 == 0)
    }
    return ASTSource(decode_linear_kernel, signature, constants, aligned)


def hopper_resources(shape: GemvShape, flags: dict[str, bool], config: DecodeConfig, dtype: str = "bf16") -> Resources:
    """Compile the kernel for sm_90 with these compile-time `flags` (launch's NORM .. IEEE) and read its resources."""
    return _compiled_resources(_signature(shape, flags, config, dtype), config)


@dataclass(frozen=True)
class KLoop:
    """What one step of the compiled kernel's (first) K loop does, counted in its TTGIR (Triton's GPU IR):
    global loads waited for in the step (`tt.load`: not software-pipelined), loads pipelined through shared
    memory (cp.async), layout conversions, reductions (`tl.sum`)."""

    waited_loads: int
    pipelined_loads: int
    layout_conversions: int
    reductions: int


def hopper_k_loop(shape: GemvShape, flags: dict[str, bool], config: DecodeConfig, dtype: str = "bf16") -> KLoop:
    """Compile the kernel for sm_90 as `hopper_resources` does and count what the last K loop's step does (the
    exact norm's first pass is a loop of its own before the GEMV's)."""
    ttgir = _compile(_signature(shape, flags, config, dtype), config).asm["ttgir"]
    body = ttgir[ttgir.rindex("scf.for") :]
    body = body[: body.index("scf.yield")]
    return KLoop(
        len(re.findall(r"= tt\.load ", body)),
        len(re.findall(r"ttg\.async_copy_global_to_local", body)),
        len(re.findall(r"ttg\.convert_layout", body)),
        len(re.findall(r'"tt\.reduce"', body)),
    )


def qkv_rope_hopper_resources(
    tokens: int,
    hidden: int,
    half: int,
    flags: dict[str, bool],
    config: DecodeConfig,
    dtype: str = "bf16",
    split: bool = False,
) -> Resources:
    """The same for `rms_norm_qkv_rope_kernel` (kernels/decode_qkv_rope_triton.py), or with `split` its split-K
    variant (kernels/decode_qkv_rope_split.py; give its RESET in `flags`): `flags` are its STREAM_NORM ..
    IEEE (and STORE_KV, off unless given), `half` the half head dim; every size and stride is taken as a multiple of
    16 (they are at Qwen3's sites; the cache's strides and the slot count are not assumed so)."""
    if split:
        from .decode_qkv_rope_split import rms_norm_qkv_rope_split_kernel as kernel
    else:
        from .decode_qkv_rope_triton import rms_norm_qkv_rope_kernel as kernel

    names = kernel.arg_names
    values = [param.name for param in kernel.params if not param.is_constexpr]
    pointers = {"slot_ptr": "*i64", "ws_ptr": "*fp32", "count_ptr": "*i32"}
    signature = {name: pointers.get(name, f"*{dtype}") if name.endswith("_ptr") else "i32"
                 for name in values}  # fmt: skip
    signature |= {"eps": "fp32", "head_eps": "fp32"}
    block_m = max(16, 1 << max(tokens - 1, 0).bit_length())
    constants: dict[str, object] = {"STORE_KV": False, **flags, "BLOCK_M": block_m, "HALF": half,
                                    "BLOCK_K": min(config.block_k, hidden)}  # fmt: skip
    if tokens == 1:
        constants["M"] = 1
    for name in constants:
        signature[name] = "constexpr"
    sixteens = ("N", "K", "x_stride", "res_stride", "w_stride", "cos_stride", "sin_stride", "ws_head_stride", "CHUNK")
    aligned = {
        (index,): [["tt.divisibility", 16]]
        for index, name in enumerate(names)
        if signature.get(name, "").startswith("*") or name in sixteens
    }
    return _compiled_resources(ASTSource(kernel, signature, constants, aligned), config)


def _compile(source: ASTSource, config: DecodeConfig) -> Any:
    return triton.compile(source, target=HOPPER, options={"num_warps": config.num_warps,
                                                           "num_stages": config.num_stages})  # fmt: skip


def _compiled_resources(source: ASTSource, config: DecodeConfig) -> Resources:
    kernel = _compile(source, config)
    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        report = subprocess.run(
            [str(tools / "cuobjdump"), "--dump-resource-usage", str(cubin)], capture_output=True, text=True, check=True
        ).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", report)
    assert found is not None, report
    return Resources(int(found[1]), int(found[2]), kernel.metadata.shared)
