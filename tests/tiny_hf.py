"""Tiny Hugging Face causal LMs of each supported family, built from a config and saved locally — the way a
user's downloaded checkpoint lies on disk, without a download. The tokenizer is a byte-level BPE trained on
the fixture texts (so any unicode is encodable)."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

FIXTURES = Path(__file__).parent / "fixtures/datasets"
EOS = "<|endoftext|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def fixture_texts() -> list[str]:
    texts = []
    for path in FIXTURES.iterdir():
        texts.extend(path.read_text(encoding="utf-8").splitlines())
    return texts


def build_tokenizer(chat_template: bool) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[EOS, "<|user|>", "<|assistant|>", "<|system|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(fixture_texts() + ["Human: Assistant: SUBREDDIT TITLE POST TL;DR"], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, bos_token=EOS)  # no pad: like GPT-2
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def model_config(family: str, vocab_size: int, eos_id: int):
    common = {"vocab_size": vocab_size, "bos_token_id": eos_id, "eos_token_id": eos_id}
    if family == "gpt2":
        return GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=256, **common)
    if family == "gpt_neox":
        return GPTNeoXConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=32, intermediate_size=64,
                             max_position_embeddings=256, **common)
    if family == "llama":
        return LlamaConfig(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, hidden_size=32,
                           intermediate_size=64, max_position_embeddings=256, **common)
    if family == "qwen2":
        return Qwen2Config(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, hidden_size=32,
                           intermediate_size=64, max_position_embeddings=256, **common)
    raise ValueError(family)


def save_tiny_model(folder: Path, family: str, chat_template: bool = False, seed: int = 0) -> Path:
    """A randomly initialised model of ``family`` and its tokenizer, ``save_pretrained`` to ``folder``."""
    import torch

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(chat_template)
    model = AutoModelForCausalLM.from_config(model_config(family, len(tokenizer), tokenizer.eos_token_id))
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["model_type"] == family
    return folder
