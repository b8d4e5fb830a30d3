"""Anthropic HH-RLHF transcripts (rlhf-reference.md §5.1)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rewardlab.data.readers import register_reader
from rewardlab.data.records import field, message, preference_pair, turn

_HH_TURN = re.compile(r"(\n\nHuman: |\n\nAssistant: )")
_HH_ASSISTANT = "\n\nAssistant: "


def split_hh_transcript(text: str) -> list[dict[str, str]]:
    """``"\\n\\nHuman: …\\n\\nAssistant: …"`` into messages (Human → user, Assistant → assistant)."""
    parts = _HH_TURN.split(text)
    if parts[0].strip():
        raise ValueError("transcript does not start with a Human or Assistant turn")
    messages = []
    for marker, content in zip(parts[1::2], parts[2::2]):
        messages.append(message("user" if "Human" in marker else "assistant", content))
    if not messages:
        raise ValueError("no Human/Assistant turns in the transcript")
    return messages


@register_reader("hh_rlhf")
def hh_rlhf(row: Mapping[str, Any], split: str) -> dict[str, Any]:
    """TRL's recipe: prompt = the common prefix of both transcripts, cut back to its last Assistant turn."""
    chosen_text, rejected_text = field(row, "chosen"), field(row, "rejected")
    if not isinstance(chosen_text, str) or not isinstance(rejected_text, str):
        raise ValueError("chosen and rejected must be transcript strings")
    common = 0
    for a, b in zip(chosen_text, rejected_text):
        if a != b:
            break
        common += 1
    cut = chosen_text.rfind(_HH_ASSISTANT, 0, common)  # the last Assistant marker inside the shared prefix
    if cut < 0:
        raise ValueError("no shared prompt ending in an Assistant turn")
    prompt = split_hh_transcript(chosen_text[:cut])
    chosen = chosen_text[cut + len(_HH_ASSISTANT):]
    rejected = rejected_text[cut + len(_HH_ASSISTANT):]
    if _HH_TURN.search(chosen) or _HH_TURN.search(rejected):
        raise ValueError("a response continues with further turns after the shared prompt")
    return preference_pair(prompt, turn("assistant", chosen), turn("assistant", rejected), source="hh_rlhf",
                           split=split)
