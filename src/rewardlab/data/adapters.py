"""Adapters from real preference datasets, as their files lie on disk, to canonical records (rlhf-reference.md §5).

Canonical records (§5, TRL's conversational explicit-prompt format):

- ``PreferencePair``: ``{prompt: [msg], chosen: [msg], rejected: [msg], margin: float | None,
  strength: str | None, score_chosen: float | None, score_rejected: float | None, source: str, split: str}``
- ``Rating``: ``{prompt: [msg], response: [msg], ratings: {attribute: float}, source, split}``

with ``msg = {"role": "system" | "user" | "assistant", "content": str}``. ``chosen``/``rejected``/``response``
hold the final assistant turn only; earlier turns are in ``prompt``.

One reader per ``data.source.format``: ``hh_rlhf``, ``ultrafeedback_binarized``, ``tldr_comparisons``,
``helpsteer2`` (ratings, or pairs from the ``preference`` subset), ``shp`` and ``trl`` (TRL's standard and
conversational formats, explicit or implicit prompt). A row that cannot be read raises :class:`BadRow`
naming the file and the 1-based row number; with ``on_bad_row="skip"`` it is skipped and counted instead.
Ties (equal chosen and rejected) are dropped and counted, never trained on.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

FORMATS = ("hh_rlhf", "ultrafeedback_binarized", "tldr_comparisons", "helpsteer2", "shp", "trl")
HELPSTEER2_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
ROLES = ("system", "user", "assistant")


class BadRow(ValueError):
    """A row of a data file that cannot be turned into a record; the message names the file and the row."""


class Tie(Exception):
    """A pair whose two responses are equally preferred (or identical): dropped and counted."""


def _msg(role: str, content: Any) -> dict[str, str]:
    if not isinstance(content, str):
        raise ValueError(f"{role} content is {type(content).__name__}, not a string")
    return {"role": role, "content": content}


def _messages(value: Any, what: str) -> list[dict[str, str]]:
    """A list of {role, content} messages, checked."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{what} must be a non-empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(f"{what}[{i}] is not a {{role, content}} message")
        if m["role"] not in ROLES:
            raise ValueError(f"{what}[{i}] has role {m['role']!r}; expected one of {', '.join(ROLES)}")
        out.append(_msg(m["role"], m["content"]))
    return out


def _field(row: Mapping[str, Any], key: str) -> Any:
    if key not in row:
        raise ValueError(f"missing field {key!r}")
    return row[key]


def _pair(prompt, chosen, rejected, *, margin=None, strength=None, score_chosen=None, score_rejected=None,
          source: str, split: str) -> dict[str, Any]:
    if chosen[-1]["content"].strip() == rejected[-1]["content"].strip():
        raise Tie("identical responses")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "margin": margin, "strength": strength,
            "score_chosen": score_chosen, "score_rejected": score_rejected, "source": source, "split": split}


# --- Anthropic HH-RLHF (§5.1) -----------------------------------------------------------------------------------

_HH_TURN = re.compile(r"(\n\nHuman: |\n\nAssistant: )")
_HH_ASSISTANT = "\n\nAssistant: "


def split_hh_transcript(text: str) -> list[dict[str, str]]:
    """``"\\n\\nHuman: …\\n\\nAssistant: …"`` into messages (Human → user, Assistant → assistant)."""
    parts = _HH_TURN.split(text)
    if parts[0].strip():
        raise ValueError("transcript does not start with a Human or Assistant turn")
    messages = []
    for marker, content in zip(parts[1::2], parts[2::2]):
        messages.append(_msg("user" if "Human" in marker else "assistant", content))
    if not messages:
        raise ValueError("no Human/Assistant turns in the transcript")
    return messages


def hh_rlhf(row: Mapping[str, Any], split: str) -> dict[str, Any]:
    """TRL's recipe: prompt = the common prefix of both transcripts, cut back to its last Assistant turn."""
    chosen_text, rejected_text = _field(row, "chosen"), _field(row, "rejected")
    if not isinstance(chosen_text, str) or not isinstance(rejected_text, str):
        raise ValueError("chosen and rejected must be transcript strings")
    common = 0
    for a, b in zip(chosen_text, rejected_text):
        if a != b:
            break
        common += 1
    cut = chosen_text.rfind(_HH_ASSISTANT, 0, common)  # the last Assistant marker inside the shared prefix
    if cut < 0:
        raise ValueError("no shared prompt ending in an Assistant turn")
    prompt = split_hh_transcript(chosen_text[:cut])
    chosen = chosen_text[cut + len(_HH_ASSISTANT):]
    rejected = rejected_text[cut + len(_HH_ASSISTANT):]
    if _HH_TURN.search(chosen) or _HH_TURN.search(rejected):
        raise ValueError("a response continues with further turns after the shared prompt")
    return _pair(prompt, [_msg("assistant", chosen)], [_msg("assistant", rejected)], source="hh_rlhf", split=split)


