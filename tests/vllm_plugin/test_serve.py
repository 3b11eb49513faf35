"""`ascend-graph serve` (vLLM's OpenAI server) on 127.0.0.1 in graph mode forward-async: completions, chat
completions and streaming through the openai client, concurrent requests, answers equal to offline eager greedy
decoding."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")
openai = pytest.importorskip("openai")

PROMPTS = [
    "Hello, my name is",
    "The quick brown fox",
    "What is the capital of France?",
    "Graph mode captures",
    "The host prepares",
    "Paris",
    "Once",
    "Numbers and streams",
]
MAX_TOKENS = 24


def _offline_eager(model_dir: Path, env: dict[str, str]) -> list[str]:
    """Greedy texts from LLM() in eager mode, in a child process (vLLM spawns: the script needs a __main__)."""
    script = model_dir.parent / "offline_eager.py"
    script.write_text(
        "import json\n"
        "from vllm import LLM, SamplingParams\n"
        "if __name__ == '__main__':\n"
        f"    llm = LLM(model={str(model_dir)!r}, max_model_len=256, dtype='float32', enforce_eager=True)\n"
        f"    params = SamplingParams(max_tokens={MAX_TOKENS}, temperature=0, ignore_eos=True)\n"
        f"    outs = llm.generate({PROMPTS!r}, params)\n"
        "    print('RESULT', json.dumps([o.outputs[0].text for o in outs]), flush=True)\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


@pytest.mark.slow
def test_serve_completions_chat_and_streaming_in_graph_mode(tmp_path: Path) -> None:
    from ascend_graph.models.tiny_hf import build_tiny_model_dir
    from ascend_graph.vllm_plugin.server import served

    model_dir = build_tiny_model_dir(tmp_path / "tiny-qwen3")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_USE_AOT_COMPILE": "0"}
    expected = _offline_eager(model_dir, env)
    server_args = [
        "--max-model-len", "256", "--dtype", "float32",
        "-cc", '{"cudagraph_mode": "FULL_AND_PIECEWISE", "cudagraph_capture_sizes": [1, 2, 4, 8]}',
        "--additional-config", '{"ascend_graph": {"mode": "forward-async"}}',
    ]  # fmt: skip
    with served(model_dir, server_args, tmp_path / "server.log", env) as port:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)

        def complete(prompt: str) -> str:
            response = client.completions.create(
                model="tiny", prompt=prompt, max_tokens=MAX_TOKENS, temperature=0, extra_body={"ignore_eos": True}
            )
            return response.choices[0].text

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:  # concurrent: batched decode
            texts = list(pool.map(complete, PROMPTS))
        assert texts == expected

        stream = client.completions.create(
            model="tiny", prompt=PROMPTS[0], max_tokens=MAX_TOKENS, temperature=0, stream=True,
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        assert "".join(chunk.choices[0].text for chunk in stream) == expected[0]

        chat = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0,
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        assert chat.choices[0].message.content and chat.usage.completion_tokens == 8
        chat_stream = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0, stream=True,
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chat_stream if chunk.choices)
        assert streamed == chat.choices[0].message.content
    engine_log = (tmp_path / "server.log").read_text()
    assert "'backend': 'ascend_graph'" in engine_log and "'cudagraph_mode': <CUDAGraphMode.FULL: 2>" in engine_log
    assert "cudagraph_mode FULL_AND_PIECEWISE: one whole-model graph per size" in engine_log
