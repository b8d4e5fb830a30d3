"""K scored responses per prompt, read as rankings (rlhf-reference.md §5.2): the K-wise losses' labels.

``ultrafeedback``: openbmb/UltraFeedback's raw rows, ``instruction`` and ``completions`` (each a ``response``
with its ``overall_score``) — the data UltraFeedback-binarized was cut from, with all four completions.
``scored_responses``: any rows ``{prompt: str | messages, responses: [str], scores: [number]}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rewardlab.data.readers import register_reader
from rewardlab.data.records import field, messages, number, turn


def ranking(prompt: list[dict[str, str]], responses: Sequence[Any], scores: Sequence[Any], source: str,
            split: str) -> dict[str, Any]:
    """A canonical ranking record ``{prompt, responses: [[msg]], scores, source, split}``, checked: at least two
    responses, one finite score each, no empty response."""
    if not isinstance(responses, list) or len(responses) < 2:
        raise ValueError("a ranking needs a list of at least two responses")
    if not isinstance(scores, list) or len(scores) != len(responses):
        raise ValueError(f"{len(responses)} responses but {len(scores) if isinstance(scores, list) else 0} scores")
    texts = [turn("assistant", r) for r in responses]
    if any(not t[0]["content"].strip() for t in texts):
        raise ValueError("a response is empty")
    return {"prompt": prompt, "responses": texts,
            "scores": [number(s, f"scores[{i}]") for i, s in enumerate(scores)], "source": source, "split": split}


@register_reader("ultrafeedback", label_shapes=("rankings",))
def ultrafeedback(row: Mapping[str, Any], split: str) -> dict[str, Any]:
    completions = field(row, "completions")
    if not isinstance(completions, list) or not all(isinstance(c, Mapping) for c in completions):
        raise ValueError("completions must be a list of objects with a response and an overall_score")
    return ranking(turn("user", field(row, "instruction")), [field(c, "response") for c in completions],
                   [field(c, "overall_score") for c in completions], "ultrafeedback", split)


@register_reader("scored_responses", label_shapes=("rankings",))
def scored_responses(row: Mapping[str, Any], split: str) -> dict[str, Any]:
    prompt = field(row, "prompt")
    prompt = messages(prompt, "prompt") if isinstance(prompt, list) else turn("user", prompt)
    return ranking(prompt, field(row, "responses"), field(row, "scores"), "scored_responses", split)
