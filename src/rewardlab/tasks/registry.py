"""The task registry: a synthetic task with a programmatic gold reward registers itself here (``task.name``).

A task gives what the DAG needs from it: a word vocabulary and its special tokens (the tokenizer is built
from them, nothing is downloaded), a generator of SFT documents and of clean prompts from a prompt space split
into training and held-out parts (test prompts never occur in training), and the gold reward as
per-token credits g_t with R*(x, y) = Σ_t g_t (its settings from the config's ``task`` section), and, when
the task has them, reference outputs y* (for ROUGE). Pure: no
file, no model, no config reading beyond the mapping it is handed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rewardlab.registry import Registry


@dataclass(frozen=True)
class Task:
    name: str
    vocab: Sequence[str]
    special_tokens: Mapping[str, str]  # bos_token, eos_token, pad_token, unk_token, sep_token → token
    sample_document: Callable[[random.Random], tuple[list[str], list[str]]]  # (prompt, completion) tokens
    sample_prompt: Callable[[random.Random, bool], list[str]]  # (rng, held_out): a test prompt when held_out
    gold_config: Callable[[Mapping[str, Any]], Any]  # the config's ``task`` section → the gold's settings
    gold_credits: Callable[[Sequence[str], Sequence[str], Any], list[float]]  # (prompt, response, settings)
    is_held_out: Callable[[Sequence[str]], bool]  # a test prompt's opening: never in training prompts or SFT
    # R* split into the components the simulated annotators rate (sentiment, grammar, topicality, ending: the
    # HelpSteer2-style attributes of rewardlab.data.annotators); the values sum to R*.
    gold_components: Callable[[Sequence[str], Sequence[str], Any], dict[str, float]]
    # The reference output y* of a prompt (tokens, no <eos>) when the task has one (summarize), for ROUGE.
    reference: Callable[[Sequence[str]], list[str]] | None = None


TASKS: Registry[Task] = Registry("task", "rewardlab.tasks")
