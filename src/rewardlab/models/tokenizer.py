"""Tokenizers and text: a word-level tokenizer for a synthetic task's vocabulary (built locally, no download), and
how a prompt and a response become one text and token ids, for the toy and for real data alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: join_text serves pure-Python stages that load no model
    from transformers import PreTrainedTokenizerFast


def build_word_tokenizer(vocab: Sequence[str], special_tokens: Mapping[str, str]) -> PreTrainedTokenizerFast:
    """Whitespace-split words mapped one-to-one to ids; ``special_tokens`` names the task's ``bos_token``,
    ``eos_token``, ``pad_token``, ``unk_token`` (and optionally ``sep_token``), each a word of ``vocab``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if len(set(vocab)) != len(vocab):
        raise ValueError("tokenizer vocabulary has duplicate tokens")
    core = Tokenizer(models.WordLevel({tok: i for i, tok in enumerate(vocab)}, unk_token=special_tokens["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, **special_tokens)
    tokenizer.padding_side = "left"  # prompts are left-padded for batched generation
    return tokenizer


def join_text(prompt: str, response: str) -> str:
    """Prompt and response as one text: a space between them unless one side already has the boundary.

    SentiGram's word sequences get one space (as the tokenizer splits them); a real prompt rendered by a chat
    template ends with a newline, an HH or TL;DR prompt with "Assistant:" / "TL;DR:" before a response that may
    start with a space: those join as they are.
    """
    if not prompt or not response or prompt[-1].isspace() or response[0].isspace():
        return prompt + response
    return f"{prompt} {response}"


def encode_prompt_responses(tokenizer, prompts: list[str], responses: list[str]) -> list[list[int]]:
    """Token ids of prompt + response (the same join the policy's rollouts produce)."""
    return tokenizer([join_text(p, r) for p, r in zip(prompts, responses)], add_special_tokens=False)["input_ids"]
