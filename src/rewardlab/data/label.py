"""Stage `label`: simulated annotators (rlhf-reference.md §4.4) label pairs of SFT samples.

For each prompt, K completions are sampled from the SFT policy and split into K/2 disjoint pairs.
A Bradley–Terry annotator prefers a over b with p* = σ((R*(a) − R*(b))/τ); the label is then flipped
with probability ε. Identical responses carry no information and are dropped.

Outputs, in TRL's explicit-prompt preference format plus the gold fields:
  train.jsonl, test.jsonl   {prompt, chosen, rejected, score_chosen, score_rejected, p_star}
    score_* are the gold rewards R*; p_star = σ((score_chosen − score_rejected)/τ), the annotator's
    true probability of preferring the chosen response (before flips).
  metrics.json, run.json
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from rewardlab.models.build import load_policy
from rewardlab.rl.rollout import rows_to_lists, sample
from rewardlab.runinfo import read_jsonl, seed_everything, write_jsonl, write_metrics, write_run_info
from rewardlab.tasks.gold import SentiGramGold
from rewardlab.train.common import make_accelerator, parse_config, progress, stage_parser


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def bt_label(gold_a: float, gold_b: float, temperature: float, flip_rate: float,
             rng: random.Random) -> tuple[bool, float]:
    """(a preferred?, p*) from a Bradley–Terry annotator with temperature τ and flip rate ε (§4.4)."""
    p_star = sigmoid((gold_a - gold_b) / temperature)
    prefers_a = rng.random() < p_star
    if rng.random() < flip_rate:
        prefers_a = not prefers_a
    return prefers_a, p_star


@torch.no_grad()
def sample_pool(policy, tokenizer, prompts: list[str], k: int, cfg: dict, device, show: bool,
                batch_prompts: int = 256) -> list[tuple[list[int], list[list[int]]]]:
    """K responses per prompt: [(prompt ids, [response ids × K])]."""
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    pool = []
    chunks = range(0, len(prompt_ids), batch_prompts)
    for start in progress(chunks, len(chunks), "label: sampling", show):
        chunk = prompt_ids[start : start + batch_prompts]
        rows = [p for p in chunk for _ in range(k)]
        rollout = sample(policy, rows, max_new_tokens=cfg["task"]["max_new_tokens"],
                         temperature=cfg["labels"]["sampling_temperature"], eos_id=tokenizer.eos_token_id,
                         pad_id=tokenizer.pad_token_id, device=device)
        responses = rows_to_lists(rollout)
        for i, p in enumerate(chunk):
            pool.append((p, responses[i * k : (i + 1) * k]))
    return pool


def label_pool(pool, tokenizer, gold: SentiGramGold, labels_cfg: dict, rng: random.Random) -> list[dict]:
    rows = []
    for prompt, responses in pool:
        prompt_text = tokenizer.decode(prompt)
        for a, b in zip(responses[0::2], responses[1::2]):
            if a == b:
                continue
            gold_a, gold_b = gold.reward(prompt, a), gold.reward(prompt, b)
            prefers_a, _ = bt_label(gold_a, gold_b, labels_cfg["temperature"], labels_cfg["flip_rate"], rng)
            (chosen, gc), (rejected, gr) = ((a, gold_a), (b, gold_b)) if prefers_a else ((b, gold_b), (a, gold_a))
            rows.append({
                "prompt": prompt_text,
                "chosen": tokenizer.decode(chosen),
                "rejected": tokenizer.decode(rejected),
                "score_chosen": gc,
                "score_rejected": gr,
                "p_star": sigmoid((gc - gr) / labels_cfg["temperature"]),
            })
    return rows


def summarise(rows: list[dict], prefix: str) -> dict[str, float]:
    decided = [r for r in rows if r["score_chosen"] != r["score_rejected"]]
    agree = sum(r["score_chosen"] > r["score_rejected"] for r in decided)
    return {
        f"{prefix}_pairs": len(rows),
        f"{prefix}_label_agreement_gold": agree / max(1, len(decided)),
        f"{prefix}_mean_abs_gold_gap":
            sum(abs(r["score_chosen"] - r["score_rejected"]) for r in rows) / max(1, len(rows)),
    }


def run(config: dict, data_dir: Path, sft_dir: Path, out: Path, threads: int = 1) -> tuple[dict, str]:
    labels_cfg = config["labels"]
    seed_everything(labels_cfg["seed"])
    accelerator = make_accelerator(config, threads)
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    policy = load_policy(sft_dir).to(accelerator.device)
    gold = SentiGramGold(tokenizer, config["task"])
    show = config.get("progress", True)
    k = labels_cfg["samples_per_prompt"]
    train_prompts = [r["prompt"] for r in read_jsonl(data_dir / "prompts_train.jsonl")][: labels_cfg["num_prompts"]]
    test_prompts = [r["prompt"] for r in read_jsonl(data_dir / "prompts_test.jsonl")]
    rng = random.Random(labels_cfg["seed"])
    train = label_pool(sample_pool(policy, tokenizer, train_prompts, k, config, accelerator.device, show),
                       tokenizer, gold, labels_cfg, rng)
    test = label_pool(sample_pool(policy, tokenizer, test_prompts, k, config, accelerator.device, show),
                      tokenizer, gold, labels_cfg, rng)
    if not train or not test:
        raise SystemExit("label: no informative pairs were sampled; raise labels.num_prompts or samples_per_prompt")
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "test.jsonl", test)
    return {**summarise(train, "train"), **summarise(test, "test")}, str(accelerator.device)


def main() -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--sft", required=True)
    args = parser.parse_args()
    config = parse_config(args.config)
    started = time.time()
    out = Path(args.out)
    metrics, device = run(config, Path(args.data), Path(args.sft), out, args.threads)
    write_run_info(out, "label", config, config["labels"]["seed"], started, device)
    write_metrics(out, metrics)


if __name__ == "__main__":
    main()
