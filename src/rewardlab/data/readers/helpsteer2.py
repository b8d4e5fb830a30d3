"""HelpSteer2: the ``preference`` subset as pairs, the main data as ratings (rlhf-reference.md §5.4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rewardlab.data.readers import register_reader
from rewardlab.data.records import Tie, field, number, preference_pair, turn

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


@register_reader("helpsteer2", label_shapes=("pairs", "ratings"))
def helpsteer2(row: Mapping[str, Any], split: str) -> dict[str, Any]:
    """A preference-subset row (``response_1``, ``response_2``, ``preference_strength`` in −3 … 3, positive:
    response 2 preferred) becomes a pair; a main-data row (``response`` + five attributes) a rating."""
    prompt = turn("user", field(row, "prompt"))
    if "preference_strength" in row:
        strength = number(field(row, "preference_strength"), "preference_strength")
        if strength == 0:
            raise Tie("preference_strength 0")
        first, second = field(row, "response_1"), field(row, "response_2")
        chosen, rejected = (second, first) if strength > 0 else (first, second)
        return preference_pair(prompt, turn("assistant", chosen), turn("assistant", rejected), margin=abs(strength),
                               strength=str(int(abs(strength))), source="helpsteer2",
                               split=str(row.get("split", split)))
    ratings = {}
    for name in ATTRIBUTES:
        value = field(row, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 4:
            raise ValueError(f"{name} must be a number from 0 to 4, got {value!r}")
        ratings[name] = float(value)
    response = turn("assistant", field(row, "response"))
    if not response[0]["content"].strip():
        raise ValueError("the response is empty")
    return {"prompt": prompt, "response": response, "ratings": ratings,
            "source": "helpsteer2", "split": split}
