"""TRL's preference formats: standard (strings) or conversational (messages), explicit or implicit prompt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rewardlab.data.readers import register_reader
from rewardlab.data.records import field, messages, pair_scores, preference_pair, turn


def shared_text_prefix(chosen: str, rejected: str) -> str:
    """The implicit prompt of two standard (string) completions, as TRL's ``extract_prompt`` cuts it: their
    common prefix, ending before the space that starts the responses."""
    for index in range(min(len(chosen), len(rejected))):
        if chosen[index] != rejected[index]:
            return chosen[: index - 1] if index and chosen[index - 1] == " " else chosen[:index]
    return chosen[: min(len(chosen), len(rejected))]


@register_reader("trl")
def trl(row: Mapping[str, Any], split: str) -> dict[str, Any]:
    """TRL preference rows in all four layouts: standard (strings) or conversational (messages), with an
    explicit ``prompt`` or an implicit one (the shared start of the two completions, as TRL extracts it)."""
    chosen, rejected, prompt = field(row, "chosen"), field(row, "rejected"), row.get("prompt")
    sc, sr = pair_scores(row)
    margin = row.get("margin")  # TRL's margin column, else the score difference; preference_pair checks it
    if margin is None and sc is not None and sr is not None:
        margin = sc - sr
    common = {"margin": margin, "score_chosen": sc, "score_rejected": sr, "source": "trl", "split": split}
    if isinstance(chosen, str) and isinstance(rejected, str):
        if prompt is None:  # implicit prompt
            prompt = shared_text_prefix(chosen, rejected)
            chosen, rejected = chosen[len(prompt):], rejected[len(prompt):]
            if not prompt.strip():
                raise ValueError("implicit prompt: chosen and rejected share no leading text")
        if not isinstance(prompt, str):
            raise ValueError("prompt must be a string in the standard format")
        return preference_pair(turn("user", prompt), turn("assistant", chosen), turn("assistant", rejected),
                               text_prompt=True, **common)
    chosen, rejected = messages(chosen, "chosen"), messages(rejected, "rejected")
    if prompt is None:  # implicit prompt: the common leading messages
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        if not prompt:
            raise ValueError("implicit prompt: chosen and rejected share no leading messages")
    else:
        prompt = messages(prompt, "prompt") if isinstance(prompt, list) else turn("user", prompt)
    if len(chosen) != 1 or len(rejected) != 1 or chosen[0]["role"] != "assistant" or rejected[0]["role"] != "assistant":
        raise ValueError("chosen and rejected must each be one assistant turn after the prompt")
    return preference_pair(prompt, chosen, rejected, **common)
