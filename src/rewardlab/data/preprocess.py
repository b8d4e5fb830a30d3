"""Stage `preprocess`: the SentiGram SFT corpus, prompt splits and tokenizer → data/processed/<name>/.

Outputs (JSON lines that ``datasets.load_dataset("json", …)`` reads):
  sft_train.jsonl, sft_valid.jsonl   {"prompt": str, "completion": str}   (TRL prompt-completion format)
  prompts_train.jsonl, prompts_test.jsonl   {"prompt": str}
  tokenizer/                          Hugging Face tokenizer (word level, built locally)
  metrics.json, run.json
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from rewardlab.models.tokenizer import build_word_tokenizer
from rewardlab.runinfo import write_jsonl, write_metrics, write_run_info
from rewardlab.tasks import sentigram as sg
from rewardlab.train.common import parse_config, stage_parser


def build_corpus(num: int, rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for _ in range(num):
        prompt, completion = sg.sample_document(rng)
        rows.append({"prompt": " ".join(prompt), "completion": " ".join(completion)})
    return rows


def build_prompts(num: int, rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for _ in range(num):
        rows.append({"prompt": " ".join(sg.sample_prompt(rng))})
    return rows


def run(config: dict, out: Path) -> dict[str, float]:
    data = config["data"]
    out.mkdir(parents=True, exist_ok=True)
    # Independent streams per split, so changing one split's size leaves the others unchanged.
    streams = {name: random.Random(f"{data['seed']}-{name}") for name in ("train", "valid", "ptrain", "ptest")}
    sft_train = build_corpus(data["num_sft_train"], streams["train"])
    sft_valid = build_corpus(data["num_sft_valid"], streams["valid"])
    prompts_train = build_prompts(data["num_prompts_train"], streams["ptrain"])
    prompts_test = build_prompts(data["num_prompts_test"], streams["ptest"])
    write_jsonl(out / "sft_train.jsonl", sft_train)
    write_jsonl(out / "sft_valid.jsonl", sft_valid)
    write_jsonl(out / "prompts_train.jsonl", prompts_train)
    write_jsonl(out / "prompts_test.jsonl", prompts_test)
    build_word_tokenizer(sg.VOCAB).save_pretrained(out / "tokenizer")

    golds = [sg.gold_reward(r["prompt"].split(), r["completion"].split()) for r in sft_train]
    lengths = [len(r["completion"].split()) - 1 for r in sft_train]
    return {
        "num_sft_train": len(sft_train),
        "num_sft_valid": len(sft_valid),
        "num_prompts_train": len(prompts_train),
        "num_prompts_test": len(prompts_test),
        "vocab_size": len(sg.VOCAB),
        "corpus_reward_gold": sum(golds) / len(golds),
        "corpus_length": sum(lengths) / len(lengths),
    }


def main() -> None:
    args = stage_parser(__doc__.splitlines()[0]).parse_args()
    config = parse_config(args.config)
    started = time.time()
    out = Path(args.out)
    metrics = run(config, out)
    write_metrics(out, metrics)
    write_run_info(out, "preprocess", config, config["data"]["seed"], started, "cpu")


if __name__ == "__main__":
    main()
