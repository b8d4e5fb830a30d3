"""Canonical records (rlhf-reference.md §5, TRL's conversational explicit-prompt format) and the pieces every
dataset reader builds them with.

- ``PreferencePair``: ``{prompt: [msg], chosen: [msg], rejected: [msg], margin: float | None,
  strength: str | None, score_chosen: float | None, score_rejected: float | None, source: str, split: str}``
- ``Rating``: ``{prompt: [msg], response: [msg], ratings: {attribute: float}, source, split}``

with ``msg = {"role": "system" | "user" | "assistant", "content": str}``. ``chosen``/``rejected``/``response``
hold the final assistant turn only; earlier turns are in ``prompt``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ROLES = ("system", "user", "assistant")


class BadRow(ValueError):
    """A row of a data file that cannot be turned into a record; the message names the file and the row."""


class Tie(Exception):
    """A pair whose two responses are equally preferred (or identical): dropped and counted."""


def message(role: str, content: Any) -> dict[str, str]:
    if not isinstance(content, str):
        raise ValueError(f"{role} content is {type(content).__name__}, not a string")
    return {"role": role, "content": content}


def turn(role: str, content: Any) -> list[dict[str, str]]:
    """One message as a conversation: ``turn("assistant", text)``."""
    return [message(role, content)]


def messages(value: Any, what: str) -> list[dict[str, str]]:
    """A list of {role, content} messages, checked."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{what} must be a non-empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(f"{what}[{i}] is not a {{role, content}} message")
        if m["role"] not in ROLES:
            raise ValueError(f"{what}[{i}] has role {m['role']!r}; expected one of {', '.join(ROLES)}")
        out.append(message(m["role"], m["content"]))
    return out


def field(row: Mapping[str, Any], key: str) -> Any:
    if key not in row:
        raise ValueError(f"missing field {key!r}")
    return row[key]


def preference_pair(prompt, chosen, rejected, *, margin=None, strength=None, score_chosen=None, score_rejected=None,
                    source: str, split: str) -> dict[str, Any]:
    if chosen[-1]["content"].strip() == rejected[-1]["content"].strip():
        raise Tie("identical responses")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "margin": margin, "strength": strength,
            "score_chosen": score_chosen, "score_rejected": score_rejected, "source": source, "split": split}
