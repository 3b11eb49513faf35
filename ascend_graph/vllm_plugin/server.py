"""Start `ascend-graph serve` (vLLM's OpenAI server) as a child process on 127.0.0.1 and wait until it answers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(port: int, server: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"vLLM server exited with {server.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"vLLM server on port {port} not ready after {timeout_s} s")


def stop(server: subprocess.Popen) -> None:
    """SIGTERM (vLLM shuts down cleanly on it), then SIGKILL after a minute."""
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()


@contextlib.contextmanager
def served(
    model_dir: Path,
    server_args: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    timeout_s: float = 600,
    plugin: bool = True,
) -> Iterator[int]:
    """Serve `model_dir` as model "tiny" with `server_args`; yields the port; the log goes to `log_path`. With
    `plugin` False: vLLM's own server module with no plugin loaded (VLLM_PLUGINS names none), the stock baseline."""
    port = free_port()
    where = ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", "tiny", *server_args]
    if plugin:
        command = [sys.executable, "-m", "ascend_graph.cli", "serve", str(model_dir), *where]
    else:
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), *where]
        env = {**(env or {}), "VLLM_PLUGINS": "none"}
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        try:
            wait_ready(port, server, timeout_s)
            yield port
        finally:
            stop(server)
