"""Simulated annotators (rlhf-reference.md §4.4): the label distributions they claim, checked by sampling."""

from __future__ import annotations

import math
import random

import pytest

from rewardlab.data import annotators as A


def item(gold: list[float]) -> A.PoolItem:
    return A.PoolItem(prompt="p", responses=[f"r{i}" for i in range(len(gold))], gold=gold,
                      components=[{} for _ in gold])


def test_noise_free_pairs_follow_the_gold_order():
    draw = random.Random(0)
    pool = [item([draw.uniform(-3, 3) for _ in range(4)]) for _ in range(200)]
    pool.append(item([1.0, 1.0, 2.0, 0.5]))  # a gold tie: p* = ½
    pairs, _ = A.label_pairs(pool, 0.0, 0.0, "small", random.Random(0))
    decided = [p for p in pairs if p["score_chosen"] != p["score_rejected"]]
    assert len(decided) == len(pairs) - 1
    assert all(p["score_chosen"] > p["score_rejected"] and p["p_star"] == 1.0 for p in decided)
    assert [p["p_star"] for p in pairs if p["score_chosen"] == p["score_rejected"]] == [0.5]


@pytest.mark.parametrize(("delta", "temperature"), [(1.0, 1.0), (0.5, 0.25), (-2.0, 4.0)])
def test_bradley_terry_annotator_prefers_with_probability_sigmoid_delta_over_tau(delta, temperature):
    rng, n = random.Random(1), 20000
    hits = sum(A.bt_label(delta, 0.0, temperature, 0.0, rng)[0] for _ in range(n))
    p = 1 / (1 + math.exp(-delta / temperature))
    assert abs(hits / n - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert A.bt_label(delta, 0.0, temperature, 0.0, rng)[1] == pytest.approx(p)


def test_flip_rate_flips_that_fraction_of_noise_free_labels():
    rng, n, eps = random.Random(2), 20000, 0.25
    flipped = sum(not A.bt_label(1.0, 0.0, 0.0, eps, rng)[0] for _ in range(n))
    assert abs(flipped / n - eps) < 4 * math.sqrt(eps * (1 - eps) / n)


def test_plackett_luce_rankings_by_gumbel_trick():
    # K = 2: P(first ranked first) = σ(Δ/τ), the Bradley–Terry probability.
    rng, n = random.Random(3), 20000
    rankings = A.label_rankings([item([0.7, 0.0])] * n, 0.5, rng)
    p = 1 / (1 + math.exp(-0.7 / 0.5))
    share = sum(r["order"][0] == 0 for r in rankings) / n
    assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / n)
    # K = 3: P(order a, b, c) = e^{a}/(e^a+e^b+e^c) · e^{b}/(e^b+e^c).
    gold = [1.0, 0.0, -0.5]
    rankings = A.label_rankings([item(gold)] * n, 1.0, rng)
    e = [math.exp(g) for g in gold]
    p = e[0] / sum(e) * e[1] / (e[1] + e[2])
    share = sum(r["order"] == [0, 1, 2] for r in rankings) / n
    assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_noise_free_rankings_sort_by_gold_and_break_ties_at_random():
    rankings = A.label_rankings([item([0.2, 3.0, -1.0, 0.2])] * 400, 0.0, random.Random(4))
    orders = {tuple(r["order"]) for r in rankings}
    assert orders == {(1, 0, 3, 2), (1, 3, 0, 2)}


