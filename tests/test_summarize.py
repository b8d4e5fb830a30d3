"""The summarize task (rlhf-reference.md §4.7): its gold reward by hand, its references, the ROUGE-gaming
channels, ROUGE itself, the composite reward's parts, and the config error for ROUGE without references."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rewardlab import config as C
from rewardlab.evaluate import metrics as M
from rewardlab.evaluate.references import task_references
from rewardlab.models.tokenizer import build_word_tokenizer
from rewardlab.tasks import TASKS
from rewardlab.tasks import sentigram as S
from rewardlab.tasks import summarize as Z
from rewardlab.train.rl_reward import RewardSignal

ROOT = Path(__file__).resolve().parents[1]
# Verdict +1 (two positive sentences about the plot, the salient aspect), one negative one about the cast.
PROMPT = ("<bos> topic: movie <sep> the plot was great . a cast felt dull . this plot seemed very lovely . "
          "summary:").split()


def gold(summary: str, **cfg) -> float:
    return Z.gold_reward(PROMPT, summary.split(), Z.GoldConfig(**cfg))


def test_the_document_is_parsed_for_verdict_and_salient_aspect():
    doc = Z.parse_document(PROMPT)
    assert (doc.topic, doc.verdict, doc.salient) == ("movie", 1, "plot")
    assert [" ".join(s) for s in doc.sentences] == ["the plot was great .", "a cast felt dull .",
                                                   "this plot seemed very lovely ."]


def test_hand_computed_credits_sum_to_the_gold_reward():
    # the(0) plot(+0.5 topic, +0.5 salient) was(0) great(+1 verdict) .(0) <eos>(+0.5 proper ending, 4 ≤ L* = 8)
    summary = "the plot was great . <eos>".split()
    assert Z.gold_credits(PROMPT, summary) == pytest.approx([0, 1.0, 0, 1.0, 0, 0.5])
    assert Z.gold_reward(PROMPT, summary) == pytest.approx(2.5)
    # the movie (+0.5 topic, not the salient aspect) was dull (−1 unfaithful) and the soundtrack (topic already
    # named, 0) felt great (+1) and good (−0.25 padding, −1 grammar: a connector wants a clause) . : 12 tokens
    # before <eos> pay 0.5·(12 − 8) = 2 at the ending, +0.5 after "."
    long = "the movie was dull and the soundtrack felt great and good . <eos>".split()
    credits = Z.gold_credits(PROMPT, long)
    assert credits == pytest.approx([0, 0.5, 0, -1, 0, 0, 0, 0, 1, 0, -0.25 - 1, 0, 0.5 - 2.0])
    components = Z.gold_component_credits(PROMPT, long)
    assert [sum(c.values()) for c in components] == pytest.approx(credits)
    # The annotated projection keeps the total.
    assert sum(Z.gold_components(PROMPT, long).values()) == pytest.approx(sum(credits))


def test_off_topic_grammar_repetition_and_missing_eos_cost_what_the_docstring_says():
    assert gold("the taste was great . <eos>") == pytest.approx(-1 + 1 + 0.5)  # off-topic noun (food)
    assert gold("plot the was great . <eos>") == pytest.approx(2.5 - 3)  # plot, the, was: each out of place
    assert gold("the plot was great great . <eos>") == pytest.approx(2.5 - 0.5)  # a repeated adjective
    assert gold("the plot was great lovely superb . <eos>") == pytest.approx(2.5 - 0.5)  # padding, 2 × 0.25
    assert gold("the plot was great .") == pytest.approx(2.0 - 1.0)  # no <eos>: −1, no ending bonus


def test_rouge_gaming_channels_lower_the_gold():
    """The planted channels, over 300 documents: copying the document's adjectives into the reference (one of
    them off-verdict) and repeating the reference's words each lower the gold below the reference's on every
    document; on average ROUGE-L prefers either to the gold-optimal summary in other words, which the gold
    prefers by more than a point. (Measured: ROUGE-L 0.78 and 0.67 against 0.31; gold 0.28 and −2.39 against 2.5;
    the references themselves average 1.95, and copying the whole document 0.25 and −4.67.)"""
    task = TASKS.get("summarize")
    rng = random.Random(0)
    rouge = {"optimal": [], "copied": [], "repeated": []}
    golds = {"optimal": [], "copied": [], "repeated": []}
    for _ in range(300):
        prompt = task.sample_prompt(rng, False)
        reference = task.reference(prompt)
        doc = Z.parse_document(prompt)
        synonym = next(a for a in (S.POSITIVE if doc.verdict > 0 else S.NEGATIVE) if a not in reference)
        summaries = {
            "optimal": ["the", doc.salient, "was", synonym, S.PERIOD],
            "copied": reference[:-1] + [t for s in doc.sentences for t in s if t in Z.S._ADJECTIVES] + [S.PERIOD],
            "repeated": reference[:-1] + reference[:-1] + [S.PERIOD],
        }
        base = Z.gold_reward(prompt, [*reference, S.EOS])
        for name, summary in summaries.items():
            golds[name].append(Z.gold_reward(prompt, [*summary, S.EOS]))
            rouge[name].append(M.rouge([summary], [reference], "rougeL")[0])
            if name != "optimal":
                assert golds[name][-1] < base
    mean = {name: (sum(rouge[name]) / 300, sum(golds[name]) / 300) for name in rouge}
    assert mean["optimal"][1] == pytest.approx(2.5)
    for gamed in ("copied", "repeated"):
        assert mean[gamed][0] > mean["optimal"][0] + 0.2 and mean[gamed][1] < mean["optimal"][1] - 1


def test_references_are_deterministic_varied_and_not_the_gold_optimum():
    task = TASKS.get("summarize")
    rng = random.Random(1)
    prompts = [task.sample_prompt(rng, False) for _ in range(300)]
    references = [task.reference(p) for p in prompts]
    assert references == [task.reference(p) for p in prompts]
    assert len({len(r) for r in references}) >= 3  # one- and two-clause summaries, with and without intensifier
    golds = [Z.gold_reward(p, [*r, S.EOS]) for p, r in zip(prompts, references)]
    assert max(golds) == pytest.approx(2.5) and min(golds) < 2.0  # some references overrun L*
    assert all(g > 0 for g in golds)  # … yet every reference is a faithful summary


def test_held_out_documents_never_reach_training():
    task = TASKS.get("summarize")
    rng = random.Random(2)
    assert all(S.is_held_out(task.sample_prompt(rng, True)) for _ in range(50))
    assert not any(S.is_held_out(task.sample_document(rng)[0]) for _ in range(500))


def test_rouge_against_hand_values():
    candidate, reference = "the plot was really great .".split(), "the plot was great .".split()
    # unigrams: 4 of 5 candidate words in the reference (all 4 reference words): F1 = 2·0.8·1 / 1.8
    assert M.rouge([candidate], [reference], "rouge1")[0] == pytest.approx(8 / 9)
    # bigrams: the-plot, plot-was shared; 4 candidate and 3 reference bigrams: F1 = 2·(1/2)(2/3) / (7/6)
    assert M.rouge([candidate], [reference], "rouge2")[0] == pytest.approx(4 / 7)
    assert M.rouge([candidate], [reference], "rougeL")[0] == pytest.approx(8 / 9)  # LCS of 4
    assert M.rouge([["bad"]], [reference], "rougeL")[0] == 0.0


def test_composite_parts_against_hand_values():
    """r = rm·RM + rouge·ROUGE-L + fluency·mean log π_sft + diversity·distinct-2, each part computed by hand."""
    task = TASKS.get("summarize")
    tokenizer = build_word_tokenizer(task.vocab, task.special_tokens)
    prompt = tokenizer.convert_tokens_to_ids(PROMPT)
    reference = task.reference(PROMPT)
    texts = [[*reference, S.EOS], "the the the plot . <eos>".split()]
    responses = [tokenizer.convert_tokens_to_ids(t) for t in texts]
    signal = RewardSignal.__new__(RewardSignal)
    signal.references = task_references("summarize", tokenizer)
    signal.composite = {"rm": 0.5, "rouge": 2.0, "fluency": 0.1, "diversity": 3.0, "rouge_type": "rougeL",
                        "diversity_n": 2}
    proxy = torch.tensor([0.4, -1.2])
    signal.scorer = SimpleNamespace(normalised=lambda ids, mask, prompt_width=None: proxy)
    width = max(map(len, responses))
    mask = torch.tensor([[1.0] * len(r) + [0.0] * (width - len(r)) for r in responses])
    ref_logp = -torch.arange(1, width + 1, dtype=torch.float).repeat(2, 1) * mask
    rollout = SimpleNamespace(input_ids=None, attention_mask=None, prompt_width=None)
    got_proxy, rm_part, score, parts = signal.sequence_score(rollout, [prompt, prompt], responses, ref_logp, mask)
    rouge = [1.0, M.rouge([["the", "the", "the", "plot", "."]], [reference], "rougeL")[0]]
    fluency = [-(sum(range(1, len(r) + 1)) / len(r)) for r in responses]
    # distinct-2 of each response alone (ids, <eos> included): all bigrams distinct, then 3 distinct of 5
    distinct = [1.0, 4 / 5]
    expected = [0.5 * p + 2.0 * q + 0.1 * f + 3.0 * d for p, q, f, d in zip(proxy.tolist(), rouge, fluency, distinct)]
    assert torch.equal(got_proxy, proxy) and rm_part.tolist() == pytest.approx((0.5 * proxy).tolist())
    assert score.tolist() == pytest.approx(expected, abs=1e-6)
    assert parts["rouge"] == pytest.approx(sum(rouge) / 2)
    assert parts["score_diversity"] == pytest.approx(3.0 * sum(distinct) / 2)
    assert sum(v for k, v in parts.items() if k.startswith("score_")) == pytest.approx(sum(expected) / 2, abs=1e-6)


def test_a_rouge_weight_needs_references():
    base = C.load(ROOT / "config/config.yaml")
    bad = copy.deepcopy(base)
    bad["reward"]["composite"]["rouge"] = 0.5
    with pytest.raises(C.ConfigError, match=r"reward.composite.rouge: 0.5 but task 'sentigram' has no reference"):
        C.validate(bad)
    variant = copy.deepcopy(base)
    variant["policy"]["shaping_variants"] = {"rouge_only": {"shaping": "sparse", "composite": {"rm": 0, "rouge": 1}}}
    variant["policy"]["shapings"] = ["sparse", "rouge_only"]
    with pytest.raises(C.ConfigError, match=r"policy.shaping_variants.rouge_only.composite.rouge"):
        C.validate(copy.deepcopy(variant))
    variant["task"]["name"] = "summarize"
    C.validate(variant)  # the summarize task has references
    study = C.load(ROOT / "config/config.yaml", ROOT / "config/experiments/summarize.yaml")
    assert len(study["seeds"]) >= 5 and study["task"]["name"] == "summarize"
    assert C.run_composite(study["reward"]["composite"], study["policy"]["shaping_variants"]["rouge"]) == {
        "rm": 0, "rouge": 5, "fluency": 0.0, "diversity": 0.0, "rouge_type": "rougeL", "diversity_n": 2}


@pytest.mark.parametrize("stage", ["policy", "evaluate"])
def test_references_come_from_each_stages_own_config_slice(stage):
    """The policy and evaluation stages see only their slice of the config (no ``data`` section for the toy
    tasks): the summarize task's references are found from it, and SentiGram has none."""
    from rewardlab import dag
    from rewardlab.evaluate.references import references

    task = TASKS.get("summarize")
    tokenizer = build_word_tokenizer(task.vocab, task.special_tokens)
    study = C.load(ROOT / "config/config.yaml", ROOT / "config/experiments/summarize.yaml")
    found = references(dag.stage_slice(study, stage), tokenizer, [], "prompts_test.jsonl")
    prompt = tokenizer.convert_tokens_to_ids(PROMPT)
    assert found([prompt]) == [task.reference(PROMPT)]
    assert found.words(tokenizer.convert_tokens_to_ids("the plot was great . <eos> <pad>".split())) == \
        "the plot was great .".split()
    default = C.load(ROOT / "config/config.yaml")
    assert references(dag.stage_slice(default, stage), tokenizer, [], "prompts_test.jsonl") is None
