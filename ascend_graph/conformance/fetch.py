"""Download the pinned reference archives with pip, check their sha256, unpack their Python sources.

`./dev test` runs `python -m ascend_graph.conformance fetch` after the set-up; the conformance tests call
`unpacked()` and fail, naming the command to run and pip's own message, when a file is missing or its hash
differs. Nothing here imports what it unpacks.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import ConformanceSourcesError
from .pins import BUILD_TOOLS, PINS, Pin

TEXT_SUFFIXES = (".py", ".yaml", "METADATA", "PKG-INFO")
PARALLEL_DOWNLOADS = 4
MARKER = ".unpacked-sha256"


def default_cache() -> Path:
    """`.cache/conformance/` at the top of the checkout (git ignores it)."""
    return Path(__file__).resolve().parents[2] / ".cache" / "conformance"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unpacked(pin: Pin, cache: Path | None = None) -> Path:
    """The folder holding `pin`'s unpacked sources; raises ConformanceSourcesError if it is not there."""
    folder = (cache or default_cache()) / f"{pin.distribution}-{pin.version}"
    marker = folder / MARKER
    if not marker.is_file() or marker.read_text().strip() != pin.sha256:
        raise ConformanceSourcesError(
            f"the conformance check needs {pin.label} ({pin.filename}, sha256 {pin.sha256}) unpacked in "
            f"{folder}; run `./dev test` or `python -m ascend_graph.conformance fetch` (needs the package index)"
        )
    return folder


def fetch(
    cache: Path | None = None, log: Callable[[str], None] = print, pins: tuple[Pin, ...] = PINS
) -> dict[str, Path]:
    """Download (when absent or wrong), verify and unpack every pin; returns its label -> folder. Downloads run
    side by side: pip mostly waits on the index and on an sdist's metadata step."""
    cache = cache or default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    missing = [pin for pin in pins if not _is_unpacked(pin, cache)]
    wanted = [pin for pin in missing if not _archive_ok(pin, cache)]
    if any(pin.build_tools for pin in wanted):
        _build_tools(cache)  # once, before the downloads that use it
    for pin in wanted:
        log(f"ascend_graph conformance: downloading {pin.label} ({pin.filename})")
    with ThreadPoolExecutor(max_workers=PARALLEL_DOWNLOADS) as pool:
        for future in [pool.submit(_download, pin, cache) for pin in wanted]:
            future.result()  # the first error raised, with pip's message
    for pin in missing:
        log(f"ascend_graph conformance: unpacking {pin.label} ({pin.filename})")
        _unpack(pin, cache / pin.filename, cache)
    return {pin.label: unpacked(pin, cache) for pin in pins}


def _is_unpacked(pin: Pin, cache: Path) -> bool:
    try:
        unpacked(pin, cache)
    except ConformanceSourcesError:
        return False
    return True


def _archive_ok(pin: Pin, cache: Path) -> bool:
    archive = cache / pin.filename
    return archive.is_file() and sha256_of(archive) == pin.sha256


def _build_tools(cache: Path) -> Path:
    """A folder holding BUILD_TOOLS (pip install --target), for PYTHONPATH while an sdist's metadata is made."""
    folder = cache / "build-tools"
    stamp = folder / ".installed"
    if stamp.is_file() and stamp.read_text().split() == list(BUILD_TOOLS):
        return folder
    command = [sys.executable, "-m", "pip", "install", "-q", "--upgrade", "--target", str(folder), *BUILD_TOOLS]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-12:])
        raise ConformanceSourcesError(f"pip could not install {' '.join(BUILD_TOOLS)} into {folder}:\n{tail}")
    stamp.write_text(" ".join(BUILD_TOOLS) + "\n")
    return folder


def _download(pin: Pin, cache: Path) -> None:
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        requirements = Path(scratch) / "requirements.txt"
        requirements.write_text(pin.requirement + "\n")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "-r", str(requirements)]
        command += ["-d", scratch, *pin.pip_args]
        env = {**os.environ, **dict(pin.env)}
        if pin.build_tools:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_build_tools(cache)), env.get("PYTHONPATH")]))
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        downloaded = Path(scratch) / pin.filename
        if result.returncode != 0 or not downloaded.is_file():
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-12:])
            raise ConformanceSourcesError(f"pip could not download {pin.label} ({pin.filename}):\n{tail}")
        if sha256_of(downloaded) != pin.sha256:  # pip checked it too; this guards the pin table itself
            raise ConformanceSourcesError(f"{pin.filename}: sha256 differs from the pin {pin.sha256}")
        downloaded.replace(cache / pin.filename)


def _wanted(name: str, pin: Pin) -> bool:
    return any(name.startswith(prefix) for prefix in pin.keep) and name.endswith(TEXT_SUFFIXES)


def _unpack(pin: Pin, archive: Path, cache: Path) -> Path:
    folder = cache / f"{pin.distribution}-{pin.version}"
    if folder.exists():
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    folder.mkdir(parents=True, exist_ok=True)
    if archive.name.endswith(".whl"):
        with zipfile.ZipFile(archive) as wheel:
            for name in wheel.namelist():
                if _wanted(name, pin):
                    _write(folder, name, wheel.read(name))
    else:
        top = f"{pin.distribution.replace('-', '_')}-{pin.version}/"
        with tarfile.open(archive, "r:gz") as sdist:
            for member in sdist.getmembers():
                if member.isfile() and _wanted(member.name, pin):
                    stream = sdist.extractfile(member)
                    assert stream is not None
                    _write(folder, member.name.removeprefix(top), stream.read())
    (folder / MARKER).write_text(pin.sha256 + "\n")
    return folder


def _write(folder: Path, name: str, data: bytes) -> None:
    target = (folder / name).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise ConformanceSourcesError(f"archive member {name!r} would unpack outside {folder}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
