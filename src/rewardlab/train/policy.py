"""Stage `policy`: optimise the SFT policy against a reward model with one shared RL loop.

Each step: rollout (sample with a KV cache) → score (RM at the last non-pad token, normalised, minus
the missing-EOS penalty) → shape (per-token k1 KL in the reward, score at the last token) → advantages
(the algorithm's estimator) → update (the algorithm's objective, epochs × mini-batches).

Outputs: the policy as a Hugging Face folder (``AutoModelForCausalLM``), history.csv (one row per
logged step: reward_proxy, reward_gold, kl, kl_k3, entropy, length, eos_rate, clipfrac, value_loss,
pg_loss, grad_norm, …), metrics.json (the last steps averaged), run.json.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from rewardlab.models.build import load_policy, load_reward_model, reward_normalisation, token_values
from rewardlab.models.reward import RewardScorer
from rewardlab.rl import algorithms
from rewardlab.rl.advantages import masked_mean, shaped_rewards
from rewardlab.rl.algorithms import MiniBatch
from rewardlab.rl.kl import kl_estimate
from rewardlab.rl.rollout import Rollout, logprobs_and_entropy, rows_to_lists, sample
from rewardlab.runinfo import read_jsonl, seed_everything, write_history, write_metrics, write_run_info
from rewardlab.tasks.gold import SentiGramGold
from rewardlab.train.common import make_accelerator, parse_config, progress, stage_parser


def response_values(value_model, rollout: Rollout, mean: float, std: float) -> torch.Tensor:
    """V(s_t) for each response token t: the head at the position before y_t, on the RM's normalised scale."""
    values = token_values(value_model, rollout.input_ids, rollout.attention_mask).float()
    return (values[:, rollout.prompt_width - 1 : -1] - mean) / std


def run(config: dict, algo_name: str, seed: int, data_dir: Path, sft_dir: Path, rm_dir: Path, out: Path,
        threads: int = 1) -> tuple[dict, list[dict], str]:
    pcfg, task = config["policy"], config["task"]
    seed_everything(seed)
    accelerator = make_accelerator(config, threads)
    device = accelerator.device
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    gold = SentiGramGold(tokenizer, task)
    prompts = tokenizer([r["prompt"] for r in read_jsonl(data_dir / "prompts_train.jsonl")],
                        add_special_tokens=False)["input_ids"]

    algo = algorithms.build(algo_name, pcfg)
    policy = load_policy(sft_dir)
    reference = load_policy(sft_dir).to(device).eval().requires_grad_(False)
    reward_model = RewardScorer(rm_dir, device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=pcfg["lr"], eps=1e-5)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    value_model = value_optimizer = None
    value_mean, value_std = 0.0, 1.0
    if algo.uses_critic:
        value_model = load_reward_model(rm_dir)  # member 0 of an ensemble
        value_mean, value_std = reward_normalisation(value_model)
        value_optimizer = torch.optim.Adam(value_model.parameters(), lr=pcfg["value_lr"], eps=1e-5)
        value_model, value_optimizer = accelerator.prepare(value_model, value_optimizer)
    rng = random.Random(seed)
    temperature, kl_coef = pcfg["temperature"], pcfg["kl_coef"]

    history: list[dict] = []
    for step in progress(range(1, pcfg["steps"] + 1), pcfg["steps"], f"policy[{algo_name}]",
                         config.get("progress", True)):
        batch_prompts = [prompts[i] for i in rng.sample(range(len(prompts)), min(pcfg["prompts_per_step"],
                                                                                   len(prompts)))]
        rollout = sample(accelerator.unwrap_model(policy), batch_prompts, max_new_tokens=task["max_new_tokens"],
                         temperature=temperature, eos_id=eos_id, pad_id=pad_id, device=device)
        mask = rollout.response_mask.float()
        with torch.no_grad():
            old_logp, entropy = logprobs_and_entropy(policy, rollout, temperature)
            ref_logp, _ = logprobs_and_entropy(reference, rollout, temperature)
            proxy = reward_model.normalised(rollout.input_ids, rollout.attention_mask)
            score = proxy - pcfg["missing_eos_penalty"] * (~rollout.has_eos).float()
            kl = kl_estimate(old_logp, ref_logp, "k1") * mask
            rewards = shaped_rewards(score, kl, mask, kl_coef)
            old_values = (response_values(value_model, rollout, value_mean, value_std) * mask
                          if value_model is not None else None)
            advantages, returns = algo.advantages(rewards, old_values, mask)

        stats: dict[str, list[float]] = {}
        n = len(batch_prompts)
        for _ in range(algo.update_epochs):
            order = torch.randperm(n).tolist()
            size = -(-n // pcfg["minibatches"])
            for start in range(0, n, size):
                idx = torch.tensor(order[start : start + size], device=device)
                mb_rollout = rollout.select(idx)
                logp, _ = logprobs_and_entropy(policy, mb_rollout, temperature)
                values = (response_values(value_model, mb_rollout, value_mean, value_std)
                          if value_model is not None else None)
                batch = MiniBatch(logp=logp, old_logp=old_logp[idx], advantages=advantages[idx],
                                  returns=returns[idx], mask=mask[idx], values=values,
                                  old_values=old_values[idx] if old_values is not None else None)
                loss, loss_stats = algo.loss(batch)
                accelerator.backward(loss)
                grad_norm = accelerator.clip_grad_norm_(policy.parameters(), pcfg["max_grad_norm"])
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if value_model is not None:
                    accelerator.clip_grad_norm_(value_model.parameters(), pcfg["max_grad_norm"])
                    value_optimizer.step()
                    value_optimizer.zero_grad(set_to_none=True)
                loss_stats["grad_norm"] = float(grad_norm)
                for key, value in loss_stats.items():
                    stats.setdefault(key, []).append(value)

        if step % pcfg["log_every"] == 0 or step == pcfg["steps"]:
            responses = rows_to_lists(rollout)
            prompt_rows = batch_prompts
            golds = gold.rewards(prompt_rows, responses)
            k3 = kl_estimate(old_logp, ref_logp, "k3") * mask
            row = {
                "step": step,
                "reward_proxy": proxy.mean().item(),
                "reward_gold": sum(golds) / len(golds),
                "score": score.mean().item(),
                "kl": kl.sum(-1).mean().item(),
                "kl_k3": k3.sum(-1).mean().item(),
                "entropy": masked_mean(entropy, mask).item(),
                "length": (rollout.lengths.float() - rollout.has_eos.float()).mean().item(),
                "eos_rate": rollout.has_eos.float().mean().item(),
                "kl_coef": kl_coef,
            }
            row.update({k: sum(v) / len(v) for k, v in stats.items()})
            history.append(row)

    unwrapped = accelerator.unwrap_model(policy)
    unwrapped.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    tail = history[-max(1, len(history) // 10) :]
    keys = [k for k in history[-1] if k != "step"]
    metrics = {f"train_{k}": sum(h.get(k, 0.0) for h in tail) / len(tail) for k in keys}
    metrics["steps"] = pcfg["steps"]
    return metrics, history, str(device)


def main() -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--algorithm", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--sft", required=True)
    parser.add_argument("--rm", required=True)
    args = parser.parse_args()
    config = parse_config(args.config)
    started = time.time()
    out = Path(args.out)
    metrics, history, device = run(config, args.algorithm, args.seed, Path(args.data), Path(args.sft),
                                   Path(args.rm), out, args.threads)
    write_history(out, history)
    write_run_info(out, "policy", config, args.seed, started, device, {"algorithm": args.algorithm})
    write_metrics(out, metrics)


if __name__ == "__main__":
    main()
