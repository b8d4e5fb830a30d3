"""Summarize: a SentiGram document to summarise, with reference summaries (rlhf-reference.md §4.7, Task C).

A document is three one-clause SentiGram sentences about one topic. Two share the document's verdict v (+1 or
−1) and its salient aspect a (the one aspect noun said twice); the third is off-verdict (neutral or −v) about
another aspect. The prompt is ``<bos> topic: T <sep> <document> summary:``; a good summary names the topic (or
an aspect of it) and the verdict briefly, grammatically, with a proper ending: ``the plot was great .``.

Gold reward R*(x, y) = Σ_t g_t, per-token credit (a careful reader's judgement; §4.7):

* verdict — the first adjective with polarity v earns +1; each further one costs ``padding_penalty`` (0.25:
  a summary says the verdict once); one of polarity −v costs −1 (unfaithful);
* topic — the first noun of the document's topic (T itself or one of its aspects) +0.5; an off-topic noun −1;
* coverage — the first mention of the salient aspect a +0.5;
* repetition — a repeated adjective or noun −``repeat_penalty`` (0.5);
* grammar — each token SentiGram's automaton rejects −1 (T and its aspects both parse as nouns);
* ending (on ``<eos>``) — +0.5 after "."; −``length_penalty``·max(0, n − L*) with L* = ``length_target``
  (8 in config/experiments/summarize.yaml); no ``<eos>``: −``missing_eos_penalty`` on the last token.

References y* come from a deterministic generator seeded by the prompt, with the variation human summaries
have: the aspect or the topic, an adjective copied from the document or a synonym, an optional intensifier, and
three times in ten a two-clause summary past L*. So ROUGE against y* and the gold disagree. The planted ways to
game ROUGE lower the gold: copying document sentences (the off-verdict adjective, broken grammar across
sentences, length) and repeating reference words (repetition).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rewardlab.tasks import sentigram as S
from rewardlab.tasks.registry import TASKS, Task

SUMMARY_MARKER = "summary:"
VOCAB: list[str] = [*S.VOCAB, SUMMARY_MARKER]
NOUN_LIKE = {**S.NOUN_TOPIC, **{topic: topic for topic in S.TOPICS}}  # the topic word is a noun in a summary


@dataclass(frozen=True)
class GoldConfig:
    length_target: int = 8
    length_penalty: float = 0.5
    repeat_penalty: float = 0.5
    missing_eos_penalty: float = 1.0
    topic_bonus: float = 0.5
    coverage_bonus: float = 0.5
    unfaithful_penalty: float = 1.0
    padding_penalty: float = 0.25
    off_topic_penalty: float = 1.0
    grammar_penalty: float = 1.0
    proper_ending_bonus: float = 0.5


@dataclass(frozen=True)
class Document:
    topic: str
    verdict: int  # +1 or −1
    salient: str  # the aspect noun said twice
    sentences: tuple[tuple[str, ...], ...]


def _polarity(token: str) -> int:
    return 1 if token in S.POSITIVE else -1 if token in S.NEGATIVE else 0


def _category(token: str) -> str:
    return S.NOUN if token in NOUN_LIKE else S.category(token)


def parse_document(prompt: Sequence[str]) -> Document:
    """Topic, verdict (sign of the sentences' polarity sum) and salient aspect (the noun said most) of a prompt."""
    topic, body = S.parse_prompt(prompt)
    body = [t for t in body if t != SUMMARY_MARKER]
    sentences, current = [], []
    for token in body:
        current.append(token)
        if token == S.PERIOD:
            sentences.append(tuple(current))
            current = []
    polarity = sum(_polarity(t) for t in body)
    nouns = [t for t in body if t in S.NOUN_TOPIC]
    salient = max(nouns, key=lambda n: (nouns.count(n), -nouns.index(n))) if nouns else ""
    return Document(topic or "", 1 if polarity >= 0 else -1, salient, tuple(sentences))


def gold_component_credits(prompt: Sequence[str], response: Sequence[str],
                           cfg: GoldConfig = GoldConfig()) -> list[dict[str, float]]:
    """Per-token credits by component (verdict, topic, coverage, repetition, grammar, ending); they sum to g_t.
    Tokens after the first ``<eos>`` are ignored."""
    doc = parse_document(prompt)
    fsa, previous, matching = S.EXPECT_DET, "", 0
    seen: set[str] = set()
    topic_named = covered = False
    credits: list[dict[str, float]] = []
    for token in response:
        credit = dict.fromkeys(COMPONENTS, 0.0)
        if token == S.EOS:
            credit["ending"] = S.ending_credit(previous, len(credits), cfg)
            credits.append(credit)
            return credits
        cat = _category(token)
        fsa, rejected = S.advance(fsa, cat)
        if rejected:
            credit["grammar"] -= cfg.grammar_penalty
        if cat in (S.NOUN, S.ADJ) and token in seen:
            credit["repetition"] -= cfg.repeat_penalty
        elif cat == S.NOUN:
            if NOUN_LIKE[token] != doc.topic:
                credit["topic"] -= cfg.off_topic_penalty
            elif not topic_named:
                credit["topic"] += cfg.topic_bonus
                topic_named = True
            if token == doc.salient and not covered:
                credit["coverage"] += cfg.coverage_bonus
                covered = True
        elif cat == S.ADJ:
            polarity = _polarity(token)
            if polarity == doc.verdict:
                matching += 1
                credit["verdict"] += 1.0 if matching == 1 else -cfg.padding_penalty
            elif polarity == -doc.verdict:
                credit["verdict"] -= cfg.unfaithful_penalty
        if cat in (S.NOUN, S.ADJ):
            seen.add(token)
        previous = token
        credits.append(credit)
    return S.close_unterminated(credits, cfg, dict.fromkeys(COMPONENTS, 0.0))


COMPONENTS = ("verdict", "topic", "coverage", "repetition", "grammar", "ending")


def gold_credits(prompt: Sequence[str], response: Sequence[str], cfg: GoldConfig = GoldConfig()) -> list[float]:
    """Per-token gold credits g_t of a summary; R* = Σ_t g_t."""
    return [sum(c.values()) for c in gold_component_credits(prompt, response, cfg)]


def gold_reward(prompt: Sequence[str], response: Sequence[str], cfg: GoldConfig = GoldConfig()) -> float:
    return float(sum(gold_credits(prompt, response, cfg)))


# The annotators rate SentiGram's four components (rewardlab.data.annotators): the verdict is the summary's
# sentiment, topic and coverage its topicality, grammar and repetition its correctness; the ending is the ending.
ANNOTATED = {"verdict": "sentiment", "topic": "topicality", "coverage": "topicality", "grammar": "grammar",
             "repetition": "grammar", "ending": "ending"}


def gold_components(prompt: Sequence[str], response: Sequence[str], cfg: GoldConfig = GoldConfig()) -> dict[str, float]:
    """R* split into the annotated components (sentiment, grammar, topicality, ending); they sum to R*."""
    totals = dict.fromkeys(S.COMPONENTS, 0.0)
    for credit in gold_component_credits(prompt, response, cfg):
        for key, value in credit.items():
            totals[ANNOTATED[key]] += value
    return totals


# --------------------------------------------------------------------------------------------------
# Documents, prompts and references.


def _sentence(rng: random.Random, topic: str, noun: str, polarity: int) -> list[str]:
    pool = {1: S.POSITIVE, -1: S.NEGATIVE, 0: S.NEUTRAL}[polarity]
    words = [rng.choice(S.DETERMINERS), noun, rng.choice(S.VERBS)]
    if rng.random() < 0.3:
        words.append(rng.choice(S.INTENSIFIERS))
    return [*words, rng.choice(pool), S.PERIOD]


def sample_document_tokens(rng: random.Random, held_out: bool | None = None) -> list[str]:
    """A prompt: header, three sentences (two with the verdict about the salient aspect), ``summary:``. With
    ``held_out`` set, redrawn until its opening is (True) or is not (False) a held-out one."""
    while True:
        topic = rng.choice(S.TOPICS)
        verdict = rng.choice([1, -1])
        salient, other = rng.sample(S.TOPIC_NOUNS[topic], 2)
        sentences = [_sentence(rng, topic, salient, verdict), _sentence(rng, topic, salient, verdict),
                     _sentence(rng, topic, other, rng.choice([0, -verdict]))]
        rng.shuffle(sentences)
        prompt = S.header(topic) + [t for s in sentences for t in s] + [SUMMARY_MARKER]
        if held_out is None or S.is_held_out(prompt) == held_out:
            return prompt


def reference(prompt: Sequence[str]) -> list[str]:
    """The reference summary y* of a prompt (without ``<eos>``): deterministic, seeded by the prompt's text."""
    doc = parse_document(prompt)
    rng = random.Random(hashlib.sha256(" ".join(prompt).encode()).hexdigest())
    pool = S.POSITIVE if doc.verdict > 0 else S.NEGATIVE
    used = [t for s in doc.sentences for t in s if _polarity(t) == doc.verdict]
    adjective = rng.choice(used) if used and rng.random() < 0.5 else rng.choice(pool)
    noun = doc.salient if rng.random() < 0.7 else doc.topic
    words = [rng.choice(["the", "this", "its"]), noun, rng.choice(S.VERBS)]
    if rng.random() < 0.3:
        words.append(rng.choice(S.INTENSIFIERS))
    words.append(adjective)
    if rng.random() < 0.3:  # a longer summary, as people write too: a second clause about the other noun
        second = doc.topic if noun != doc.topic else doc.salient
        words += ["and", "the", second, rng.choice(S.VERBS), rng.choice([a for a in pool if a != adjective])]
    return [*words, S.PERIOD]


def sample_document(rng: random.Random) -> tuple[list[str], list[str]]:
    """An SFT pair (prompt, reference + ``<eos>``); one in twenty copies a document sentence instead (lead bias),
    a planted deviation the reward model sees rarely. Never a held-out opening."""
    prompt = sample_document_tokens(rng, held_out=False)
    summary = reference(prompt)
    if rng.random() < 0.05:
        summary = list(rng.choice(parse_document(prompt).sentences))
    return prompt, [*summary, S.EOS]


def sample_prompt(rng: random.Random, held_out: bool = False) -> list[str]:
    return sample_document_tokens(rng, held_out=held_out)


def gold_config(task: Mapping[str, Any]) -> GoldConfig:
    return S.gold_settings(GoldConfig, task)


TASKS.add("summarize", Task("summarize", VOCAB, S.SPECIALS, sample_document, sample_prompt, gold_config,
                            gold_credits, S.is_held_out, gold_components, reference=reference))
