"""Canonical records (rlhf-reference.md §5, TRL's conversational explicit-prompt format) and the pieces every
dataset reader builds them with.

- ``PreferencePair``: ``{prompt: [msg], chosen: [msg], rejected: [msg], margin: float | None,
  strength: str | None, score_chosen: float | None, score_rejected: float | None, source: str, split: str}``
- ``Rating``: ``{prompt: [msg], response: [msg], ratings: {attribute: float}, source, split}``

with ``msg = {"role": "system" | "user" | "assistant", "content": str}``. ``chosen``/``rejected``/``response``
hold the final assistant turn only; earlier turns are in ``prompt``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """An input data file that cannot be used; the message names the file (and the row, when there is one)."""


class BadRow(DataError):
    """A row of a data file that cannot be turned into a record; the message names the file and the row."""


class BadFile(DataError):
    """A whole file that cannot be read (truncated archive, not Parquet, a JSON array cut short): never skipped."""


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


def number(value: Any, name: str) -> float:
    """``value`` as a finite float; NaN, ±inf and non-numbers are refused with the field's name."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{name} is {value!r}, not a number")
    try:
        result = float(value)
    except ValueError:
        raise ValueError(f"{name} is {value!r}, not a number") from None
    if not math.isfinite(result):
        raise ValueError(f"{name} is {value!r}, not a finite number")
    return result


def optional_number(value: Any, name: str) -> float | None:
    return None if value is None else number(value, name)


def pair_scores(row: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """A row's ``score_chosen``/``score_rejected`` as numbers; equal scores are a Tie (every format that carries
    scores drops such a pair the same way). Either is None when the row lacks it."""
    sc = optional_number(row.get("score_chosen"), "score_chosen")
    sr = optional_number(row.get("score_rejected"), "score_rejected")
    if sc is not None and sc == sr:
        raise Tie("equal scores")
    return sc, sr


def preference_pair(prompt, chosen, rejected, *, margin=None, strength=None, score_chosen=None, score_rejected=None,
                    source: str, split: str, text_prompt: bool = False) -> dict[str, Any]:
    """A canonical pair, checked: non-empty responses, finite margin and scores; identical responses are a Tie.
    ``text_prompt``: the prompt is a text to continue (TL;DR, TRL's standard format), not a chat turn."""
    for name, response in (("chosen", chosen), ("rejected", rejected)):
        if not response[-1]["content"].strip():
            raise ValueError(f"the {name} response is empty")
    margin, score_chosen, score_rejected = (optional_number(v, k) for k, v in (
        ("margin", margin), ("score_chosen", score_chosen), ("score_rejected", score_rejected)))
    if chosen[-1]["content"].strip() == rejected[-1]["content"].strip():
        raise Tie("identical responses")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "margin": margin, "strength": strength,
            "score_chosen": score_chosen, "score_rejected": score_rejected, "source": source, "split": split,
            **({"text_prompt": True} if text_prompt else {})}