# --- UltraFeedback binarized (§5.2) -----------------------------------------------------------------------------

def ultrafeedback_binarized(row: Mapping[str, Any], split: str) -> dict[str, Any]:
    chosen = _messages(_field(row, "chosen"), "chosen")
    rejected = _messages(_field(row, "rejected"), "rejected")
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise ValueError("chosen and rejected must end with an assistant turn")
    prompt = chosen[:-1] or [_msg("user", _field(row, "prompt"))]
    sc, sr = row.get("score_chosen"), row.get("score_rejected")
    margin = None
    if sc is not None and sr is not None:
        sc, sr = float(sc), float(sr)
        if sc == sr:
            raise Tie("equal scores")
        margin = sc - sr
    return _pair(prompt, chosen[-1:], rejected[-1:], margin=margin, score_chosen=sc, score_rejected=sr,
                 source="ultrafeedback_binarized", split=split)


# --- OpenAI TL;DR comparisons (§5.3) ----------------------------------------------------------------------------

def tldr_prompt(info: Mapping[str, Any]) -> str:
    """TRL's TL;DR template (Reddit posts; CNN/DM articles), "\\n\\n" in the post collapsed to "\\n"."""
    if "post" in info and info["post"] is not None:
        post = re.sub(r"\n\n+", "\n", info["post"])
        return f"SUBREDDIT: r/{info['subreddit']}\n\nTITLE: {info['title']}\n\nPOST: {post}\n\nTL;DR:"
    if "article" in info:
        return f"TITLE: {info['title']}\n\n{info['article']}\n\nTL;DR:"
    raise ValueError("info has neither a post nor an article")


def tldr_comparisons(row: Mapping[str, Any], split: str) -> dict[str, Any]:
    info, summaries, choice = _field(row, "info"), _field(row, "summaries"), _field(row, "choice")
    if not isinstance(summaries, list) or len(summaries) != 2:
        raise ValueError("summaries must hold exactly two summaries")
    if choice not in (0, 1):
        raise ValueError(f"choice must be 0 or 1, got {choice!r}")
    chosen, rejected = summaries[choice]["text"], summaries[1 - choice]["text"]
    confidence = (row.get("extra") or {}).get("confidence")
    return _pair([_msg("user", tldr_prompt(info))], [_msg("assistant", chosen)], [_msg("assistant", rejected)],
                 margin=float(confidence) if confidence is not None else None,
                 strength=str(confidence) if confidence is not None else None,
                 source="tldr_comparisons", split=str(row.get("split", split)))


# --- HelpSteer2 (§5.4) -----------------------------------------------------------------------------------------

def helpsteer2(row: Mapping[str, Any], split: str) -> dict[str, Any]:
    """A preference-subset row (``response_1``, ``response_2``, ``preference_strength`` in −3 … 3, positive:
    response 2 preferred) becomes a pair; a main-data row (``response`` + five attributes) a rating."""
    prompt = [_msg("user", _field(row, "prompt"))]
    if "preference_strength" in row:
        strength = float(_field(row, "preference_strength"))
        if strength == 0:
            raise Tie("preference_strength 0")
        first, second = _field(row, "response_1"), _field(row, "response_2")
        chosen, rejected = (second, first) if strength > 0 else (first, second)
        return _pair(prompt, [_msg("assistant", chosen)], [_msg("assistant", rejected)], margin=abs(strength),
                     strength=str(int(abs(strength))), source="helpsteer2", split=str(row.get("split", split)))
    ratings = {}
    for name in HELPSTEER2_ATTRIBUTES:
        value = _field(row, name)
        if not isinstance(value, (int, float)) or not 0 <= value <= 4:
            raise ValueError(f"{name} must be a number from 0 to 4, got {value!r}")
        ratings[name] = float(value)
    return {"prompt": prompt, "response": [_msg("assistant", _field(row, "response"))], "ratings": ratings,
            "source": "helpsteer2", "split": split}


# --- Stanford SHP (§5.5) ---------------------------------------------------------------------------------------

