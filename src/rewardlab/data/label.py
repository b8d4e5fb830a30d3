"""Stage `label`: simulated annotators label the SFT pool at one flip rate ε (rlhf-reference.md §4.4).

Inputs: the pool (rewardlab.data.pool). Outputs in labels/<noise>/, with <noise> = eps<ε>:
  pairs_train.jsonl, pairs_test.jsonl   TRL preference rows (standard: prompt, chosen, rejected texts; TRL's
                                        RewardTrainer/DPOTrainer read them as they are) with
                                        score_chosen/score_rejected = gold R*, p_star, strength, margin
  rankings_train.jsonl                  {prompt, responses, order (best first), gold}
  ratings_train.jsonl                   HelpSteer2 rows: prompt, response, helpfulness, correctness,
                                        coherence, complexity, verbosity (0–4), gold
  scales.json                           the Likert scales and the linear combination that estimates R*
  audit.json                            the information audit: per label set, the pairwise comparisons it
                                        implies and how often they agree with the gold order (and the target)
  metrics.json, run.json
Pure Python: no model is loaded.
"""

from __future__ import annotations

import random
from pathlib import Path

from rewardlab.data import annotators as A
from rewardlab.data.formats import preference_row
from rewardlab.runinfo import read_jsonl, write_json, write_jsonl
from rewardlab.runner import Argument, Stage, StageContext, StageResult


def load_pool(path: Path) -> list[A.PoolItem]:
    return [A.PoolItem(**row) for row in read_jsonl(path)]


def summarise(pairs: list[dict], prefix: str) -> dict[str, float]:
    decided = [p for p in pairs if p["score_chosen"] != p["score_rejected"]]
    agree = sum(p["score_chosen"] > p["score_rejected"] for p in decided)
    return {
        f"{prefix}_pairs": len(pairs),
        f"{prefix}_label_agreement_gold": agree / max(1, len(decided)),
        f"{prefix}_mean_abs_gold_gap": sum(abs(p["score_chosen"] - p["score_rejected"]) for p in pairs)
        / max(1, len(pairs)),
    }


def run(ctx: StageContext, flip_rate: float, pool: Path) -> StageResult:
    labels, out = ctx.config["labels"], ctx.out
    train, test = load_pool(pool / "train.jsonl"), load_pool(pool / "test.jsonl")
    # One stream per label set, all seeded from labels.seed and the noise level.
    rng = {name: random.Random(f"{labels['seed']}-{flip_rate}-{name}") for name in ("pairs", "rank", "rate", "test")}
    pairs_train, edges = A.label_pairs(train, labels["temperature"], flip_rate, labels["margin_scale"], rng["pairs"])
    pairs_test, _ = A.label_pairs(test, labels["temperature"], flip_rate, labels["margin_scale"], rng["test"], edges)
    if not pairs_train or not pairs_test:
        raise SystemExit("label: no informative pairs; raise labels.num_prompts or labels.samples_per_prompt")
    tau = labels["temperature"]
    rankings = A.label_rankings(train, tau, rng["rank"], flip_rate)
    scales = A.fit_scales(train)
    # Equal information: the Likert noise that makes the attributes agree with the gold order as often as a
    # pair label does before its flip (labels.rating_noise overrides it).
    before_flip = A.bt_agreement(train, tau, 0.0)
    sigma = labels["rating_noise"]
    if sigma is None:
        sigma = A.calibrate_attribute_noise(train, scales, before_flip, f"{labels['seed']}-{flip_rate}-calibrate")
    ratings = A.label_ratings(train, scales, sigma, rng["rate"], tau, flip_rate)
    weights, offset = A.combination_weights(scales)
    audit = A.audit(pairs_train, rankings, ratings, scales, A.bt_agreement(train, tau, flip_rate))
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "pairs_train.jsonl", (preference_row(p) for p in pairs_train))
    write_jsonl(out / "pairs_test.jsonl", (preference_row(p) for p in pairs_test))
    write_jsonl(out / "rankings_train.jsonl", rankings)
    write_jsonl(out / "ratings_train.jsonl", ratings)
    write_json(out / "scales.json", {"attributes": list(A.ATTRIBUTES),
                                     "scales": {a: {"a": s.a, "b": s.b} for a, s in scales.items()},
                                     "weights": weights, "offset": offset, "strength_edges": edges,
                                     "attribute_noise": sigma})
    write_json(out / "audit.json", audit)
    return StageResult({**summarise(pairs_train, "train"), **summarise(pairs_test, "test"), "rankings": len(rankings),
                        "ratings": len(ratings), "flip_rate": flip_rate, "attribute_noise": sigma,
                        **{f"audit_{shape}_agreement": v["gold_agreement"] for shape, v in audit.items()}})


STAGE = Stage("label", run, (Argument("--flip-rate", float), Argument("--pool", Path)),
              seed=lambda config, inputs: config["labels"]["seed"], description=__doc__.splitlines()[0])

if __name__ == "__main__":
    STAGE.main()
