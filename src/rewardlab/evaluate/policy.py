"""Stage `evaluate` (policy): a policy's samples on held-out prompts, judged by the gold reward.

For each held-out prompt, ``evaluate.samples_per_prompt`` responses from the policy and as many from the
SFT policy (the reference), both at ``evaluate.temperature``:
  reward_proxy     normalised RM score of the policy's samples
  reward_gold      gold reward R*
  kl               Σ_t log π(y_t|s_t) − log π_ref(y_t|s_t) per response (k1, unbiased), mean; kl_k3 too
  entropy          mean per-token entropy of π along its samples
  length           response tokens before EOS; eos_rate, repetition too
  win_rate_vs_sft  P(R*(y_π) > R*(y_sft)) on the same prompts, ties ½
  distinct_2       distinct bigrams / bigrams over all responses
Writes metrics.json, samples.jsonl (prompt, response, gold, proxy) and run.json.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer

from rewardlab.evaluate import metrics as M
from rewardlab.evaluate.gold import GoldReward, gold_reward
from rewardlab.models.build import load_policy
from rewardlab.models.reward import RewardScorer
from rewardlab.rl.advantages import masked_mean
from rewardlab.rl.kl import kl_estimate
from rewardlab.rl.rollout import logprobs_and_entropy, rows_to_lists, sample
from rewardlab.runinfo import read_jsonl, write_jsonl
from rewardlab.runner import Argument, Stage, StageContext, StageResult


@torch.no_grad()
def evaluate(policy, reference, reward_model: RewardScorer, gold: GoldReward, prompts: list[list[int]], cfg: dict,
             tokenizer, device: torch.device, batch_size: int = 256) -> tuple[dict, list[dict]]:
    ecfg, task = cfg["evaluate"], cfg["task"]
    rows = [p for p in prompts for _ in range(ecfg["samples_per_prompt"])]
    stats = {k: [] for k in ("proxy", "gold", "gold_sft", "kl", "kl_k3", "entropy", "length", "eos")}
    responses_all: list[list[int]] = []
    samples = []
    generator_state = torch.random.get_rng_state()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        rollout = sample(policy, chunk, max_new_tokens=task["max_new_tokens"], temperature=ecfg["temperature"],
                         eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, device=device)
        mask = rollout.response_mask.float()
        logp, entropy = logprobs_and_entropy(policy, rollout, ecfg["temperature"])
        ref_logp, _ = logprobs_and_entropy(reference, rollout, ecfg["temperature"])
        responses = rows_to_lists(rollout)
        golds = gold.rewards(chunk, responses)
        proxy = reward_model.normalised(rollout.input_ids, rollout.attention_mask).tolist()
        stats["proxy"] += proxy
        stats["gold"] += golds
        stats["kl"] += (kl_estimate(logp, ref_logp, "k1") * mask).sum(-1).tolist()
        stats["kl_k3"] += (kl_estimate(logp, ref_logp, "k3") * mask).sum(-1).tolist()
        stats["entropy"] += masked_mean(entropy, mask, dim=-1).tolist()
        stats["length"] += (rollout.lengths - rollout.has_eos.long()).tolist()
        stats["eos"] += rollout.has_eos.float().tolist()
        responses_all += [r[:-1] if r and r[-1] == tokenizer.eos_token_id else r for r in responses]
        samples += [{"prompt": tokenizer.decode(p), "response": tokenizer.decode(r), "gold": g, "proxy": q}
                    for p, r, g, q in zip(chunk, responses, golds, proxy)]
    # Reference samples on the same prompts, from a fixed stream so every policy meets the same ones.
    torch.manual_seed(ecfg["seed"] + 1)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        rollout = sample(reference, chunk, max_new_tokens=task["max_new_tokens"], temperature=ecfg["temperature"],
                         eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, device=device)
        stats["gold_sft"] += gold.rewards(chunk, rows_to_lists(rollout))
    torch.random.set_rng_state(generator_state)

    def mean(xs):
        return sum(xs) / len(xs)

    result = {
        "reward_proxy": mean(stats["proxy"]),
        "reward_gold": mean(stats["gold"]),
        "kl": mean(stats["kl"]),
        "kl_k3": mean(stats["kl_k3"]),
        "entropy": mean(stats["entropy"]),
        "length": mean(stats["length"]),
        "eos_rate": mean(stats["eos"]),
        "win_rate_vs_sft": M.win_rate(stats["gold"], stats["gold_sft"]),
        "distinct_2": M.distinct_n(responses_all, 2),
        "repetition": M.repetition_rate(responses_all),
        "samples": len(rows),
    }
    return result, samples


def run(ctx: StageContext, policy: Path, sft: Path, rm: Path, data: Path) -> StageResult:
    config, device = ctx.config, ctx.device
    trust = config.get("model", {}).get("trust_remote_code", False)
    tokenizer = AutoTokenizer.from_pretrained(sft)
    model = load_policy(policy, trust).to(device).eval()
    reference = load_policy(sft, trust).to(device).eval()
    scorer = RewardScorer(rm, device)
    gold = gold_reward(config, tokenizer, device)
    prompts = tokenizer([r["prompt"] for r in read_jsonl(data / "prompts_test.jsonl")],
                        add_special_tokens=False)["input_ids"]
    result, samples = evaluate(model, reference, scorer, gold, prompts, config, tokenizer, device)
    ctx.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(ctx.out / "samples.jsonl", samples)
    return StageResult(result)


STAGE = Stage("evaluate_policy", run, (
    Argument("--policy", Path, "The policy to evaluate (the SFT folder for SFT)."),
    Argument("--sft", Path, "The reference policy."),
    Argument("--rm", Path, "The reward model that gives reward_proxy."),
    Argument("--data", Path),
), seed=lambda config, inputs: config["evaluate"]["seed"], description=__doc__.splitlines()[0])

if __name__ == "__main__":
    STAGE.main()
