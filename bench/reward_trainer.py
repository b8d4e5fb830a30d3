"""Benchmark: rewardlab's reward-model trainer against TRL's ``RewardTrainer`` on the same model and tokens.

Fair by construction: the same GPT-2-style backbone (built as rewardlab builds its models — torch's fused tanh
GELU — and ``save_pretrained``, no download),
the **same token sequences** on both sides (the pairs are tokenised once, as rewardlab's reward stage does,
and TRL receives them pre-tokenised as ``chosen_ids``/``rejected_ids``), the same batch size, epochs, learning
rate, warm-up and maximum length; TRL's defaults that cost it time and that rewardlab does not do are switched
off (gradient checkpointing, padding to a multiple of 8). The timers wrap the same work: the training loop
(rewardlab's ``train_supervised``; TRL's ``trainer.train()``), not model loading, normalisation or saving.
Runs are interleaved (ours, TRL, ours, TRL, …), each repeated, and the medians compared; the load average
before each run is recorded. Two datasets: SentiGram pairs (short, even lengths) and a long-tailed set
(the same pairs, each response repeated 1–12 times, 5–120 tokens). Each side's held-out pairwise accuracy is
reported so speed is not bought with worse models. Writes JSON.

    pip install trl==1.16.0    # not a dependency of rewardlab; only this benchmark needs it
    python bench/reward_trainer.py --pairs 2048 --repeats 3 --out bench/results/reward_trainer.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _environment import environment, interleaved, write_result


def make_pairs(n: int, seed: int) -> list[dict[str, str]]:
    """Pairs of SentiGram completions for one prompt, ordered by the gold reward (ties dropped)."""
    from rewardlab.tasks import sentigram as sg

    rng = random.Random(seed)
    cfg = sg.GoldConfig()
    pairs = []
    while len(pairs) < n:
        prompt, a = sg.sample_document(rng)
        _, b = sg.sample_document(rng)
        ra, rb = (sg.gold_reward(prompt, c, cfg) for c in (a, b))
        if ra == rb:
            continue
        chosen, rejected = (a, b) if ra > rb else (b, a)
        pairs.append({"prompt": " ".join(prompt), "chosen": " ".join(chosen), "rejected": " ".join(rejected)})
    return pairs


def long_tailed(pairs: list[dict[str, str]], seed: int) -> list[dict[str, str]]:
    """The same pairs with each pair's responses repeated r times, r geometric on 1–12 (lengths 5–120 tokens);
    the order between chosen and rejected is the base pair's."""
    rng = random.Random(seed)
    out = []
    for pair in pairs:
        r = 1
        while r < 12 and rng.random() < 0.75:
            r += 1
        words = len(pair["prompt"].split()) + max(len(pair["chosen"].split()), len(pair["rejected"].split())) * r
        while words > 120 and r > 1:  # keep every sequence within 120 tokens (one word is one token)
            r -= 1
            words = len(pair["prompt"].split()) + max(len(pair["chosen"].split()), len(pair["rejected"].split())) * r
        out.append({**pair, "chosen": " ".join([pair["chosen"]] * r), "rejected": " ".join([pair["rejected"]] * r)})
    return out


def build_model(folder: Path, n_layer: int, n_embd: int) -> None:
    from rewardlab.models.build import build_tiny_gpt
    from rewardlab.models.tokenizer import build_word_tokenizer
    from rewardlab.tasks import sentigram as sg

    tokenizer = build_word_tokenizer(sg.VOCAB, sg.SPECIALS)
    torch.manual_seed(0)
    model = build_tiny_gpt(len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id,
                           n_layer=n_layer, n_head=4, n_embd=n_embd, n_positions=256)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def held_out_accuracy(model_dir: Path, pairs: list[dict[str, str]]) -> float:
    from transformers import AutoTokenizer

    from rewardlab.evaluate.reward_model import pair_metrics
    from rewardlab.models.reward import RewardScorer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    result, _ = pair_metrics(RewardScorer(model_dir, "cuda" if torch.cuda.is_available() else "cpu"), tokenizer,
                             [{**p, "margin": 0.0} for p in pairs], 10, "cuda" if torch.cuda.is_available() else "cpu")
    return result["accuracy"]


def tokenise(model_dir: Path, pairs: list[dict[str, str]]) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of prompt + chosen / prompt + rejected, exactly as rewardlab's reward stage builds them."""
    from transformers import AutoTokenizer

    from rewardlab.models.tokenizer import encode_prompt_responses

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = [p["prompt"] for p in pairs]
    return (encode_prompt_responses(tokenizer, prompts, [p["chosen"] for p in pairs]),
            encode_prompt_responses(tokenizer, prompts, [p["rejected"] for p in pairs]))


