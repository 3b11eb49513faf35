"""A tiny Qwen3 model directory built locally (no hub): random weights and a tokenizer trained on a few sentences.

vLLM loads it like any Hugging Face checkpoint. head_dim 32 because vLLM's CPU attention rejects 16.
"""

from __future__ import annotations

import json
from pathlib import Path

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Graph mode captures a decode step once and replays it many times.",
    "The host prepares the next batch while the device runs the current one.",
    "Ascend NPUs, CUDA GPUs and CPUs all run the same captured graphs.",
    "Hello, my name is Ada and I like numbers, tokens and streams.",
    "What is the capital of France? Paris is the capital of France.",
]


def build_tiny_model_dir(path: str | Path, seed: int = 0, layers: int = 2) -> Path:
    """Write config, tokenizer and random safetensors weights of a tiny Qwen3ForCausalLM to `path`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(SENTENCES * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    fast.save_pretrained(path)
    vocab = ((tokenizer.get_vocab_size() + 63) // 64) * 64
    config = Qwen3Config(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=512,
        eos_token_id=tokenizer.token_to_id("<|endoftext|>"),
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    for name, parameter in model.named_parameters():
        if "norm" not in name:
            torch.nn.init.normal_(parameter, std=0.5)  # large enough that greedy tokens vary with the prompt
    model.save_pretrained(path, safe_serialization=True)
    (path / "ascend_graph_tiny.json").write_text(json.dumps({"seed": seed, "layers": layers}))
    return path
