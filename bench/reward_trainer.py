"""Benchmark: rewardlab's reward-model trainer against TRL's ``RewardTrainer`` on the same model and data.

Same GPT-2-style backbone (built from a config and ``save_pretrained``, no download), same preference pairs
(SentiGram documents in TRL's standard format), same batch size, epochs, learning rate and maximum length,
CPU or GPU. Measures training wall time and pairs per second for each (TRL's dataset tokenisation timed
apart), and the held-out pairwise accuracy each reaches, so speed is not bought with worse models. Writes JSON.

    pip install trl            # not a dependency of rewardlab; only this benchmark needs it
    python bench/reward_trainer.py --pairs 4096 --out bench/results/reward_trainer.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from importlib import metadata
from pathlib import Path

import torch


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


def build_model(folder: Path, n_layer: int, n_embd: int) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from rewardlab.models.tokenizer import build_word_tokenizer
    from rewardlab.tasks import sentigram as sg

    tokenizer = build_word_tokenizer(sg.VOCAB, sg.SPECIALS)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_layer=n_layer, n_embd=n_embd, n_head=4,
                                       n_positions=128, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                       bos_token_id=tokenizer.bos_token_id))
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


def run_rewardlab(root: Path, model_dir: Path, train: list, args) -> dict:
    from rewardlab import config as C
    from rewardlab.data import ingest
    from rewardlab.runinfo import write_jsonl
    from rewardlab.train import reward

    write_jsonl(root / "train.jsonl", train)
    cfg = C.validate({
        "name": "bench", "progress": False, "precision": args.precision,
        "data": {"name": "bench",
                 "source": {"format": "trl", "path": str(root / "train.jsonl"), "test_fraction": 0.01}},
        "model": {"name_or_path": str(model_dir), "max_length": args.max_length},
        "reward": {"losses": ["bt"], "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                   "normalise_samples": 64},
        "policy": {"algorithms": []},
    })
    data = root / "data"
    ingest.STAGE.execute(cfg, data)
    started = time.perf_counter()
    result = reward.STAGE.execute(cfg, root / "rm-rewardlab", threads=args.threads, loss="bt", seed=0, labels=data,
                                  pool=data / "pool", sft=model_dir)
    seconds = time.perf_counter() - started
    metrics, history = result.metrics, result.history
    device = json.loads((root / "rm-rewardlab" / "run.json").read_text())["device"]
    return {"train_seconds": seconds, "pairs": metrics["train_examples"], "steps": len(history), "device": device,
            "pairs_per_second": metrics["train_examples"] * args.epochs / seconds,
            "note": "includes the normalisation pass over 64 SFT samples that TRL does not do"}


def run_trl(root: Path, model_dir: Path, train: list, args) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    config = RewardConfig(output_dir=str(root / "rm-trl"), per_device_train_batch_size=args.batch_size,
                          num_train_epochs=args.epochs, learning_rate=args.lr, max_length=args.max_length,
                          report_to=[], save_strategy="no", logging_steps=50, disable_tqdm=True, seed=0,
                          bf16=args.precision == "bf16", use_cpu=not torch.cuda.is_available(),
                          dataloader_num_workers=0, warmup_steps=0.05, lr_scheduler_type="linear")
    started = time.perf_counter()
    trainer = RewardTrainer(model=model, args=config, train_dataset=Dataset.from_list(train),
                            processing_class=tokenizer)
    prepared = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - prepared
    trainer.model.save_pretrained(root / "rm-trl")
    tokenizer.save_pretrained(root / "rm-trl")
    return {"train_seconds": seconds, "dataset_preparation_seconds": prepared - started, "pairs": len(train),
            "pairs_per_second": len(train) * args.epochs / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4096)
    parser.add_argument("--test-pairs", type=int, default=512)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="bench/results/reward_trainer.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = make_pairs(args.pairs + args.test_pairs, seed=0)
    train, test = pairs[: args.pairs], pairs[args.pairs :]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_model(root / "model", args.n_layer, args.n_embd)
        ours = run_rewardlab(root, root / "model", train, args)
        ours["held_out_accuracy"] = held_out_accuracy(root / "rm-rewardlab", test)
        trl = run_trl(root, root / "model", train, args)
        trl["held_out_accuracy"] = held_out_accuracy(root / "rm-trl", test)
    result = {
        "benchmark": "reward-model training, one forward pass per batch of chosen+rejected",
        "settings": vars(args),
        "rewardlab": ours,
        "trl": trl,
        "speedup_vs_trl": trl["train_seconds"] / ours["train_seconds"],
        "versions": {p: metadata.version(p) for p in ("torch", "transformers", "trl", "accelerate")},
        "machine": {"platform": platform.platform(), "cuda": torch.cuda.get_device_name(0)
                    if torch.cuda.is_available() else None, "threads": args.threads},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("rewardlab", "trl", "speedup_vs_trl")}, indent=2))


if __name__ == "__main__":
    main()
