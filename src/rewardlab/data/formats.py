"""Label sets on disk in real datasets' schemas, and their reading back into canonical records.

Pairs are written as UltraFeedback-binarized rows (which are also TRL's conversational preference format
with an explicit ``prompt`` column), ratings as HelpSteer2 rows, rankings as the canonical ranking
record of rlhf-reference.md §5. ``read_pairs`` also accepts TRL's standard string format, so pairs made
elsewhere can be used as they are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from rewardlab.data.records import number

PAIR_EXTRAS = ("p_star", "p_label", "strength", "margin")


def _conversation(prompt: str, response: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def ultrafeedback_row(pair: Mapping[str, Any]) -> dict[str, Any]:
    """A pair as an UltraFeedback-binarized row (prompt, prompt_id, chosen/rejected/messages, scores)."""
    prompt = pair["prompt"]
    chosen = _conversation(prompt, pair["chosen"])
    row = {
        "prompt": prompt,
        "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(),
        "chosen": chosen,
        "rejected": _conversation(prompt, pair["rejected"]),
        "messages": chosen,
        "score_chosen": pair["score_chosen"],
        "score_rejected": pair["score_rejected"],
    }
    row.update({k: pair[k] for k in PAIR_EXTRAS if k in pair})
    return row


def _last_assistant(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], Mapping) and "content" in value[-1]:
        return value[-1]["content"]
    raise ValueError(f"{where}: expected a string or a list of messages ending in an assistant turn")


def read_pairs(rows: Iterable[Mapping[str, Any]], source: str = "pairs") -> list[dict[str, Any]]:
    """Canonical pairs {prompt, chosen, rejected, margin, score_chosen, score_rejected, p_star} from
    UltraFeedback-binarized rows or TRL standard rows (``prompt``/``chosen``/``rejected`` strings).
    """
    pairs = []
    for row_number, row in enumerate(rows, start=1):
        where = f"{source}: row {row_number}"
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        prompt = row["prompt"] if isinstance(row["prompt"], str) else _last_assistant(row["prompt"], where)
        pairs.append({
            "prompt": prompt,
            "chosen": _last_assistant(row["chosen"], where),
            "rejected": _last_assistant(row["rejected"], where),
            "margin": number(row.get("margin") or 0.0, f"{where}: margin"),
            **{k: number(row[k], f"{where}: {k}") for k in ("score_chosen", "score_rejected", "p_star", "p_label")
               if row.get(k) is not None},
            **({"strength": row["strength"]} if "strength" in row else {}),
        })
    return pairs
