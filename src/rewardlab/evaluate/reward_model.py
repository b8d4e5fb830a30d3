"""Stage `evaluate` (reward model): agreement with labels and with the gold reward, calibration.

On the held-out pairs (labels/test.jsonl, SFT samples on held-out prompts):
  accuracy        r(chosen) > r(rejected) against the annotators' (noisy) labels
  accuracy_gold   the same against the noise-free gold order sign(ΔR*), gold ties dropped
  ece             expected calibration error of σ(|Δ|) against the labels (reference §3.5)
  brier           mean (σ(Δ) − p*)², p* the annotator's true preference probability
  spearman_gold   Spearman(r_φ, R*) over the held-out responses (in distribution)
Also writes calibration.csv (one row per confidence bin) and run.json.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import AutoTokenizer

from rewardlab.evaluate import metrics as M
from rewardlab.models.build import load_reward_model
from rewardlab.runinfo import atomic_write_text, read_jsonl, seed_everything, write_metrics, write_run_info
from rewardlab.train.common import make_accelerator, parse_config, stage_parser
from rewardlab.train.reward import encode_pairs, score_texts


def evaluate(model, tokenizer, rows: list[dict], bins: int, device: torch.device) -> tuple[dict, list[dict]]:
    chosen, rejected = encode_pairs(tokenizer, rows)
    scores = score_texts(model, chosen + rejected, tokenizer.pad_token_id, device).numpy().astype(np.float64)
    r_c, r_r = scores[: len(rows)], scores[len(rows) :]
    delta = r_c - r_r
    gold_c = np.array([r["score_chosen"] for r in rows])
    gold_r = np.array([r["score_rejected"] for r in rows])
    gold_delta = gold_c - gold_r
    decided = gold_delta != 0
    model_prefers_chosen = delta > 0
    # Unique responses with their gold reward, for the rank correlation.
    unique: dict[tuple[str, str], tuple[float, float]] = {}
    for row, sc, sr in zip(rows, r_c, r_r):
        unique[(row["prompt"], row["chosen"])] = (sc, row["score_chosen"])
        unique[(row["prompt"], row["rejected"])] = (sr, row["score_rejected"])
    proxy, gold = zip(*unique.values())
    result = {
        "accuracy": M.pairwise_accuracy(delta),
        "accuracy_gold": M.pairwise_accuracy(np.sign(delta[decided]) * np.sign(gold_delta[decided])),
        "ece": M.expected_calibration_error(delta, model_prefers_chosen, bins),
        "brier": M.brier_against(delta, np.array([r["p_star"] for r in rows])),
        "spearman_gold": M.spearman(proxy, gold),
        "margin": float(delta.mean()),
        "pairs": len(rows),
        "pairs_gold_decided": int(decided.sum()),
    }
    return result, M.calibration_bins(delta, model_prefers_chosen, bins)


def main() -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--rm", required=True)
    parser.add_argument("--labels", required=True)
    args = parser.parse_args()
    config = parse_config(args.config)
    started = time.time()
    seed_everything(config["evaluate"]["seed"])
    accelerator = make_accelerator(config, args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(args.rm)
    model = load_reward_model(args.rm).to(accelerator.device)
    rows = read_jsonl(Path(args.labels) / "test.jsonl")
    result, calibration = evaluate(model, tokenizer, rows, config["evaluate"]["calibration_bins"],
                                   accelerator.device)
    atomic_write_text(out / "calibration.csv", pd.DataFrame(calibration).to_csv(index=False, float_format="%.6g"))
    write_run_info(out, "evaluate_rm", config, None, started, str(accelerator.device), {"rm": args.rm})
    write_metrics(out, result)


if __name__ == "__main__":
    main()