def shp(row: Mapping[str, Any], split: str) -> dict[str, Any]:
    label = _field(row, "labels")
    if label not in (0, 1):
        raise ValueError(f"labels must be 0 or 1, got {label!r}")
    a, b = _field(row, "human_ref_A"), _field(row, "human_ref_B")
    chosen, rejected = (a, b) if label == 1 else (b, a)
    ratio = row.get("score_ratio")
    score_a, score_b = row.get("score_A"), row.get("score_B")
    return _pair([_msg("user", _field(row, "history"))], [_msg("assistant", chosen)], [_msg("assistant", rejected)],
                 margin=math.log(float(ratio)) if ratio else None,
                 score_chosen=float(score_a if label == 1 else score_b) if score_a is not None else None,
                 score_rejected=float(score_b if label == 1 else score_a) if score_b is not None else None,
                 source=f"shp/{row.get('domain', '')}".rstrip("/"), split=split)


# --- TRL generic formats -----------------------------------------------------------------------------------------

def trl(row: Mapping[str, Any], split: str) -> dict[str, Any]:
    """TRL preference rows: standard (strings) or conversational (messages), explicit ``prompt`` or implicit
    (the prompt is the shared prefix of the two conversations)."""
    chosen, rejected, prompt = _field(row, "chosen"), _field(row, "rejected"), row.get("prompt")
    margin = float(row["margin"]) if row.get("margin") is not None else None
    if isinstance(chosen, str) and isinstance(rejected, str):
        if prompt is None:
            raise ValueError("standard (string) rows with an implicit prompt cannot be split; add a 'prompt' field")
        if not isinstance(prompt, str):
            raise ValueError("prompt must be a string in the standard format")
        return _pair([_msg("user", prompt)], [_msg("assistant", chosen)], [_msg("assistant", rejected)],
                     margin=margin, source="trl", split=split)
    chosen, rejected = _messages(chosen, "chosen"), _messages(rejected, "rejected")
    if prompt is None:  # implicit prompt: the common leading messages
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        if not prompt:
            raise ValueError("implicit prompt: chosen and rejected share no leading messages")
    else:
        prompt = _messages(prompt, "prompt") if isinstance(prompt, list) else [_msg("user", prompt)]
    if len(chosen) != 1 or len(rejected) != 1 or chosen[0]["role"] != "assistant" or rejected[0]["role"] != "assistant":
        raise ValueError("chosen and rejected must each be one assistant turn after the prompt")
    return _pair(prompt, chosen, rejected, margin=margin, source="trl", split=split)


READERS: dict[str, Callable[[Mapping[str, Any], str], dict[str, Any]]] = {
    "hh_rlhf": hh_rlhf,
    "ultrafeedback_binarized": ultrafeedback_binarized,
    "tldr_comparisons": tldr_comparisons,
    "helpsteer2": helpsteer2,
    "shp": shp,
    "trl": trl,
}


def iter_rows(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(1-based row number, parsed row) of a JSON-lines file (``.jsonl``, ``.json`` lines, ``.gz``), a JSON
    array, or a Parquet file. A line that is not JSON is yielded as a :class:`BadRow`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.source: {path} does not exist (place the files locally; nothing is downloaded)")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for number, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield number, row
        return
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        text = handle.read()
    if text.lstrip().startswith("["):
        for number, row in enumerate(json.loads(text), start=1):
            yield number, row
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            yield number, BadRow(f"{path}: row {number}: not valid JSON ({err.msg})")


def read_records(path: str | Path, fmt: str, split: str = "train", on_bad_row: str = "error",
                 counts: Counter | None = None) -> list[dict[str, Any]]:
    """Every record of one file through the format's reader; bad rows raise or are counted (``counts``)."""
    if fmt not in READERS:
        raise ValueError(f"data.source.format: {fmt!r} is not one of {', '.join(FORMATS)}")
    reader = READERS[fmt]
    counts = counts if counts is not None else Counter()
    records = []
    for number, row in iter_rows(path):
        try:
            if isinstance(row, BadRow):
                raise row
            if not isinstance(row, Mapping):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            records.append(reader(row, split))
            counts["rows_read"] += 1
        except Tie:
            counts["ties_dropped"] += 1
        except (ValueError, KeyError, TypeError, IndexError) as err:
            message = str(err) if isinstance(err, BadRow) else f"{path}: row {number}: {err}"
            if on_bad_row != "skip":
                raise BadRow(message) from err
            counts["rows_skipped"] += 1
    return records