def run_rewardlab(root: Path, model_dir: Path, train: list, args) -> dict:
    from rewardlab import config as C
    from rewardlab.runinfo import write_jsonl
    from rewardlab.train import reward

    labels = root / "labels"
    write_jsonl(labels / "pairs_train.jsonl", [{**p, "margin": 0.0} for p in train])
    write_jsonl(labels / "pool" / "train.jsonl", [{"prompt": p["prompt"], "responses": [p["chosen"]]}
                                                 for p in train[:16]])
    cfg = C.validate({
        "name": "bench", "progress": False, "precision": args.precision,
        "model": {"max_length": args.max_length},
        "reward": {"losses": ["bt"], "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                   "normalise_samples": 16, "warmup_ratio": 0.05},
        "policy": {"algorithms": []},
    })
    timed: dict[str, float] = {}
    original = reward.train_supervised

    def timed_loop(*a, **k):
        started = time.perf_counter()
        result = original(*a, **k)
        timed["seconds"] = time.perf_counter() - started
        return result

    reward.train_supervised = timed_loop
    try:
        result = reward.STAGE.execute(cfg, root / "rm-rewardlab", threads=args.threads, loss="bt", seed=0,
                                      labels=labels, pool=labels / "pool", sft=model_dir)
    finally:
        reward.train_supervised = original
    return {"train_seconds": timed["seconds"], "pairs": result.metrics["train_examples"], "steps": len(result.history),
            "pairs_per_second": result.metrics["train_examples"] * args.epochs / timed["seconds"]}


def run_trl(root: Path, model_dir: Path, chosen_ids: list, rejected_ids: list, args) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    config = RewardConfig(output_dir=str(root / "rm-trl"), per_device_train_batch_size=args.batch_size,
                          num_train_epochs=args.epochs, learning_rate=args.lr, max_length=args.max_length,
                          report_to=[], save_strategy="no", logging_steps=50, disable_tqdm=True, seed=0,
                          bf16=args.precision == "bf16", use_cpu=not torch.cuda.is_available(),
                          dataloader_num_workers=0, warmup_steps=0.05, lr_scheduler_type="linear",
                          gradient_checkpointing=False, pad_to_multiple_of=None)
    dataset = Dataset.from_dict({"chosen_ids": chosen_ids, "rejected_ids": rejected_ids})
    trainer = RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    trainer.model.save_pretrained(root / "rm-trl")
    tokenizer.save_pretrained(root / "rm-trl")
    return {"train_seconds": seconds, "pairs": len(chosen_ids),
            "pairs_per_second": len(chosen_ids) * args.epochs / seconds}


def compare(root: Path, name: str, train: list, test: list, args) -> dict:
    """Interleaved repeats of both trainers on one dataset; medians and their ratio."""
    chosen_ids, rejected_ids = tokenise(root / "model", train)
    lengths = [len(ids) for ids in chosen_ids + rejected_ids]

    def measured(side: str, work: Path) -> dict:
        if side == "rewardlab":
            run = run_rewardlab(work, root / "model", train, args)
        else:
            run = run_trl(work, root / "model", chosen_ids, rejected_ids, args)
        return run | {"held_out_accuracy": held_out_accuracy(work / f"rm-{side}", test)}

    runs = interleaved(root, name, args.repeats, measured)
    medians = {side: statistics.median(r["train_seconds"] for r in rs) for side, rs in runs.items()}
    return {"dataset": name, "pairs": len(train), "tokens_per_sequence": {
                "mean": statistics.mean(lengths), "min": min(lengths), "max": max(lengths)},
            "runs": runs, "median_train_seconds": medians,
            "median_pairs_per_second": {s: len(train) * args.epochs / m for s, m in medians.items()},
            "median_held_out_accuracy": {s: statistics.median(r["held_out_accuracy"] for r in rs)
                                         for s, rs in runs.items()},
            "speedup_vs_trl": medians["trl"] / medians["rewardlab"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2048)
    parser.add_argument("--test-pairs", type=int, default=512)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="bench/results/reward_trainer.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = make_pairs(args.pairs + args.test_pairs, seed=0)
    datasets = {"sentigram": pairs, "long_tailed": long_tailed(pairs, seed=1)}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_model(root / "model", args.n_layer, args.n_embd)
        for name, rows in datasets.items():
            results.append(compare(root, name, rows[: args.pairs], rows[args.pairs :], args))
    result = {
        "benchmark": "reward-model training (BT), the same token sequences on both sides, interleaved repeats",
        "settings": vars(args),
        "datasets": results,
        **environment(args.threads),
    }
    write_result(args.out, result)
    print(json.dumps({r["dataset"]: {k: r[k] for k in ("median_train_seconds", "median_held_out_accuracy",
                                                         "speedup_vs_trl")} for r in results}, indent=2))


if __name__ == "__main__":
    main()
