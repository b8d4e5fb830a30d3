"""Stanford SHP (rlhf-reference.md §5.5)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rewardlab.data.readers import register_reader
from rewardlab.data.records import field, optional_number, preference_pair, turn


@register_reader("shp")
def shp(row: Mapping[str, Any], split: str) -> dict[str, Any]:
    label = field(row, "labels")
    if label not in (0, 1):
        raise ValueError(f"labels must be 0 or 1, got {label!r}")
    a, b = field(row, "human_ref_A"), field(row, "human_ref_B")
    chosen, rejected = (a, b) if label == 1 else (b, a)
    ratio = optional_number(row.get("score_ratio"), "score_ratio")
    if ratio is not None and ratio <= 0:
        raise ValueError(f"score_ratio is {ratio}; it must be positive (the ratio of the two responses' scores)")
    score_a, score_b = optional_number(row.get("score_A"), "score_A"), optional_number(row.get("score_B"), "score_B")
    return preference_pair(turn("user", field(row, "history")), turn("assistant", chosen), turn("assistant", rejected),
                           margin=math.log(ratio) if ratio else None,
                           score_chosen=score_a if label == 1 else score_b,
                           score_rejected=score_b if label == 1 else score_a,
                           source=f"shp/{row.get('domain', '')}".rstrip("/"), split=split)
