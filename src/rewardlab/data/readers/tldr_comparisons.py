"""OpenAI TL;DR comparisons, ``comparisons/batch*.json`` (rlhf-reference.md §5.3)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rewardlab.data.readers import register_reader
from rewardlab.data.records import field, optional_number, preference_pair, turn


def tldr_prompt(info: Mapping[str, Any]) -> str:
    """TRL's TL;DR template (Reddit posts; CNN/DM articles), "\\n\\n" in the post collapsed to "\\n"."""
    if "post" in info and info["post"] is not None:
        post = re.sub(r"\n\n+", "\n", info["post"])
        return f"SUBREDDIT: r/{info['subreddit']}\n\nTITLE: {info['title']}\n\nPOST: {post}\n\nTL;DR:"
    if "article" in info:
        return f"TITLE: {info['title']}\n\n{info['article']}\n\nTL;DR:"
    raise ValueError("info has neither a post nor an article")


@register_reader("tldr_comparisons")
def tldr_comparisons(row: Mapping[str, Any], split: str) -> dict[str, Any]:
    info, summaries, choice = field(row, "info"), field(row, "summaries"), field(row, "choice")
    if not isinstance(summaries, list) or len(summaries) != 2:
        raise ValueError("summaries must hold exactly two summaries")
    if choice not in (0, 1):
        raise ValueError(f"choice must be 0 or 1, got {choice!r}")
    chosen, rejected = summaries[choice]["text"], summaries[1 - choice]["text"]
    confidence = optional_number((row.get("extra") or {}).get("confidence"), "extra.confidence")
    return preference_pair(turn("user", tldr_prompt(info)), turn("assistant", chosen), turn("assistant", rejected),
                           margin=confidence,
                           strength=str(int(confidence)) if confidence is not None else None,
                           source="tldr_comparisons", split=str(row.get("split", split)), text_prompt=True)
