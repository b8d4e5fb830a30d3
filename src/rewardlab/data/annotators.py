"""Simulated annotators: every label set comes from the same gold reward (rlhf-reference.md §4.4), through one
noise model, so that reward-model losses are compared on equal information.

All labels are drawn from one pool of SFT samples (K per prompt) and the gold reward R*. One annotator with
temperature τ and flip rate ε labels every shape; "equal information" means that the pairwise order each label
set implies (a pair's label; every two responses of a ranking; every two rated responses of a prompt) agrees
with the gold order equally often in expectation, (1 − ε)·A + ε·(1 − A) with A = E σ(|ΔR*|/τ):

* pairs: a Bradley–Terry annotator, p* = σ((R*(a) − R*(b))/τ), then a flip with probability ε, and a
  Llama-2 preference-strength bin from the quartiles of |ΔR*| (margins small 0, 1/3, 2/3, 1 or large 0–3);
* rankings: Plackett–Luce by the Gumbel trick, ordering by R*(y_k)/τ + G_k, G_k ∼ Gumbel(0, 1), which puts
  exactly σ(ΔR*/τ) on each implied pair; the flip is the whole ranking reversed with probability ε, which flips
  each implied pair with probability ε;
* ratings: a scalar rating R* + τ·G (Gumbel again, so two ratings order as σ(ΔR*/τ)), negated for the whole
  prompt with probability ε; and HelpSteer-style Likert scores per attribute,
  L_j = clip(round(a_j + b_j·R*_j + N(0, σ²)), 0, 4), a_j, b_j fitted so the pool spans 0–4, with σ found by
  bisection so the attributes' fixed combination matches A (rounding makes exact equality impossible at small τ:
  the audit reports what it reaches), and the prompt's scales reversed (L → 4 − L) with probability ε;
* τ = 0 is the noise-free limit: p* = 1, 0 or ½ by the sign of ΔR*, rankings sort by R* (Gumbel noise
  only breaks gold ties), so with ε = 0 every label follows the gold order.

``audit`` measures, per label set, how many pairwise comparisons it implies and how often they agree with the
gold order.

Pure functions over plain records; no I/O.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

STRENGTHS = ("negligible", "slightly", "better", "significantly")
MARGINS = {"small": (0.0, 1 / 3, 2 / 3, 1.0), "large": (0.0, 1.0, 2.0, 3.0)}
# HelpSteer2 attributes and the gold component each one rates. "verbosity" rates how badly a response
# overruns or fails to end (the negated ending term); "complexity" counts distinct adjectives and carries
# no weight in the scalar reward.
ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
ATTRIBUTE_SOURCE = {"helpfulness": "sentiment", "correctness": "grammar", "coherence": "topicality",
                    "complexity": "adjectives", "verbosity": "overrun"}
ATTRIBUTE_SIGN = {"helpfulness": 1.0, "correctness": 1.0, "coherence": 1.0, "complexity": 0.0, "verbosity": -1.0}


@dataclass
class PoolItem:
    """One prompt with K sampled responses, their gold rewards and gold components."""

    prompt: str
    responses: list[str]
    gold: list[float]
    components: list[dict[str, float]]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def preference_probability(gold_a: float, gold_b: float, temperature: float) -> float:
    """p* = σ((R*(a) − R*(b))/τ); at τ = 0 its limit, 1, 0 or ½ (a gold tie)."""
    if temperature == 0:
        return 0.5 if gold_a == gold_b else float(gold_a > gold_b)
    return sigmoid((gold_a - gold_b) / temperature)


def bt_label(gold_a: float, gold_b: float, temperature: float, flip_rate: float,
             rng: random.Random) -> tuple[bool, float]:
    """(a preferred?, p*) from a Bradley–Terry annotator with temperature τ and flip rate ε."""
    p_star = preference_probability(gold_a, gold_b, temperature)
    prefers_a = rng.random() < p_star
    if rng.random() < flip_rate:
        prefers_a = not prefers_a
    return prefers_a, p_star


def strength_edges(gaps: Sequence[float]) -> list[float]:
    """Quartile edges of |ΔR*| that bin pairs into the four Llama-2 strengths."""
    ordered = sorted(gaps)
    if not ordered:
        return [0.0, 0.0, 0.0]
    return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.25, 0.5, 0.75)]


def strength(gap: float, edges: Sequence[float]) -> str:
    return STRENGTHS[bisect.bisect_right(list(edges), gap)]


def label_pairs(pool: Sequence[PoolItem], temperature: float, flip_rate: float, margin_scale: str,
                rng: random.Random, edges: Sequence[float] | None = None) -> tuple[list[dict], list[float]]:
    """K/2 disjoint pairs per prompt, labelled by the BT annotator; identical responses are dropped.

    Returns (pairs, strength edges). Each pair: prompt, chosen, rejected, score_chosen/score_rejected
    (gold), p_star (the annotator's probability of preferring chosen, before flips), p_label (the probability
    that this label is given, flips included: (1 − ε)·p* + ε·(1 − p*)), strength, margin.
    """
    raw = []
    for item in pool:
        for i in range(0, len(item.responses) - 1, 2):
            a, b = item.responses[i], item.responses[i + 1]
            if a != b:
                raw.append((item.prompt, a, b, item.gold[i], item.gold[i + 1]))
    if edges is None:
        edges = strength_edges([abs(ga - gb) for *_, ga, gb in raw])
    pairs = []
    for prompt, a, b, gold_a, gold_b in raw:
        prefers_a, _ = bt_label(gold_a, gold_b, temperature, flip_rate, rng)
        (chosen, gc), (rejected, gr) = ((a, gold_a), (b, gold_b)) if prefers_a else ((b, gold_b), (a, gold_a))
        bin_name = strength(abs(gc - gr), edges)
        p_star = preference_probability(gc, gr, temperature)
        p_label = (1 - flip_rate) * p_star + flip_rate * (1 - p_star)
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "score_chosen": gc,
                      "score_rejected": gr, "p_star": p_star, "p_label": p_label, "strength": bin_name,
                      "margin": MARGINS[margin_scale][STRENGTHS.index(bin_name)]})
    return pairs, list(edges)


def gumbel(rng: random.Random) -> float:
    return -math.log(-math.log(max(rng.random(), 1e-300)))


def label_rankings(pool: Sequence[PoolItem], temperature: float, rng: random.Random,
                   flip_rate: float = 0.0) -> list[dict]:
    """A Plackett–Luce ranking of each prompt's K responses: argsort of R*/τ + Gumbel noise, best first,
    reversed with probability ε (the pair labels' flip, for a whole ranking).

    At τ = 0 the order is R* itself; the Gumbel draws only break gold ties.
    """
    rankings = []
    for item in pool:
        if len(set(item.responses)) < 2:
            continue
        noise = [gumbel(rng) for _ in item.gold]
        keys = list(zip(item.gold, noise)) if temperature == 0 else [g / temperature + n for g, n in
                                                                     zip(item.gold, noise)]
        order = sorted(range(len(keys)), key=lambda k: keys[k], reverse=True)
        if rng.random() < flip_rate:
            order.reverse()
        rankings.append({"prompt": item.prompt, "responses": item.responses, "order": order, "gold": item.gold})
    return rankings


def attribute_value(attribute: str, components: dict[str, float]) -> float:
    source = ATTRIBUTE_SOURCE[attribute]
    if source == "overrun":
        return -components["ending"]
    return components[source]


@dataclass(frozen=True)
class LikertScale:
    """L = clip(round(a + b·v + noise), 0, 4) for one attribute."""

    a: float
    b: float

    def rate(self, value: float, noise: float) -> int:
        return int(min(4, max(0, round(self.a + self.b * value + noise))))


def fit_scales(pool: Sequence[PoolItem]) -> dict[str, LikertScale]:
    """a_j, b_j so the pool's 5th–95th percentiles of each attribute map onto 0–4."""
    scales = {}
    for attribute in ATTRIBUTES:
        values = sorted(attribute_value(attribute, c) for item in pool for c in item.components)
        lo, hi = values[int(0.05 * (len(values) - 1))], values[int(0.95 * (len(values) - 1))]
        if hi - lo < 1e-9:
            lo, hi = values[0], values[-1] if values[-1] > values[0] else values[0] + 1.0
        b = 4.0 / (hi - lo)
        scales[attribute] = LikertScale(a=-b * lo, b=b)
    return scales


def combination_weights(scales: dict[str, LikertScale]) -> tuple[list[float], float]:
    """(w, c) with scalar = Σ_j w_j·L_j + c = Σ_j s_j·(L_j − a_j)/b_j: the fixed linear combination of attribute
    ratings that estimates R* (each Likert scale inverted, signed by its attribute's direction)."""
    weights = [ATTRIBUTE_SIGN[a] / scales[a].b for a in ATTRIBUTES]
    offset = -sum(ATTRIBUTE_SIGN[a] * scales[a].a / scales[a].b for a in ATTRIBUTES)
    return weights, offset


def bt_agreement(pool: Sequence[PoolItem], temperature: float, flip_rate: float) -> float:
    """The expected gold agreement of a pairwise label, (1 − ε)·A + ε·(1 − A), A = mean σ(|ΔR*|/τ) over every
    two responses of a prompt with different gold rewards (1 at τ = 0)."""
    probs = [preference_probability(max(a, b), min(a, b), temperature)
             for item in pool for a, b in itertools.combinations(item.gold, 2) if a != b]
    base = sum(probs) / len(probs) if probs else 1.0
    return (1 - flip_rate) * base + flip_rate * (1 - base)


def implied_agreement(groups: Sequence[tuple[Sequence[float], Sequence[float]]]) -> tuple[int, float]:
    """(comparisons, agreement): over every two items of a group with different gold, how often the labelled
    score orders them as the gold does (a tied score counts ½)."""
    n, agree = 0, 0.0
    for scores, gold in groups:
        for i, j in itertools.combinations(range(len(gold)), 2):
            if gold[i] != gold[j]:
                n += 1
                d = (scores[i] - scores[j]) * (gold[i] - gold[j])
                agree += 1.0 if d > 0 else 0.5 if d == 0 else 0.0
    return n, agree / max(1, n)


def rate_attributes(item: PoolItem, scales: dict[str, LikertScale], noise_std: float, reverse: bool,
                    rng: random.Random) -> list[dict[str, int]]:
    rated = []
    for components in item.components:
        ratings = {a: scales[a].rate(attribute_value(a, components), rng.gauss(0.0, noise_std)) for a in ATTRIBUTES}
        rated.append({a: 4 - v for a, v in ratings.items()} if reverse else ratings)
    return rated


def combination(ratings: dict[str, float], weights: Sequence[float], offset: float) -> float:
    return sum(w * ratings[a] for w, a in zip(weights, ATTRIBUTES)) + offset


def calibrate_attribute_noise(pool: Sequence[PoolItem], scales: dict[str, LikertScale], target: float,
                              seed: str, iterations: int = 20) -> float:
    """σ of the Likert noise whose rated combination agrees with the gold order as often as ``target`` (before
    flips), by bisection on [0, 8] with one seeded stream per trial (deterministic)."""
    weights, offset = combination_weights(scales)

    def agreement(sigma: float) -> float:
        rng = random.Random(f"{seed}-{sigma!r}")
        groups = [([combination(r, weights, offset) for r in rate_attributes(item, scales, sigma, False, rng)],
                   item.gold) for item in pool]
        return implied_agreement(groups)[1]

    low, high = 0.0, 8.0
    if agreement(low) <= target:
        return low
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if agreement(mid) > target else (low, mid)
    return 0.5 * (low + high)


def label_ratings(pool: Sequence[PoolItem], scales: dict[str, LikertScale], noise_std: float,
                  rng: random.Random, temperature: float = 1.0, flip_rate: float = 0.0) -> list[dict]:
    """HelpSteer2-style rows: prompt, response, five 0–4 attribute ratings, the scalar ``rating`` R* + τ·G, the
    gold reward and ``group`` (the pool item: the K responses rated together); a group's ratings are reversed
    together with probability ε."""
    rows = []
    for index, item in enumerate(pool):
        reverse = rng.random() < flip_rate
        attributes = rate_attributes(item, scales, noise_std, reverse, rng)
        for response, gold, ratings in zip(item.responses, item.gold, attributes):
            rating = gold + (temperature * gumbel(rng) if temperature > 0 else 0.0)
            rows.append({"prompt": item.prompt, "response": response, **ratings,
                         "rating": -rating if reverse else rating, "gold": gold, "group": index})
    return rows


def audit(pairs: Sequence[dict], rankings: Sequence[dict], ratings: Sequence[dict], scales: dict[str, LikertScale],
          target: float) -> dict[str, dict[str, float]]:
    """Per label set: the pairwise comparisons it implies and their agreement with the gold order."""
    weights, offset = combination_weights(scales)
    decided = [p for p in pairs if p["score_chosen"] != p["score_rejected"]]
    by_prompt: dict[int, list[dict]] = {}
    for row in ratings:
        by_prompt.setdefault(row["group"], []).append(row)
    ranked = [([-r["order"].index(k) for k in range(len(r["gold"]))], r["gold"]) for r in rankings]
    shapes = {
        "pairs": (len(decided), sum(p["score_chosen"] > p["score_rejected"] for p in decided) / max(1, len(decided))),
        "rankings": implied_agreement(ranked),
        "ratings": implied_agreement([([r["rating"] for r in rows], [r["gold"] for r in rows])
                                      for rows in by_prompt.values()]),
        "rating_attributes": implied_agreement([([combination(r, weights, offset) for r in rows],
                                                 [r["gold"] for r in rows]) for rows in by_prompt.values()]),
    }
    return {"target": {"comparisons": 0, "gold_agreement": target},
            **{k: {"comparisons": n, "gold_agreement": a} for k, (n, a) in shapes.items()}}
