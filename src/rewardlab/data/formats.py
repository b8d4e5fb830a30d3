"""Label sets on disk in real datasets' schemas, and their reading back into canonical records.

Pairs are written as TRL preference rows (``preference_row``), which TRL's ``RewardTrainer`` and
``DPOTrainer`` read as they are: conversational with an explicit prompt (the prompt's messages, not rendered:
TRL applies the model's chat template itself) for a model with a chat template, standard otherwise (the prompt
text, and each response with the leading space TRL's plain concatenation ``prompt + chosen`` needs). Beside
them: ``prompt_id``, ``score_chosen``/``score_rejected`` (gold R* for simulated labels), ``margin`` (TRL's
margin column: the Llama-2 margin), ``p_star``, ``p_label``, ``strength``. Ratings are HelpSteer2 rows,
rankings the canonical ranking record of rlhf-reference.md §5. ``read_pairs`` reads these rows, the
UltraFeedback-binarized rows of earlier versions, and TRL's standard rows made elsewhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rewardlab.data.records import number, turn
from rewardlab.models.tokenizer import join_text

PAIR_EXTRAS = ("p_star", "p_label", "strength", "margin")
Messages = list[dict[str, str]]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, messages: list[dict[str, str]], text: bool = False) -> str:
    """A prompt's text: the chat template with the generation prompt; without a template, an HH-style
    transcript ending in "Assistant:" (one turn or several, the same way), or the text itself for a
    completion-style prompt (``text``: TL;DR, TRL's standard format)."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if text and len(messages) == 1:
        return messages[0]["content"]
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "".join(f"\n\n{names[m['role']]}: {m['content']}" for m in messages) + "\n\nAssistant:"


def continuation(prompt: str, response: str) -> str:
    """The response as the text that follows ``prompt`` (``join_text``'s boundary: a space where the two would
    run together), so TRL's ``prompt + response`` is the text rewardlab's models see."""
    return join_text(prompt, response)[len(prompt):]


def preference_row(pair: Mapping[str, Any], prompt_messages: Messages | None = None) -> dict[str, Any]:
    """A pair as a TRL preference row: conversational (explicit prompt) when ``prompt_messages`` are given — the
    chat turns before the response, unrendered — standard (strings) otherwise."""
    prompt = pair["prompt"]
    row: dict[str, Any] = {"prompt_id": hashlib.sha256(prompt.encode()).hexdigest()}
    if prompt_messages:
        row.update(prompt=prompt_messages, chosen=turn("assistant", pair["chosen"]),
                   rejected=turn("assistant", pair["rejected"]))
    else:
        row.update(prompt=prompt, chosen=continuation(prompt, pair["chosen"]),
                   rejected=continuation(prompt, pair["rejected"]))
    row.update(score_chosen=pair["score_chosen"], score_rejected=pair["score_rejected"])
    row.update({k: pair[k] for k in PAIR_EXTRAS if k in pair})
    return row


def _last_assistant(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], Mapping) and "content" in value[-1]:
        return value[-1]["content"]
    raise ValueError(f"{where}: expected a string or a list of messages ending in an assistant turn")


def _prompt_text(prompt: Any, render: Callable[[Messages], str] | None, where: str) -> str:
    if isinstance(prompt, str):
        return prompt
    if not (isinstance(prompt, list) and all(isinstance(m, Mapping) and "content" in m for m in prompt)):
        raise ValueError(f"{where}: prompt must be a string or a list of messages")
    if render is None:
        raise ValueError(f"{where}: a conversational prompt needs the model's chat template to be read")
    return render(list(prompt))


def read_pairs(rows: Iterable[Mapping[str, Any]], source: str = "pairs",
               render: Callable[[Messages], str] | None = None) -> list[dict[str, Any]]:
    """Canonical pairs {prompt, chosen, rejected, margin, score_chosen, score_rejected, p_star, …} from TRL
    preference rows with an explicit prompt (standard, or conversational: ``render`` turns the prompt's
    messages into the model's text, e.g. the tokenizer's chat template with the generation prompt) or
    UltraFeedback-binarized rows. Responses lose the leading space ``preference_row`` gave them."""
    pairs = []
    for row_number, row in enumerate(rows, start=1):
        where = f"{source}: row {row_number}"
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        pairs.append({
            "prompt": _prompt_text(row["prompt"], render, where),
            "chosen": _last_assistant(row["chosen"], where).lstrip(),
            "rejected": _last_assistant(row["rejected"], where).lstrip(),
            "margin": number(row.get("margin") or 0.0, f"{where}: margin"),
            **{k: number(row[k], f"{where}: {k}") for k in ("score_chosen", "score_rejected", "p_star", "p_label")
               if row.get(k) is not None},
            **({"strength": row["strength"]} if "strength" in row else {}),
        })
    return pairs


def chat_renderer(tokenizer: Any) -> Callable[[Messages], str] | None:
    """The prompt text a chat model sees for a list of messages (``render_prompt``: its chat template with the
    generation prompt); None for a tokenizer without a template (its label files hold prompt texts)."""
    return (lambda messages: render_prompt(tokenizer, messages)) if has_chat_template(tokenizer) else None
