"""UltraFeedback binarized, HuggingFaceH4's parquet or jsonl rows (rlhf-reference.md §5.2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rewardlab.data.readers import register_reader
from rewardlab.data.records import field, messages, pair_scores, preference_pair, turn


@register_reader("ultrafeedback_binarized")
def ultrafeedback_binarized(row: Mapping[str, Any], split: str) -> dict[str, Any]:
    chosen = messages(field(row, "chosen"), "chosen")
    rejected = messages(field(row, "rejected"), "rejected")
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise ValueError("chosen and rejected must end with an assistant turn")
    prompt = chosen[:-1] or turn("user", field(row, "prompt"))
    sc, sr = pair_scores(row)
    margin = sc - sr if sc is not None and sr is not None else None
    return preference_pair(prompt, chosen[-1:], rejected[-1:], margin=margin, score_chosen=sc, score_rejected=sr,
                           source="ultrafeedback_binarized", split=split)
