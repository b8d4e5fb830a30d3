"""TRL's preference formats: standard (strings) or conversational (messages), explicit or implicit prompt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rewardlab.data.readers import register_reader
from rewardlab.data.records import field, messages, preference_pair, turn


@register_reader("trl")
def trl(row: Mapping[str, Any], split: str) -> dict[str, Any]:
    """TRL preference rows: standard (strings) or conversational (messages), explicit ``prompt`` or implicit
    (the prompt is the shared prefix of the two conversations)."""
    chosen, rejected, prompt = field(row, "chosen"), field(row, "rejected"), row.get("prompt")
    margin = row.get("margin")  # preference_pair checks it is a finite number
    if isinstance(chosen, str) and isinstance(rejected, str):
        if prompt is None:
            raise ValueError("standard (string) rows with an implicit prompt cannot be split; add a 'prompt' field")
        if not isinstance(prompt, str):
            raise ValueError("prompt must be a string in the standard format")
        return preference_pair(turn("user", prompt), turn("assistant", chosen), turn("assistant", rejected),
                               margin=margin, source="trl", split=split, text_prompt=True)
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
    return preference_pair(prompt, chosen, rejected, margin=margin, source="trl", split=split)