def test_likert_scales_span_zero_to_four_and_the_combination_inverts_them():
    rng = random.Random(5)
    components = [{"sentiment": rng.gauss(0, 2), "grammar": rng.gauss(0, 1), "topicality": rng.gauss(0, 1),
                   "adjectives": rng.randint(0, 5), "ending": rng.gauss(0, 1)} for _ in range(1000)]
    pool = [A.PoolItem("p", [str(i)], [0.0], [c]) for i, c in enumerate(components)]
    scales = A.fit_scales(pool)
    for attribute, scale in scales.items():
        values = sorted(A.attribute_value(attribute, c) for c in components)
        assert scale.a + scale.b * values[int(0.05 * 999)] == pytest.approx(0.0, abs=1e-9)
        assert scale.a + scale.b * values[int(0.95 * 999)] == pytest.approx(4.0, abs=1e-9)
    ratings = {"helpfulness": 3, "correctness": 1, "coherence": 4, "complexity": 2, "verbosity": 0}
    weights, offset = A.combination_weights(scales)
    linear = sum(w * ratings[a] for w, a in zip(weights, A.ATTRIBUTES)) + offset
    # The combination inverts each scale and signs it: Σ_j s_j·(L_j − a_j)/b_j, written out independently.
    by_hand = sum(A.ATTRIBUTE_SIGN[a] * (ratings[a] - scales[a].a) / scales[a].b for a in A.ATTRIBUTES)
    assert linear == pytest.approx(by_hand)
    rows = A.label_ratings(pool, scales, 0.0, random.Random(6))
    assert all(0 <= row[a] <= 4 for row in rows for a in A.ATTRIBUTES)


def synthetic_pool(prompts: int, k: int, seed: int) -> list:
    """Pool items whose gold is the sum of its components, as SentiGram's is."""
    rng = random.Random(seed)
    pool = []
    for p in range(prompts):
        components = [{"sentiment": rng.gauss(0, 2), "grammar": -abs(rng.gauss(0, 1)), "topicality": rng.gauss(0, 1),
                       "ending": rng.gauss(0, 1), "adjectives": rng.randint(0, 5)} for _ in range(k)]
        gold = [c["sentiment"] + c["grammar"] + c["topicality"] + c["ending"] for c in components]
        pool.append(A.PoolItem(f"prompt {p}", [f"response {p}.{i}" for i in range(k)], gold, components))
    return pool


@pytest.mark.parametrize("flip_rate", [0.0, 0.25])
def test_every_label_shape_carries_the_pair_labels_information(flip_rate):
    """One noise model for pairs, rankings and ratings: the pairwise gold agreement each label set implies
    matches the pair labels' within ±0.02 (and the expected (1 − ε)·A + ε·(1 − A))."""
    pool = synthetic_pool(3000, 4, seed=11)
    tau = 1.0
    pairs, _ = A.label_pairs(pool, tau, flip_rate, "small", random.Random(1))
    rankings = A.label_rankings(pool, tau, random.Random(2), flip_rate)
    scales = A.fit_scales(pool)
    sigma = A.calibrate_attribute_noise(pool, scales, A.bt_agreement(pool, tau, 0.0), "calibrate")
    ratings = A.label_ratings(pool, scales, sigma, random.Random(3), tau, flip_rate)
    audit = A.audit(pairs, rankings, ratings, scales, A.bt_agreement(pool, tau, flip_rate))
    target = audit["target"]["gold_agreement"]
    assert 0.6 < target < 0.95  # noisy enough for the test to mean something
    for shape in ("pairs", "rankings", "ratings", "rating_attributes"):
        assert audit[shape]["gold_agreement"] == pytest.approx(target, abs=0.02), (shape, audit)
    assert audit["rankings"]["comparisons"] == audit["ratings"]["comparisons"] > audit["pairs"]["comparisons"]


def test_rankings_and_ratings_flip_as_a_whole_prompt():
    pool = synthetic_pool(1, 4, seed=5)
    ranked = A.label_rankings(pool, 0.0, random.Random(0), flip_rate=1.0)[0]
    assert [pool[0].gold[k] for k in ranked["order"]] == sorted(pool[0].gold)  # worst first: reversed
    rated = A.label_ratings(pool, A.fit_scales(pool), 0.0, random.Random(0), 0.0, flip_rate=1.0)
    assert [r["rating"] for r in rated] == [-g for g in pool[0].gold]
