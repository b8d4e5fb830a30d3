"""A word-level tokenizer built locally and saved in Hugging Face format (no download)."""

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
