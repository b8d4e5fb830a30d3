"""Stage `preprocess`: a synthetic task's SFT corpus, prompt splits and tokenizer → data/processed/<name>/
(the task: `task.name`, SentiGram by default).

Outputs (JSON lines that ``datasets.load_dataset("json", …)`` reads):
  sft_train.jsonl, sft_valid.jsonl   {"prompt": str, "completion": str}   (TRL prompt-completion format)
  prompts_train.jsonl, prompts_test.jsonl   {"prompt": str}
  tokenizer/                          Hugging Face tokenizer (word level, built locally)
  metrics.json, run.json
"""

from __future__ import annotations

import random

from rewardlab.models.tokenizer import build_word_tokenizer
from rewardlab.runinfo import write_jsonl
from rewardlab.runner import Stage, StageContext, StageResult
from rewardlab.tasks import TASKS, Task


def build_corpus(task: Task, num: int, rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for _ in range(num):
        prompt, completion = task.sample_document(rng)
        rows.append({"prompt": " ".join(prompt), "completion": " ".join(completion)})
    return rows


def build_prompts(task: Task, num: int, rng: random.Random, held_out: bool) -> list[dict[str, str]]:
    return [{"prompt": " ".join(task.sample_prompt(rng, held_out))} for _ in range(num)]


def run(ctx: StageContext) -> StageResult:
    data, out = ctx.config["data"], ctx.out
    task = TASKS.get(ctx.config["task"]["name"])
    out.mkdir(parents=True, exist_ok=True)
    # Independent streams per split, so changing one split's size leaves the others unchanged.
    streams = {name: random.Random(f"{data['seed']}-{name}") for name in ("train", "valid", "ptrain", "ptest")}
    sft_train = build_corpus(task, data["num_sft_train"], streams["train"])
    sft_valid = build_corpus(task, data["num_sft_valid"], streams["valid"])
    prompts_train = build_prompts(task, data["num_prompts_train"], streams["ptrain"], held_out=False)
    prompts_test = build_prompts(task, data["num_prompts_test"], streams["ptest"], held_out=True)
    write_jsonl(out / "sft_train.jsonl", sft_train)
    write_jsonl(out / "sft_valid.jsonl", sft_valid)
    write_jsonl(out / "prompts_train.jsonl", prompts_train)
    write_jsonl(out / "prompts_test.jsonl", prompts_test)
    build_word_tokenizer(task.vocab, task.special_tokens).save_pretrained(out / "tokenizer")

    gold = task.gold_config({})  # the task's default gold: preprocess reads task.name only, not its settings
    golds = [sum(task.gold_credits(r["prompt"].split(), r["completion"].split(), gold)) for r in sft_train]
    lengths = [len(r["completion"].split()) - 1 for r in sft_train]
    return StageResult({
        "num_sft_train": len(sft_train),
        "num_sft_valid": len(sft_valid),
        "num_prompts_train": len(prompts_train),
        "num_prompts_test": len(prompts_test),
        "vocab_size": len(task.vocab),
        "corpus_reward_gold": sum(golds) / len(golds),
        "corpus_length": sum(lengths) / len(lengths),
    })


STAGE = Stage("preprocess", run, seed=lambda config, inputs: config["data"]["seed"],
              description=__doc__.splitlines()[0])

if __name__ == "__main__":
    STAGE.main()
