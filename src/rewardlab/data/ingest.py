"""Stage `preprocess` for real data: local dataset files → canonical records → the DAG's data contract.

Reads ``data.source.path`` (and ``test_path`` / ``sft_path``) through the format's adapter
(``rewardlab.data.adapters``), renders prompts with the model's chat template when its tokenizer has one
(otherwise a single user turn is its text, and a conversation an HH-style transcript ending in
"Assistant:"), drops pairs and SFT documents longer than ``model.max_length`` tokens, and writes, in
``data/processed/<name>/``, the same files the SentiGram preprocess writes plus the labels:

  sft_train.jsonl, sft_valid.jsonl       {"prompt", "completion"} (TRL prompt-completion)
  prompts_train.jsonl, prompts_test.jsonl {"prompt"} (rendered): the pairs' prompts; with
                                         data.source.prompts_from: sft, the SFT documents' (training and
                                         validation) with {"reference"}: the completion, for ROUGE
  pairs_train.jsonl, pairs_test.jsonl    TRL preference rows (conversational for a chat model), the reward pairs;
                                         from ratings or rankings: each prompt's best response against its worst
  ratings_train.jsonl, scales.json       rated data: HelpSteer2 rows with the scalar ``rating``, and the attribute
                                         weights (``data.source.attribute_weights``); empty for other data
  rankings_train.jsonl                   ranked data: {prompt, responses, order (best first), scores}; empty otherwise
  pool/train.jsonl                       {"prompt", "responses"}: what the reward model is normalised on
  tokenizer/                             the model's tokenizer (a pad token set when it had none)
  metrics.json                           rows read / skipped, ties dropped, pairs and documents kept and
                                         dropped for length, mean lengths; run.json

Every problem with the inputs (a missing file or model folder, a bad row, a format that gives no pairs)
stops here, before any training, with the file and row.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from rewardlab.data.adapters import missing_source_file, read_records
from rewardlab.data.formats import has_chat_template, preference_row, render_prompt
from rewardlab.data.readers.tldr_comparisons import tldr_prompt
from rewardlab.data.real_labels import implied_pairs, prompt_key, rating_of, scales, shape_of, strict_rankings
from rewardlab.data.records import DataError
from rewardlab.models.folder import check_model_folder
from rewardlab.models.tokenizer import join_text
from rewardlab.runinfo import read_jsonl, write_json, write_jsonl
from rewardlab.runner import Stage, StageContext, StageResult


def load_tokenizer(model_path: str, trust_remote_code: bool):
    """The model's tokenizer, with a pad token (its EOS) when it has none; checked before anything is read."""
    folder = check_model_folder(model_path, "model.name_or_path", trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if len(tokenizer) == 0:
        raise SystemExit(f"model.name_or_path: the tokenizer in {folder} has an empty vocabulary")
    if tokenizer.eos_token is None:
        raise SystemExit(f"model.name_or_path: the tokenizer in {folder} has no EOS token")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _response(messages: list[dict[str, str]]) -> str:
    return messages[-1]["content"].strip()


def read_splits(source: dict[str, Any], data: dict[str, Any], counts: Counter) -> tuple[list, list]:
    """Training and held-out records: the test file, or the records of a seeded ``test_fraction`` of the training
    file's prompts."""
    try:
        train = read_records(source["path"], source["format"], "train", data["on_bad_row"], counts)
        if source.get("test_path"):
            test = read_records(source["test_path"], source["format"], "test", data["on_bad_row"], counts)
        else:  # held-out prompts: every record of a prompt (a rated prompt's responses) on one side
            keys = [prompt_key(r) for r in train]
            prompts = list(dict.fromkeys(keys))
            random.Random(data["seed"]).shuffle(prompts)
            held_out = set(prompts[: max(1, round(len(prompts) * source["test_fraction"]))])
            test = [r for r, key in zip(train, keys) if key in held_out]
            train = [r for r, key in zip(train, keys) if key not in held_out]
    except DataError as err:  # a bad file, or a bad row under on_bad_row: error (its message says how to skip)
        raise SystemExit(f"data.source: {err}") from err
    return (train[: source["max_rows"]] if source.get("max_rows") else train), test


def why_no_pairs(counts: Counter, max_length: int) -> str:
    """What emptied the pairs, from the counts the readers and the length filter kept."""
    too_long = counts["pairs_too_long_train"] + counts["pairs_too_long_test"]
    read, skipped, ties = counts["rows_read"], counts["rows_skipped"], counts["ties_dropped"]
    if read + skipped + ties == 0:
        return "the files hold no rows"
    parts = [f"{read} rows read", f"{ties} ties dropped", f"{skipped} bad rows skipped (data.on_bad_row: skip)",
             f"{too_long} pairs longer than model.max_length ({max_length}) dropped"]
    if ties and not read and not skipped:
        cause = "every row is a tie (equal scores or identical responses)"
    elif skipped and not read:
        cause = "every row was skipped as bad"
    elif too_long and too_long >= read:
        cause = f"every pair is longer than model.max_length ({max_length} tokens); raise it"
    else:
        cause = "too few pairs for a training and a held-out split"
    return f"{cause} ({', '.join(parts)})"


class Renderer:
    """Prompts through the model's chat template, and lengths in its tokens against ``model.max_length``."""

    def __init__(self, tokenizer: Any, max_length: int, counts: Counter):
        self.tokenizer, self.max_length, self.counts = tokenizer, max_length, counts

    def length(self, prompt: str, response: str) -> int:
        return len(self.tokenizer(join_text(prompt, response), add_special_tokens=False)["input_ids"])

    def pairs(self, pairs: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
        rows = []
        for pair in pairs:
            prompt = render_prompt(self.tokenizer, pair["prompt"], text=pair.get("text_prompt", False))
            chosen, rejected = _response(pair["chosen"]), _response(pair["rejected"])
            if max(self.length(prompt, chosen), self.length(prompt, rejected)) > self.max_length:
                self.counts[f"pairs_too_long_{split}"] += 1
                continue
            # A chat model's label files keep the prompt's messages unrendered (TRL's conversational format).
            messages = pair["prompt"] if has_chat_template(self.tokenizer) else None
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "prompt_messages": messages,
                         "score_chosen": pair["score_chosen"], "score_rejected": pair["score_rejected"],
                         **({"margin": pair["margin"]} if pair["margin"] is not None else {}),
                         **({"strength": pair["strength"]} if pair["strength"] is not None else {})})
        return rows

    def ratings(self, records: list[dict[str, Any]], weights: dict[str, float]) -> list[dict[str, Any]]:
        """HelpSteer2 rows (rendered prompt, response, the five attributes) with the scalar ``rating``."""
        rows = []
        for record in records:
            prompt = render_prompt(self.tokenizer, record["prompt"])
            response = _response(record["response"])
            if self.length(prompt, response) > self.max_length:
                self.counts["ratings_too_long"] += 1
                continue
            rows.append({"prompt": prompt, "response": response, **record["ratings"],
                         "rating": rating_of(record, weights)})
        return rows

    def rankings(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Ranking rows: rendered prompt, the K responses, their order (best first) and scores."""
        rows = []
        for record in records:
            prompt = render_prompt(self.tokenizer, record["prompt"])
            responses = [_response(r) for r in record["responses"]]
            if max(self.length(prompt, r) for r in responses) > self.max_length:
                self.counts["rankings_too_long"] += 1
                continue
            rows.append({"prompt": prompt, "responses": responses, "order": record["order"],
                         "scores": record["scores"]})
        return rows

    def sft_documents(self, sft_path: str | None, train_rows: list[dict[str, Any]]) -> list[dict[str, str]]:
        """SFT documents from ``sft_path`` (TRL prompt-completion rows) or the chosen responses; too long dropped."""
        if sft_path:
            documents = []
            for number, row in enumerate(read_jsonl(sft_path), start=1):
                if isinstance(row, dict) and {"post", "summary"} <= set(row):  # summarize-from-feedback SFT rows
                    row = tldr_sft_row(row, f"data.source.sft_path: {sft_path}: row {number}")
                if not isinstance(row.get("prompt"), (str, list)) or not isinstance(row.get("completion"), str):
                    raise SystemExit(f"data.source.sft_path: {sft_path}: row {number}: expected "
                                     "{\"prompt\": str or messages, \"completion\": str} or {\"subreddit\", "
                                     "\"title\", \"post\", \"summary\"}")
                prompt = row["prompt"]
                messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
                documents.append({"prompt": render_prompt(self.tokenizer, messages, text=isinstance(prompt, str)),
                                  "completion": row["completion"].strip()})
        else:
            documents = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in train_rows]
        kept = [d for d in documents if self.length(d["prompt"], d["completion"]) <= self.max_length]
        self.counts["sft_too_long"] = len(documents) - len(kept)
        return kept


def tldr_sft_row(row: dict[str, Any], where: str) -> dict[str, str]:
    """A summarize-from-feedback SFT row ({subreddit, title, post, summary}) as TRL's prompt-completion row: the
    TL;DR template (TRL's, as for the comparisons) and the summary with its leading space."""
    try:
        return {"prompt": tldr_prompt(row), "completion": " " + str(row["summary"]).strip()}
    except (KeyError, ValueError) as err:
        raise SystemExit(f"{where}: not a TL;DR SFT row ({err})") from None


def prompt_rows(train_rows: list[dict], test_rows: list[dict], sft_train: list[dict], sft_valid: list[dict],
                prompts_from: str) -> tuple[list[dict], list[dict]]:
    """The RL and evaluation prompts: the pairs' (``pairs``), or the SFT documents' with their completions as
    references (``sft``; held-out prompts never among the training ones)."""
    if prompts_from == "pairs":
        return ([{"prompt": p} for p in dict.fromkeys(r["prompt"] for r in train_rows)],
                [{"prompt": p} for p in dict.fromkeys(r["prompt"] for r in test_rows)])
    train = {d["prompt"]: d["completion"] for d in reversed(sft_train)}  # the first completion of a prompt
    test = {d["prompt"]: d["completion"] for d in reversed(sft_valid) if d["prompt"] not in train}
    return ([{"prompt": p, "reference": r} for p, r in reversed(train.items())],
            [{"prompt": p, "reference": r} for p, r in reversed(test.items())])


def write_outputs(out: Path, train_rows: list[dict], test_rows: list[dict], sft_train: list[dict],
                  sft_valid: list[dict], tokenizer: Any, ratings: list[dict], rankings: list[dict],
                  weights: dict[str, float], prompts: tuple[list[dict], list[dict]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "ratings_train.jsonl", ratings)
    write_jsonl(out / "rankings_train.jsonl", rankings)
    write_json(out / "scales.json", scales(weights))
    write_jsonl(out / "pairs_train.jsonl", [preference_row(r, r.get("prompt_messages")) for r in train_rows])
    write_jsonl(out / "pairs_test.jsonl", [preference_row(r, r.get("prompt_messages")) for r in test_rows])
    write_jsonl(out / "sft_train.jsonl", sft_train)
    write_jsonl(out / "sft_valid.jsonl", sft_valid)
    write_jsonl(out / "prompts_train.jsonl", prompts[0])
    write_jsonl(out / "prompts_test.jsonl", prompts[1])
    write_jsonl(out / "pool/train.jsonl", [{"prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]]}
                                           for r in train_rows])
    tokenizer.save_pretrained(out / "tokenizer")


def run(ctx: StageContext) -> StageResult:
    source, data, model = ctx.config["data"]["source"], ctx.config["data"], ctx.config["model"]
    if missing := missing_source_file(source):  # every input file is there before the model is loaded
        raise SystemExit(missing)
    counts: Counter = Counter()
    tokenizer = load_tokenizer(model["name_or_path"], model["trust_remote_code"])
    train, test = read_splits(source, data, counts)
    render = Renderer(tokenizer, model["max_length"], counts)
    weights = source["attribute_weights"]
    train_rows = render.pairs(implied_pairs(train, weights, counts), "train")
    test_rows = render.pairs(implied_pairs(test, weights, counts), "test")
    ratings = render.ratings([r for r in train if shape_of(r) == "ratings"], weights)
    rankings = render.rankings(strict_rankings(train, counts))
    if not train_rows or not test_rows:
        raise SystemExit(f"data.source: {len(train_rows)} training and {len(test_rows)} held-out pairs are left: "
                         f"{why_no_pairs(counts, model['max_length'])}")
    too_long = counts["pairs_too_long_train"] + counts["pairs_too_long_test"]
    too_long_fraction = too_long / max(1, too_long + len(train_rows) + len(test_rows))
    if too_long_fraction > source["warn_dropped_fraction"]:
        print(f"warning: data.source: {too_long} of {too_long + len(train_rows) + len(test_rows)} pairs "
              f"({too_long_fraction:.0%}) are longer than model.max_length ({model['max_length']} tokens) and were "
              f"dropped, leaving {len(train_rows)} training and {len(test_rows)} held-out pairs; raise "
              "model.max_length to keep them", file=sys.stderr)
    kept = render.sft_documents(source.get("sft_path"), train_rows)
    n_valid = max(1, len(kept) // 20)
    sft_valid, sft_train = kept[:n_valid], kept[n_valid:] or kept
    prompts = prompt_rows(train_rows, test_rows, sft_train, sft_valid, source["prompts_from"])
    if not prompts[0] or not prompts[1]:
        raise SystemExit(f"data.source.prompts_from: {source['prompts_from']}: {len(prompts[0])} training and "
                         f"{len(prompts[1])} held-out prompts are left")
    write_outputs(ctx.out, train_rows, test_rows, sft_train, sft_valid, tokenizer, ratings, rankings, weights,
                  prompts)
    lengths = [render.length(r["prompt"], r["chosen"]) for r in train_rows]
    return StageResult({
        "rows_read": counts["rows_read"],
        "rows_skipped": counts["rows_skipped"],
        "ties_dropped": counts["ties_dropped"],
        "pairs_train": len(train_rows),
        "pairs_test": len(test_rows),
        "pairs_too_long": too_long,
        "pairs_too_long_fraction": too_long_fraction,
        "ratings_train": len(ratings),
        "ratings_too_long": counts["ratings_too_long"],
        "rankings_train": len(rankings),
        "rankings_tied_dropped": counts["rankings_tied_dropped"],
        "rankings_other_k_dropped": counts["rankings_other_k_dropped"],
        "rankings_too_long": counts["rankings_too_long"],
        "sft_train": len(sft_train),
        "sft_valid": len(sft_valid),
        "sft_too_long": counts["sft_too_long"],
        "prompts_train": len(prompts[0]),
        "prompts_test": len(prompts[1]),
        "mean_tokens_chosen": sum(lengths) / len(lengths),
        "max_tokens_chosen": max(lengths),
        "chat_template": float(has_chat_template(tokenizer)),
    }, extra={"source": source, "model": model["name_or_path"]})


STAGE = Stage("preprocess", run, seed=lambda config, inputs: config["data"]["seed"],
              description=__doc__.splitlines()[0])

if __name__ == "__main__":
    STAGE.main()
