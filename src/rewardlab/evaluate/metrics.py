"""Evaluation metrics as pure functions over arrays (rlhf-reference.md §3)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def rankdata(x: Sequence[float]) -> np.ndarray:
    """Ranks starting at 1, ties given their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson on average ranks); nan when either side is constant."""
    rx, ry = rankdata(x), rankdata(y)
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def pairwise_accuracy(delta: np.ndarray) -> float:
    """Fraction of pairs with r(chosen) > r(rejected) (ties count half)."""
    delta = np.asarray(delta)
    return float(np.mean((delta > 0) + 0.5 * (delta == 0)))


def calibration_bins(delta: np.ndarray, correct: np.ndarray, bins: int) -> list[dict[str, float]]:
    """Reliability table of a pairwise RM (reference §3.5).

    The model's confidence in its own preferred response is p̂ = σ(|Δ|) ∈ [0.5, 1]; ``correct`` says
    whether that response is the labelled one. Returns one row per non-empty bin of [0.5, 1].
    """
    confidence = sigmoid(np.abs(delta))
    edges = np.linspace(0.5, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        sel = index == b
        if sel.any():
            rows.append({"bin_low": edges[b], "bin_high": edges[b + 1], "count": int(sel.sum()),
                         "confidence": float(confidence[sel].mean()), "accuracy": float(correct[sel].mean())})
    return rows


def expected_calibration_error(delta: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """ECE = Σ_b (n_b/N)·|acc_b − conf_b| over bins of the symmetrised confidence (reference §3.5)."""
    rows = calibration_bins(delta, correct, bins)
    total = sum(r["count"] for r in rows)
    return float(sum(r["count"] / total * abs(r["accuracy"] - r["confidence"]) for r in rows))


def brier_against(delta: np.ndarray, p_true: np.ndarray) -> float:
    """Mean squared error between the RM's preference probability σ(Δ) and the annotator's probability of the
    same label (reference §3.5)."""
    return float(np.mean((sigmoid(delta) - np.asarray(p_true)) ** 2))


def fit_temperature(delta: np.ndarray, iterations: int = 50) -> float:
    """Temperature scaling (Guo et al. 2017) of a pairwise RM: the T > 0 that minimises the labels' negative
    log-likelihood mean softplus(−Δ/T), Δ = r(chosen) − r(rejected). Newton's method on s = 1/T, where the
    NLL is convex; T = ∞ (s = 0) when the RM orders the labels no better than chance."""
    delta = np.asarray(delta, dtype=np.float64)
    s = 1.0
    for _ in range(iterations):
        p = sigmoid(-s * delta)  # d/ds softplus(−sΔ) = −Δ·σ(−sΔ)
        grad = np.mean(-delta * p)
        hess = np.mean(delta**2 * p * (1.0 - p))
        if hess <= 1e-12:
            break
        s_next = max(s - grad / hess, 0.0)
        if abs(s_next - s) < 1e-10:
            s = s_next
            break
        s = s_next
    return float("inf") if s <= 0 else 1.0 / s


def win_rate(gold_policy: Sequence[float], gold_reference: Sequence[float]) -> float:
    """P(R*(y_π) > R*(y_ref)) over paired samples, ties counting ½ (reference §3.7)."""
    a, b = np.asarray(gold_policy, dtype=float), np.asarray(gold_reference, dtype=float)
    if np.isnan(a).any() or np.isnan(b).any():  # no gold reward (real data): missing, not a loss
        return float("nan")
    return float(np.mean((a > b) + 0.5 * (a == b)))


def distinct_n(responses: Sequence[Sequence[int]], n: int = 2) -> float:
    """Distinct n-grams over all n-grams of all responses (Li et al. 2016; reference §3.8)."""
    grams = [tuple(r[i : i + n]) for r in responses for i in range(len(r) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(responses: Sequence[Sequence[int]]) -> float:
    """Fraction of responses in which some token immediately repeats itself."""
    if not responses:
        return 0.0
    return float(np.mean([any(a == b for a, b in zip(r, r[1:])) for r in responses]))


def self_bleu(groups: Sequence[Sequence[str]]) -> float:
    """Self-BLEU (Zhu et al. 2018, Texygen): each response's sentence BLEU (sacrebleu, 0–100) against the other
    responses to the same prompt, averaged over every response of a group of two or more. High: the samples
    for a prompt repeat each other (100: identical); missing when no prompt has two responses."""
    import sacrebleu  # imported here: only evaluation needs it

    scores = [sacrebleu.sentence_bleu(hyp, [ref for j, ref in enumerate(group) if j != i]).score
              for group in groups if len(group) >= 2 for i, hyp in enumerate(group)]
    return float(np.mean(scores)) if scores else float("nan")


def perplexity(token_logprobs: Sequence[float]) -> float:
    """exp(−mean log p) over all scored tokens: the perplexity of a set of texts under a model (fluency when the
    model is the SFT policy; reference §3.8)."""
    values = np.asarray(token_logprobs, dtype=np.float64)
    return float(np.exp(-values.mean())) if len(values) else float("nan")


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_ROUGE_SCORERS: dict[str, object] = {}


def rouge(candidates: Sequence[Sequence[str]], references: Sequence[Sequence[str]],
          kind: str = "rougeL") -> list[float]:
    """ROUGE F1 (0–1) of each candidate against its reference, from ``rouge-score`` (Google's reimplementation of
    ROUGE-1.5.5; its tokenizer lower-cases and drops punctuation, so "." does not count; reference §4.7).
    ``kind``: rouge1, rouge2 or rougeL (longest common subsequence). Words in, no special tokens."""
    from rouge_score import rouge_scorer  # imported here: only tasks with references need it

    if kind not in _ROUGE_SCORERS:
        _ROUGE_SCORERS[kind] = rouge_scorer.RougeScorer([kind])
    scorer = _ROUGE_SCORERS[kind]
    return [scorer.score(" ".join(ref), " ".join(cand))[kind].fmeasure for cand, ref in zip(candidates, references)]
