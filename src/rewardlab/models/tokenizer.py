"""Tokenizers and text: the SentiGram word-level tokenizer (built locally, no download), and how a prompt and
a response become one text, for the toy and for real data alike."""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rewardlab.tasks.sentigram import BOS, EOS, PAD, SEP, UNK


def build_word_tokenizer(vocab: Sequence[str]) -> PreTrainedTokenizerFast:
    """Whitespace-split words mapped one-to-one to ids; specials are the SentiGram ones."""
    if len(set(vocab)) != len(vocab):
        raise ValueError("tokenizer vocabulary has duplicate tokens")
    core = Tokenizer(models.WordLevel({tok: i for i, tok in enumerate(vocab)}, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK, sep_token=SEP
    )
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
