"""The architectures the conformance tests run: an MLP, the Qwen3-style decoder, a tiny transformers model."""

from __future__ import annotations

import torch
from torch import nn

from ascend_graph.models.qwen3 import Qwen3Decoder, build_decoder


def mlp(device: str) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32), nn.LayerNorm(32)).to(device).eval()


def qwen3(device: str, max_batch: int = 8, max_seq: int = 48) -> Qwen3Decoder:
    return build_decoder("tiny", max_batch=max_batch, max_seq=max_seq, device=device)


def hf_qwen3(device: str) -> nn.Module:
    """A tiny transformers Qwen3ForCausalLM built from a config (random weights, no hub)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=128,
        use_cache=False,
    )
    torch.manual_seed(0)
    return Qwen3ForCausalLM(config).to(device).eval()
