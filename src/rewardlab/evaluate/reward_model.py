"""Stage `evaluate` (reward model): agreement with labels and gold, calibration, ToyRewardBench, best-of-n.

On the held-out pairs (labels/<noise>/pairs_test.jsonl: SFT samples on held-out prompts):
  accuracy        r(chosen) > r(rejected) against the annotators' (noisy) labels
  accuracy_gold   the same against the noise-free gold order sign(ΔR*), gold ties dropped
  ece             expected calibration error of σ(|Δ|) against the labels (reference §3.5)
  brier           mean (σ(Δ) − p*)², p* the annotator's true preference probability
  spearman_gold   Spearman(r_φ, R*) over the held-out responses (in distribution)
On ToyRewardBench (pool/bench.jsonl): bench_<section> accuracies and bench_score (their mean).
On the best-of-n pool (pool/bon.jsonl): spearman_gold_ood (over the best-of-N picks, out of distribution),
bon_gold_max, bon_alpha, bon_beta, bon_r2 (Gao fit of gold − gold(n=1) against √KL_bon).
Writes metrics.json, calibration.csv, bon.csv, run.json. The reward stage calls ``evaluate`` on the model it
has just trained (one process, not two: on the tiny models, starting Python with torch and transformers costs
more than the evaluation); ``python -m rewardlab.evaluate.reward_model`` re-evaluates a saved model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from rewardlab.data.bench import SECTIONS
from rewardlab.data.formats import chat_renderer, read_pairs
from rewardlab.evaluate import bon as B
from rewardlab.evaluate import metrics as M
from rewardlab.losses import LOSSES
from rewardlab.models.reward import RewardScorer, score_texts
from rewardlab.runinfo import read_jsonl, write_csv
from rewardlab.runner import Argument, Stage, StageContext, StageResult


def raw_scores(scorer: RewardScorer, tokenizer, prompts: list[str], responses: list[str], device: torch.device,
               normalised: bool = False) -> np.ndarray:
    """RM scores of prompt + response texts: raw (the BT scale) or normalised (mean 0 / std 1 on SFT)."""
    score = scorer.normalised if normalised else scorer.raw
    return score_texts(score, tokenizer, prompts, responses, device).numpy().astype(np.float64)


def pair_metrics(scorer, tokenizer, pairs: list[dict], bins: int, device) -> tuple[dict, list[dict]]:
    prompts = [p["prompt"] for p in pairs]
    scores = raw_scores(scorer, tokenizer, prompts * 2, [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs],
                        device)
    r_c, r_r = scores[: len(pairs)], scores[len(pairs) :]
    delta = r_c - r_r
    has_gold = all(p.get("score_chosen") is not None and p.get("p_star") is not None for p in pairs)
    # The probability the annotator gives each label (after flips); older label files hold p* only.
    p_label = np.array([p.get("p_label", p.get("p_star")) for p in pairs], dtype=np.float64) if has_gold else None
    calibration = calibration_metrics(delta, p_label, validation_split(prompts), bins)
    if not has_gold:  # real data: no gold reward, so the gold metrics are missing (not zero)
        return ({"accuracy": M.pairwise_accuracy(delta), "accuracy_gold": None, "ece": M.expected_calibration_error(
                    delta, delta > 0, bins), "brier": None, "spearman_gold": None, "margin": float(delta.mean()),
                 "pairs": len(pairs), **calibration}, M.calibration_bins(delta, delta > 0, bins))
    gold_delta = np.array([p["score_chosen"] - p["score_rejected"] for p in pairs])
    decided = gold_delta != 0
    unique: dict[tuple[str, str], tuple[float, float]] = {}
    for p, sc, sr in zip(pairs, r_c, r_r):
        unique[(p["prompt"], p["chosen"])] = (sc, p["score_chosen"])
        unique[(p["prompt"], p["rejected"])] = (sr, p["score_rejected"])
    proxy, gold = zip(*unique.values())
    result = {
        "accuracy": M.pairwise_accuracy(delta),
        "accuracy_gold": M.pairwise_accuracy(np.sign(delta[decided]) * np.sign(gold_delta[decided])),
        "ece": M.expected_calibration_error(delta, delta > 0, bins),
        "brier": M.brier_against(delta, p_label),
        "spearman_gold": M.spearman(proxy, gold),
        "margin": float(delta.mean()),
        "pairs": len(pairs),
        **calibration,
    }
    return result, M.calibration_bins(delta, delta > 0, bins)


def validation_split(prompts: list[str]) -> np.ndarray:
    """True for the held-out pairs a temperature is fitted on: half of the prompts, chosen by a hash of their
    text (deterministic, and no prompt on both sides)."""
    return np.array([hashlib.sha256(p.encode()).digest()[0] % 2 == 0 for p in prompts])


def calibration_metrics(delta: np.ndarray, p_label: np.ndarray | None, validation: np.ndarray,
                        bins: int) -> dict[str, float | None]:
    """ECE and Brier after temperature scaling (reference §3.5): one T per RM, fitted on the validation half of
    the held-out pairs, measured on the other half. Comparable across losses whose raw Δ is not a logit.
    ``calibration_scale`` is 1/T (finite: 0 when the best calibrated prediction is ½ everywhere)."""
    held = ~validation
    if not validation.any() or not held.any():
        return {"calibration_scale": None, "ece_scaled": None, "brier_scaled": None}
    scale = 1.0 / M.fit_temperature(delta[validation])  # 1/T: 0 when the RM orders the labels at chance
    scaled = delta[held] * scale
    return {"calibration_scale": scale,
            "ece_scaled": M.expected_calibration_error(scaled, scaled > 0, bins),
            "brier_scaled": None if p_label is None else M.brier_against(scaled, p_label[held])}


def bench_metrics(scorer, tokenizer, items: list[dict], device) -> dict[str, float]:
    prompts = [i["prompt"] for i in items]
    scores = raw_scores(scorer, tokenizer, prompts * 2, [i["chosen"] for i in items] + [i["rejected"] for i in items],
                        device)
    delta = scores[: len(items)] - scores[len(items) :]
    sections = np.array([i["section"] for i in items])
    result = {}
    for section in SECTIONS:
        sel = sections == section
        if sel.any():
            result[f"bench_{section}"] = M.pairwise_accuracy(delta[sel])
    result["bench_score"] = float(np.mean(list(result.values())))
    return result


def bon_metrics(scorer, tokenizer, pool: list[dict], device) -> tuple[dict, list[dict]]:
    n_max = min(len(row["responses"]) for row in pool)
    flat_prompts = [row["prompt"] for row in pool for _ in row["responses"][:n_max]]
    flat_responses = [r for row in pool for r in row["responses"][:n_max]]
    scores = raw_scores(scorer, tokenizer, flat_prompts, flat_responses, device, normalised=True).reshape(
        len(pool), n_max)
    gold = np.array([row["gold"][:n_max] for row in pool])
    ns = sorted({n for n in [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, n_max] if n <= n_max})
    rows = B.curve(scores.tolist(), gold.tolist(), ns)
    base_gold, base_proxy = rows[0]["gold"], rows[0]["proxy"]
    for row in rows:
        row["gold_gain"] = row["gold"] - base_gold
        row["proxy_gain"] = row["proxy"] - base_proxy
    alpha, beta, r2 = B.gao_fit_bon([r["sqrt_kl"] for r in rows], [r["gold_gain"] for r in rows])
    picks = scores.argmax(1)
    picked_proxy = scores[np.arange(len(pool)), picks]
    picked_gold = gold[np.arange(len(pool)), picks]
    result = {"bon_alpha": alpha, "bon_beta": beta, "bon_r2": r2, "bon_gold_max": max(r["gold"] for r in rows),
              "bon_gold_at_max_n": rows[-1]["gold"], "spearman_gold_ood": M.spearman(picked_proxy, picked_gold)}
    return result, rows


def run(ctx: StageContext, rm: Path, labels: Path, pool: Path) -> StageResult:
    """Evaluate the reward model in ``rm``; writes calibration.csv and bon.csv beside the stage's files."""
    device, out = ctx.device, ctx.out
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(rm)
    scorer = RewardScorer(rm, device)
    pairs = read_pairs(read_jsonl(labels / "pairs_test.jsonl"), "pairs_test.jsonl", chat_renderer(tokenizer))
    result, calibration = pair_metrics(scorer, tokenizer, pairs, ctx.config["evaluate"]["calibration_bins"], device)
    loss = getattr(scorer.models[0].config, "rewardlab_loss", None)
    result["logit_output"] = float(LOSSES.get(loss).logit_output) if loss in LOSSES else None
    bon_rows: list[dict] = []
    if (pool / "bench.jsonl").is_file():  # SentiGram only: ToyRewardBench and the best-of-n pool
        result.update(bench_metrics(scorer, tokenizer, read_jsonl(pool / "bench.jsonl"), device))
        bon_result, bon_rows = bon_metrics(scorer, tokenizer, read_jsonl(pool / "bon.jsonl"), device)
        result.update(bon_result)
    write_csv(out / "calibration.csv", calibration)
    write_csv(out / "bon.csv", bon_rows, columns=list(bon_rows[0]) if bon_rows else ["n", "sqrt_kl", "gold", "proxy"])
    return StageResult(result, extra={"members": scorer.members})


STAGE = Stage("evaluate_rm", run, (
    Argument("--rm", Path, "The reward model folder."),
    Argument("--labels", Path, "labels/<noise>/ folder"),
    Argument("--pool", Path, "pool/ folder"),
), seed=lambda config, inputs: config["evaluate"]["seed"], description=__doc__.splitlines()[0])

if __name__ == "__main__":
    STAGE.main()
