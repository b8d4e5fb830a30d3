"""Real ratings and rankings (HelpSteer2's main data; UltraFeedback's K completions): the pairs they imply, for
the pairwise losses, DPO and every reward model's held-out evaluation, beside their own label sets for the
rating losses (mse_rating, mse_multiattr) and the K-wise losses (kwise_allpairs, plackett_luce, best_of_k).

A canonical record (``rewardlab.data.records``) is a pair (``chosen``), a rating (``ratings``: one response
and its attributes) or a ranking (``responses`` and their ``scores``). Ties are handled as in every pair
format: two responses with the same score say nothing about which is better, so a pair between them is not
made, and a ranking with tied scores (its order would be arbitrary) is dropped; both are counted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from rewardlab.data.readers.helpsteer2 import ATTRIBUTES
from rewardlab.data.records import Tie, preference_pair


def scales(weights: Mapping[str, float]) -> dict[str, Any]:
    """scales.json for rated data: the combination an mse_multiattr reward model scores with (its attributes
    weighted as the scalar rating is)."""
    return {"attributes": list(ATTRIBUTES), "weights": [float(weights.get(a, 0.0)) for a in ATTRIBUTES],
            "offset": 0.0}


def prompt_key(record: Mapping[str, Any]) -> str:
    """A record's prompt (its messages) as a hashable key: the records of one prompt share it."""
    return json.dumps(record["prompt"])


def shape_of(record: Mapping[str, Any]) -> str:
    return "pairs" if "chosen" in record else "ratings" if "ratings" in record else "rankings"


def rating_of(record: Mapping[str, Any], weights: Mapping[str, float]) -> float:
    """The scalar rating Σ_a w_a·attribute_a (``data.source.attribute_weights``)."""
    return sum(w * record["ratings"][a] for a, w in weights.items())


def _best_against_worst(prompt, responses: list, scores: list[float], source: str, split: str,
                        counts: Counter) -> list[dict[str, Any]]:
    best, worst = max(range(len(scores)), key=scores.__getitem__), min(range(len(scores)), key=scores.__getitem__)
    try:
        return [preference_pair(prompt, responses[best], responses[worst], margin=scores[best] - scores[worst],
                                score_chosen=scores[best], score_rejected=scores[worst], source=source, split=split)]
    except Tie:
        counts["ties_dropped"] += 1
        return []


def implied_pairs(records: list[dict[str, Any]], weights: Mapping[str, float], counts: Counter) -> list[dict]:
    """Every pair record as it is; per prompt of the ratings, and per ranking, the best response against the
    worst (a stronger label than UltraFeedback-binarized's best against a random other), margin = their score
    difference."""
    pairs, rated = [], {}
    for record in records:
        shape = shape_of(record)
        if shape == "pairs":
            pairs.append(record)
        elif shape == "ratings":
            rated.setdefault(prompt_key(record), []).append(record)
        else:
            pairs += _best_against_worst(record["prompt"], record["responses"], record["scores"], record["source"],
                                         record["split"], counts)
    for group in rated.values():
        if len(group) >= 2:
            pairs += _best_against_worst(group[0]["prompt"], [r["response"] for r in group],
                                         [rating_of(r, weights) for r in group], group[0]["source"],
                                         group[0]["split"], counts)
    return pairs


def strict_rankings(records: list[dict[str, Any]], counts: Counter) -> list[dict[str, Any]]:
    """Rankings with an order (best first): those whose scores all differ, with the most common K (a K-wise
    loss takes one K); the others are counted in ``rankings_tied_dropped`` / ``rankings_other_k_dropped``."""
    rankings = [r for r in records if shape_of(r) == "rankings"]
    if not rankings:
        return []
    k = Counter(len(r["scores"]) for r in rankings).most_common(1)[0][0]
    kept = []
    for record in rankings:
        if len(record["scores"]) != k:
            counts["rankings_other_k_dropped"] += 1
        elif len(set(record["scores"])) < k:
            counts["rankings_tied_dropped"] += 1
        else:
            order = sorted(range(k), key=lambda i: -record["scores"][i])
            kept.append({**record, "order": order})
    return kept
