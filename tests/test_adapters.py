"""Adapters from real dataset files (hand-written fixtures in tests/fixtures/datasets/) to canonical records.
Expected values are read off the fixture rows by hand."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import pytest

from rewardlab.data.adapters import read_records
from rewardlab.data.readers.hh_rlhf import split_hh_transcript
from rewardlab.data.records import BadRow

FIXTURES = Path(__file__).parent / "fixtures/datasets"


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_hh_rlhf_prompt_is_the_shared_prefix_up_to_the_last_assistant_turn():
    counts = Counter()
    pairs = read_records(FIXTURES / "hh_rlhf.jsonl", "hh_rlhf", counts=counts)
    assert counts == Counter(rows_read=7, ties_dropped=1)
    first = pairs[0]
    assert first["prompt"] == [user("How do I boil an egg?")]
    assert first["chosen"] == [assistant("Place it in boiling water for 9 minutes.")]
    assert first["rejected"] == [assistant("I don't know.")]
    multi = pairs[1]  # earlier turns stay in the prompt
    assert multi["prompt"] == [user("Hi"), assistant("Hello! How can I help?"), user("Name a fruit.")]
    assert (multi["chosen"], multi["rejected"]) == ([assistant("An apple.")], [assistant("A carrot.")])
    shared_start = pairs[2]  # responses sharing "One, two" are not cut into the prompt
    assert shared_start["chosen"] == [assistant("One, two, three.")]
    assert shared_start["rejected"] == [assistant("One, two.")]
    assert pairs[3]["chosen"] == [assistant("こんにちは (konnichiwa).")]
    assert pairs[4]["rejected"] == [assistant("Thanks.")]


def test_hh_rlhf_reads_gzip(tmp_path):
    packed = tmp_path / "train.jsonl.gz"
    with open(FIXTURES / "hh_rlhf.jsonl", "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert read_records(packed, "hh_rlhf") == read_records(FIXTURES / "hh_rlhf.jsonl", "hh_rlhf")


def test_split_hh_transcript():
    assert split_hh_transcript("\n\nHuman: a\n\nAssistant: b\n\nHuman: c") == [user("a"), assistant("b"), user("c")]


def test_ultrafeedback_scores_give_the_margin_and_ties_are_dropped(tmp_path):
    counts = Counter()
    pairs = read_records(FIXTURES / "ultrafeedback_binarized.jsonl", "ultrafeedback_binarized", counts=counts)
    assert counts == Counter(rows_read=5, ties_dropped=1)
    assert pairs[0]["prompt"] == [user("Write a haiku about rain.")]
    assert pairs[0]["margin"] == 5.5 and pairs[0]["score_chosen"] == 8.5
    assert pairs[3]["chosen"] == [assistant("Γειά σου!")]
    # The same rows as Parquet read the same.
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rewardlab.data.adapters import iter_rows

    rows = [row for _, row in iter_rows(FIXTURES / "ultrafeedback_binarized.jsonl")]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train_prefs.parquet")
    assert read_records(tmp_path / "train_prefs.parquet", "ultrafeedback_binarized") == pairs


def test_tldr_uses_the_trl_template_choice_and_confidence():
    pairs = read_records(FIXTURES / "tldr_comparisons.json", "tldr_comparisons")
    assert len(pairs) == 5
    assert pairs[0]["prompt"] == [user("SUBREDDIT: r/relationships\n\nTITLE: Title 1\n\nPOST: My friend forgot my "
                                       "birthday.\nI feel sad.\n\nTL;DR:")]
    assert pairs[0]["chosen"] == [assistant(" Friend forgot birthday, I'm sad.")]
    assert pairs[2]["chosen"] == [assistant(" Daily fights over chores.")]  # choice 1
    assert pairs[2]["split"] == "valid1" and pairs[2]["margin"] == 9.0


def test_helpsteer2_ratings_and_preference_pairs():
    ratings = read_records(FIXTURES / "helpsteer2.jsonl", "helpsteer2")
    assert ratings[0]["ratings"] == {"helpfulness": 4.0, "correctness": 4.0, "coherence": 4.0, "complexity": 1.0,
                                     "verbosity": 1.0}
    assert ratings[3]["response"] == [assistant("A cat.")]
    counts = Counter()
    pairs = read_records(FIXTURES / "helpsteer2_preference.jsonl", "helpsteer2", counts=counts)
    assert counts["ties_dropped"] == 1 and len(pairs) == 3
    assert pairs[0]["chosen"] == [assistant("42.")] and pairs[0]["margin"] == 3.0  # positive: response_2
    assert pairs[1]["chosen"] == [assistant("There once was a cat…")] and pairs[1]["margin"] == 2.0
    assert pairs[2]["split"] == "validation"


def test_shp_label_picks_the_comment_and_log_ratio_is_the_margin():
    pairs = read_records(FIXTURES / "shp.jsonl", "shp")
    assert pairs[0]["chosen"] == [assistant("Rayleigh scattering.")]
    assert pairs[1]["chosen"] == [assistant("Egyptian workers.")]  # labels 0: B preferred
    assert pairs[1]["score_chosen"] == 40.0 and pairs[1]["score_rejected"] == 4.0
    assert math.isclose(pairs[2]["margin"], math.log(3.0))
    assert pairs[0]["source"] == "shp/askscience_train"


def test_trl_standard_conversational_implicit_and_explicit():
    standard = read_records(FIXTURES / "trl_standard.jsonl", "trl")
    assert standard[0]["prompt"] == [user("The sky is")] and standard[0]["chosen"] == [assistant(" blue.")]
    assert standard[2]["margin"] == 2.0
    implicit = read_records(FIXTURES / "trl_conversational_implicit.jsonl", "trl")
    assert implicit[0]["prompt"] == [user("What color is the sky?")]
    assert implicit[1]["prompt"] == [{"role": "system", "content": "Be brief."}, user("Largest ocean?")]
    assert implicit[1]["rejected"] == [assistant("The Atlantic, probably.")]
    explicit = read_records(FIXTURES / "trl_conversational_explicit.jsonl", "trl")
    assert explicit[0]["prompt"] == implicit[0]["prompt"] and explicit[0]["chosen"] == implicit[0]["chosen"]


def test_trl_standard_implicit_prompt_and_scores_as_trl_and_ultrafeedback_read_them(tmp_path):
    """The fourth TRL layout (strings, no prompt column): the prompt is the shared start, cut before the space
    that starts the responses (TRL's extract_prompt). Scores are read when present: their difference is the
    margin unless the row gives one, and equal scores are a tie, dropped and counted as in ultrafeedback."""
    from trl import extract_prompt

    rows = [{"chosen": "The sky is blue.", "rejected": "The sky is green.", "score_chosen": 8, "score_rejected": 3},
            {"chosen": "Two plus two is four.", "rejected": "Two plus two is five.", "score_chosen": 5,
             "score_rejected": 5},
            {"chosen": "Pick a: yes", "rejected": "Pick a: no", "score_chosen": 2, "score_rejected": 1, "margin": 0.5}]
    path = tmp_path / "implicit.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = Counter()
    pairs = read_records(path, "trl", counts=counts)
    assert counts["ties_dropped"] == 1 and len(pairs) == 2
    for pair, row in zip(pairs, [rows[0], rows[2]]):
        trl_split = extract_prompt(dict(row))
        assert pair["prompt"] == [user(trl_split["prompt"])]
        assert pair["chosen"] == [assistant(trl_split["chosen"])]
        assert pair["rejected"] == [assistant(trl_split["rejected"])]
    assert pairs[0]["prompt"] == [user("The sky is")] and pairs[0]["chosen"] == [assistant(" blue.")]
    assert (pairs[0]["margin"], pairs[0]["score_chosen"], pairs[0]["score_rejected"]) == (5.0, 8.0, 3.0)
    assert pairs[1]["margin"] == 0.5  # TRL's margin column wins over the score difference


def test_malformed_rows_name_file_and_row_or_are_skipped_and_counted():
    path = FIXTURES / "hh_rlhf_malformed.jsonl"
    with pytest.raises(BadRow, match=r"hh_rlhf_malformed.jsonl: row 2: not valid JSON"):
        read_records(path, "hh_rlhf")
    counts = Counter()
    pairs = read_records(path, "hh_rlhf", on_bad_row="skip", counts=counts)
    assert counts == Counter(rows_read=2, rows_skipped=2)
    assert [p["chosen"] for p in pairs] == [[assistant("Place it in boiling water for 9 minutes.")], [assistant("4.")]]


def test_missing_field_error_names_the_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n')
    with pytest.raises(BadRow, match=r"bad.jsonl: row 2: missing field 'rejected'"):
        read_records(path, "trl")


def test_unknown_format_and_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="data.source.format"):
        read_records(FIXTURES / "shp.jsonl", "reddit")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        read_records(tmp_path / "nope.jsonl", "shp")
