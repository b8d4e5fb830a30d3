"""Stage `pool`: SFT samples that every label set and every reward-model evaluation is drawn from.

  train.jsonl, test.jsonl  K responses per prompt (labels.samples_per_prompt) on the training prompts
                           (first labels.num_prompts) and on the held-out prompts, with gold rewards and
                           gold components: {prompt, responses, gold, components}
  bon.jsonl                N responses per held-out prompt (bon.samples_per_prompt) for best-of-n curves
  bench.jsonl              ToyRewardBench items built from the held-out pool (rewardlab.data.bench)
  metrics.json, run.json
Sampling uses the SFT policy at labels.sampling_temperature, top-k/top-p off, seeded from labels.seed.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoTokenizer

from rewardlab.data import bench
from rewardlab.data.annotators import PoolItem
from rewardlab.models.build import load_policy
from rewardlab.rl.rollout import rollout_backend, rows_to_lists, sample
from rewardlab.runinfo import read_jsonl, write_jsonl
from rewardlab.runner import Argument, Stage, StageContext, StageResult
from rewardlab.tasks import TASKS
from rewardlab.tasks import sentigram as sg
from rewardlab.tasks.gold import TaskGold


@torch.no_grad()
def sample_pool(ctx: StageContext, policy, tokenizer, gold: TaskGold, prompts: list[str], k: int, temperature: float,
                max_new_tokens: int, desc: str, batch_rows: int = 1024) -> list[PoolItem]:
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    per_batch = max(1, batch_rows // k)
    items = []
    starts = range(0, len(prompt_ids), per_batch)
    for start in ctx.iterate(starts, len(starts), desc):
        chunk = prompt_ids[start : start + per_batch]
        rollout = sample(policy, [p for p in chunk for _ in range(k)], max_new_tokens=max_new_tokens,
                         temperature=temperature, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
                         device=ctx.device, backend=rollout_backend(ctx.config))
        responses = rows_to_lists(rollout)
        for i, prompt in enumerate(chunk):
            own = responses[i * k : (i + 1) * k]
            prompt_tokens = gold.tokens(prompt)
            response_tokens = [gold.tokens(r) for r in own]
            components = []
            for tokens in response_tokens:
                parts = gold.task.gold_components(prompt_tokens, tokens, gold.cfg)
                parts["adjectives"] = float(len({w for w in tokens if sg.category(w) == sg.ADJ}))
                components.append(parts)
            items.append(PoolItem(prompt=tokenizer.decode(prompt), responses=[" ".join(t) for t in response_tokens],
                                  gold=[gold.reward(prompt, r) for r in own], components=components))
    return items


def run(ctx: StageContext, data: Path, sft: Path) -> StageResult:
    labels, task, bon = ctx.config["labels"], ctx.config["task"], ctx.config["bon"]
    tokenizer = AutoTokenizer.from_pretrained(sft)
    policy = load_policy(sft).to(ctx.device)
    gold = TaskGold(TASKS.get(task["name"]), tokenizer, task)
    train_prompts = [r["prompt"] for r in read_jsonl(data / "prompts_train.jsonl")][: labels["num_prompts"]]
    test_prompts = [r["prompt"] for r in read_jsonl(data / "prompts_test.jsonl")]
    common = {"temperature": labels["sampling_temperature"], "max_new_tokens": task["max_new_tokens"]}
    k = labels["samples_per_prompt"]
    train = sample_pool(ctx, policy, tokenizer, gold, train_prompts, k, desc="pool: train", **common)
    test = sample_pool(ctx, policy, tokenizer, gold, test_prompts, k, desc="pool: test", **common)
    bon_pool = sample_pool(ctx, policy, tokenizer, gold, test_prompts[: bon["num_prompts"]],
                           bon["samples_per_prompt"], desc="pool: best-of-n", **common)
    task_gold = gold.task
    bench_items = bench.build(test, lambda p, r: sum(task_gold.gold_credits(p, r, gold.cfg)),
                              random.Random(labels["seed"]))
    out = ctx.out
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", (asdict(i) for i in train))
    write_jsonl(out / "test.jsonl", (asdict(i) for i in test))
    write_jsonl(out / "bon.jsonl", ({"prompt": i.prompt, "responses": i.responses, "gold": i.gold} for i in bon_pool))
    write_jsonl(out / "bench.jsonl", bench_items)
    all_gold = [g for item in train for g in item.gold]
    return StageResult({
        "train_prompts": len(train),
        "test_prompts": len(test),
        "bon_prompts": len(bon_pool),
        "bench_items": len(bench_items),
        "sft_reward_gold": sum(all_gold) / len(all_gold),
        "sft_eos_rate": sum(r.endswith(sg.EOS) for i in train for r in i.responses) / len(all_gold),
        **{f"bench_{s}_items": sum(b["section"] == s for b in bench_items) for s in bench.SECTIONS},
    })


STAGE = Stage("pool", run, (Argument("--data", Path), Argument("--sft", Path)),
              seed=lambda config, inputs: config["labels"]["seed"], description=__doc__.splitlines()[0])

if __name__ == "__main__":
    STAGE.main()
