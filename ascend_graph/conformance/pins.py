"""The reference sources the Ascend conformance check reads, pinned by version and sha256.

- torch-npu 2.11.0, the x86-64 CPython 3.11 wheel: it cannot be imported without CANN, but its Python sources
  (torch_npu.npu, torchair and npugraph_ex under torch_npu/dynamo), its operator schema files and
  `_op_plugin_docs.py` are all in it. 2.11 is also the torch of the project's GPU lane.
- vllm-ascend 0.23.0.post1, the sdist (the only file of that release on the index): its newest release,
  the one whose `AscendCompiler` already compiles FULL graphs with npugraph_ex (vllm-ascend PR #9201). It pins
  torch-npu 2.10.0.post4 itself; its main branch targets vLLM 0.27.1 and has no release yet.

Both come from the package index through pip, each file's hash required (`--require-hashes`), into a folder git
ignores (`.cache/conformance/` in a checkout).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pin:
    distribution: str
    version: str
    filename: str
    sha256: str
    pip_args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    keep: tuple[str, ...] = ()  # which archive members to unpack: path prefixes

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version} --hash=sha256:{self.sha256}"

    @property
    def label(self) -> str:
        return f"{self.distribution} {self.version}"


TORCH_NPU = Pin(
    distribution="torch-npu",
    version="2.11.0",
    filename="torch_npu-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl",
    sha256="7c13c7ac30a9e51d2fea0268fd09d7600b2e787632a163e618712563943c24d8",
    # The wheel for this platform whatever interpreter runs the download; it is read, never installed.
    pip_args=(
        "--only-binary=:all:",
        "--platform",
        "manylinux_2_28_x86_64",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
    ),
    keep=("torch_npu/", "torch_npu-2.11.0.dist-info/METADATA"),
)

VLLM_ASCEND = Pin(
    distribution="vllm-ascend",
    version="0.23.0.post1",
    filename="vllm_ascend-0.23.0.post1.tar.gz",
    sha256="a3b9f4a5dd7aa50c37e03d1f35937c4ae5aeacc49b734cac74d59ce5757738e1",
    # pip prepares an sdist's metadata before saving it: vllm-ascend's setup.py wants setuptools-scm (a dev
    # dependency) and a chip name instead of asking npu-smi; without build isolation it installs nothing else.
    # The hash is checked before setup.py runs.
    pip_args=("--no-build-isolation",),
    env=(("SOC_VERSION", "ascend910b1"),),
    keep=("vllm_ascend-0.23.0.post1/vllm_ascend/", "vllm_ascend-0.23.0.post1/PKG-INFO"),
)

PINS = (TORCH_NPU, VLLM_ASCEND)
