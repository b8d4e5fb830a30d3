"""The reference outputs y* that ROUGE compares a response with (rlhf-reference.md §4.7): the task's own
(summarize's deterministic references) or, on real data, the human summaries written beside the prompts
(``data.source.prompts_from: sft``: each prompt row carries its SFT completion as ``reference``).

A ``References`` maps a prompt's token ids to its reference words and a response's ids to its words, so the
policy loop (a ROUGE reward) and the evaluation (ROUGE columns) read one definition. None when the experiment
has no references: SentiGram, or real data with the pairs' prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rewardlab.config import is_real_data
from rewardlab.tasks import TASKS


class References:
    def __init__(self, lookup: Callable[[Sequence[int]], list[str]], words: Callable[[Sequence[int]], list[str]]):
        self._lookup, self.words = lookup, words

    def __call__(self, prompts: Sequence[Sequence[int]]) -> list[list[str]]:
        """The reference y* of each prompt, as words."""
        return [self._lookup(p) for p in prompts]


def task_references(task_name: str, tokenizer: Any) -> References | None:
    """A synthetic task's references: y* = task.reference(prompt tokens); responses are their tokens without
    the special ones (EOS, padding)."""
    task = TASKS.get(task_name)
    if task.reference is None:
        return None
    specials = set(task.special_tokens.values())
    reference = task.reference

    def tokens(ids: Sequence[int]) -> list[str]:
        return tokenizer.convert_ids_to_tokens(list(ids))

    return References(lambda ids: reference(tokens(ids)), lambda ids: [t for t in tokens(ids) if t not in specials])


def row_references(rows: Sequence[Mapping[str, Any]], tokenizer: Any, where: str) -> References | None:
    """Real data: each prompt row's ``reference`` text, looked up by the prompt's token ids (tokenised as the
    stages tokenise prompts, without special tokens); responses are their decoded text split on white space."""
    if not rows or "reference" not in rows[0]:
        return None
    ids = tokenizer([r["prompt"] for r in rows], add_special_tokens=False)["input_ids"]
    table = {tuple(i): r["reference"].split() for i, r in zip(ids, rows)}

    def lookup(prompt: Sequence[int]) -> list[str]:
        try:
            return table[tuple(prompt)]
        except KeyError:
            text = tokenizer.decode(list(prompt))[:80]
            raise KeyError(f"{where}: a prompt without a reference ({text!r}…)") from None

    return References(lookup, lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True).split())


def references(config: Mapping[str, Any], tokenizer: Any, rows: Sequence[Mapping[str, Any]],
               where: str) -> References | None:
    """The experiment's references for these prompt rows (``where``: the prompts file, for error messages)."""
    if is_real_data(config):
        return row_references(rows, tokenizer, where)
    return task_references(config["task"]["name"], tokenizer)
