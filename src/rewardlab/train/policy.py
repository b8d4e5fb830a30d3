"""Stage `policy`: optimise the SFT policy against a reward model with one shared RL loop.

Each step: rollout (HF ``generate`` with a KV cache; G samples per prompt for group methods, plus a
greedy rollout for ReMax) → score (the RM at the last non-pad token, normalised; optionally a composite
with fluency and diversity; minus the missing-EOS penalty) → shape (how the score reaches the tokens:
``rewardlab.rl.shaping``; the KL penalty in the reward or in the loss) → advantages (the algorithm's
estimator) → update (the algorithm's objective, epochs × mini-batches, loss aggregation from the config).

Outputs: the policy as a Hugging Face folder (``AutoModelForCausalLM``), history.csv (one row per
logged step: reward_proxy, reward_gold, kl, kl_k3, entropy, length, eos_rate, repetition, distinct_2,
clipfrac, value_loss, grad_norm, kl_coef, credit_spearman for dense arms, …), metrics.json (the last
tenth of training averaged), run.json.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.evaluate import metrics as M
from rewardlab.models.build import (
    load_policy,
    load_reward_model,
    position_ids_from_mask,
    reward_normalisation,
    token_values,
)
from rewardlab.models.reward import RewardScorer
from rewardlab.rl import algorithms, shaping
from rewardlab.rl.advantages import aggregate_loss, masked_mean, masked_whiten
from rewardlab.rl.algorithms import Experience
from rewardlab.rl.kl import kl_estimate
from rewardlab.rl.objectives import AdaptiveKLController, clipped_value_loss
from rewardlab.rl.rollout import Rollout, logprobs_and_entropy, rows_to_lists, sample
from rewardlab.runinfo import finish_stage, read_jsonl, seed_everything
from rewardlab.tasks.gold import GoldReward, gold_reward
from rewardlab.train.checkpoint import (
    Checkpointer,
    clear_checkpoint,
    fingerprint,
    python_rng_state,
    restore_training,
    save_training,
    set_python_rng_state,
)
from rewardlab.train.common import (
    checkpoint_steps,
    is_main_process,
    make_accelerator,
    parse_config,
    progress,
    save_model_folder,
    stage_parser,
)


def policy_options(config: Mapping[str, Any], algo: str) -> dict[str, Any]:
    """``policy`` with the algorithm's entry of ``policy.overrides`` applied (e.g. GRPO's KL in the loss)."""
    options = {k: v for k, v in config["policy"].items() if k != "overrides"}
    options.update(config["policy"].get("overrides", {}).get(algo, {}))
    return options


def response_values(value_model, rollout: Rollout, mean: float, std: float) -> torch.Tensor:
    """V(s_t) for each response token t: the head at the position before y_t, on the RM's normalised scale."""
    values = token_values(value_model, rollout.input_ids, rollout.attention_mask).float()
    return (values[:, rollout.prompt_width - 1 : -1] - mean) / std


def pad_rows(rows: list[list[float]], width: int, device) -> torch.Tensor:
    out = torch.zeros(len(rows), width, device=device)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row[:width], dtype=torch.float)
    return out


class TaskReward:
    """The sequence score and its per-token shaping for one rollout batch."""

    def __init__(self, config: Mapping[str, Any], pcfg: Mapping[str, Any], shaping_name: str, rm_dir: Path,
                 gold: GoldReward, device: torch.device, dpo_dir: Path | None = None,
                 reference: torch.nn.Module | None = None):
        self.pcfg, self.shaping, self.gold, self.device = pcfg, shaping_name, gold, device
        self.composite = config["reward"]["composite"]
        self.scorer = RewardScorer(rm_dir, device)
        self.attention_model = self.dpo_model = None
        self.reference = reference
        if shaping_name == "dpo_implicit":
            if dpo_dir is None:
                raise ValueError("reward shaping dpo_implicit needs a DPO policy (--dpo)")
            self.dpo_model = load_policy(dpo_dir).to(device).eval().requires_grad_(False)
            self.dpo_beta = config["policy"]["dpo"]["beta"]
        if shaping_name == "abc":  # attentions need the eager implementation
            self.attention_model = AutoModelForSequenceClassification.from_pretrained(
                rm_dir, attn_implementation="eager").to(device).eval()

    @torch.no_grad()
    def __call__(self, rollout: Rollout, prompts: list[list[int]], ref_logp: torch.Tensor) -> dict[str, Any]:
        mask = rollout.response_mask.float()
        proxy = self.scorer.normalised(rollout.input_ids, rollout.attention_mask)
        responses = rows_to_lists(rollout)
        c = self.composite
        score = c["task"] * proxy
        if c["fluency"]:
            score = score + c["fluency"] * masked_mean(ref_logp, mask, dim=-1)
        if c["diversity"]:
            score = score + c["diversity"] * torch.tensor([M.distinct_n([r], 2) for r in responses],
                                                          device=proxy.device)
        penalty = self.pcfg["missing_eos_penalty"] * (~rollout.has_eos).float()
        credits = [self.gold.credits(p, r) for p, r in zip(prompts, responses)]
        gold_credits = pad_rows(credits, mask.shape[1], self.device)
        if self.shaping == "sparse":
            task = shaping.sparse(score, mask)
        elif self.shaping == "uniform":
            task = shaping.uniform(score, mask)
        elif self.shaping == "abc":
            out = self.attention_model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask,
                                       position_ids=position_ids_from_mask(rollout.attention_mask),
                                       output_attentions=True)
            weights = shaping.final_token_attention(out.attentions[-1], rollout.attention_mask, rollout.prompt_width)
            task = shaping.attention_credit(score, weights, mask, self.pcfg["abc_beta"])
        elif self.shaping == "prefix_difference":
            # Normalised RM scores of every prefix (member 0): R(x, y_≤t), t = 0 … T, from one forward pass.
            model = self.scorer.models[0]
            mean, std = reward_normalisation(model)
            values = (token_values(model, rollout.input_ids, rollout.attention_mask).float() - mean) / std
            prefix = values[:, rollout.prompt_width - 1 :]
            task = shaping.prefix_difference(prefix, mask)
            # Composite extras are sequence-level: they stay sparse on top of the dense RM credit.
            task = task + shaping.sparse(score - c["task"] * proxy, mask)
        elif self.shaping == "dpo_implicit":
            # r_t = β·log π_DPO(y_t|s_t)/π_ref(y_t|s_t) (Zhong et al., arXiv 2404.18922): the DPO policy's
            # implicit token reward replaces the RM; its sum is the sequence score.
            dpo_logp, _ = logprobs_and_entropy(self.dpo_model, rollout, 1.0)
            ref_logp_t1, _ = logprobs_and_entropy(self.reference, rollout, 1.0)
            task = self.dpo_beta * (dpo_logp - ref_logp_t1) * mask
            score = task.sum(-1)
        elif self.shaping == "oracle":
            task = gold_credits  # the gold per-token credit, missing-EOS penalty included
            penalty = torch.zeros_like(penalty)
            score = gold_credits.sum(-1)
        else:
            raise ValueError(f"unknown reward shaping {self.shaping!r}")
        task = task - shaping.sparse(penalty, mask)
        return {"proxy": proxy, "score": score - penalty, "task": task, "gold_credits": gold_credits,
                "gold": [float(sum(c)) for c in credits], "responses": responses}


def credit_spearman(task: torch.Tensor, gold: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over responses (≥ 3 tokens) of Spearman(r_t, g_t): how well dense credit matches the gold's."""
    values = []
    for r, g, m in zip(task.cpu(), gold.cpu(), mask.cpu().bool()):
        if m.sum() >= 3:
            rho = M.spearman(r[m].tolist(), g[m].tolist())
            if not np.isnan(rho):
                values.append(rho)
    return float(np.mean(values)) if values else float("nan")


def run(config: dict, algo_name: str, shaping_name: str, seed: int, data_dir: Path, sft_dir: Path, rm_dir: Path,
        out: Path, threads: int = 1, dpo_dir: Path | None = None,
        checkpoint_every: int = 0) -> tuple[dict, list[dict], str]:
    pcfg, task_cfg = policy_options(config, algo_name), config["task"]
    seed_everything(seed)
    accelerator = make_accelerator(config, threads)
    device = accelerator.device
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    gold = gold_reward(config, tokenizer, device)
    prompts = tokenizer([r["prompt"] for r in read_jsonl(data_dir / "prompts_train.jsonl")],
                        add_special_tokens=False)["input_ids"]

    algo = algorithms.build(algo_name, pcfg)
    group_size = pcfg["group_size"] if algo.needs_group else 1
    policy = load_policy(sft_dir)
    reference = load_policy(sft_dir).to(device).eval().requires_grad_(False)
    task_reward = TaskReward(config, pcfg, shaping_name, rm_dir, gold, device, dpo_dir, reference)
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
    temperature, estimator = pcfg["temperature"], pcfg["kl_estimator"]
    kl_in_reward = pcfg["kl_in"] == "reward"
    controller = (AdaptiveKLController(pcfg["kl_coef"], pcfg["kl_target"], pcfg["kl_horizon"])
                  if pcfg["kl_target"] else None)
    kl_coef = pcfg["kl_coef"]
    samples_seen = 0
    models = {"policy": accelerator.unwrap_model(policy)}
    optimizers = {"policy": optimizer}
    if value_model is not None:
        models["value"] = accelerator.unwrap_model(value_model)
        optimizers["value"] = value_optimizer
    checkpointer = Checkpointer(out, checkpoint_steps(accelerator, checkpoint_every),
                                fingerprint("policy", config, algo_name, shaping_name, seed, str(dpo_dir)))
    start, history, extra = restore_training(checkpointer, models, optimizers)
    if start:
        set_python_rng_state(rng, extra["prompt_rng"])
        kl_coef, samples_seen = extra["kl_coef"], extra["samples_seen"]
        if controller is not None:
            controller.value = kl_coef
        vars(algo).update(extra["algorithm_state"])

    def score_rollout(rollout: Rollout, batch_prompts: list[list[int]]):
        """Log-probs, KL and shaped rewards of a rollout at the current policy (no grad)."""
        logp, entropy = logprobs_and_entropy(policy, rollout, temperature)
        with accelerator.autocast():  # the same precision as the policy (bf16 on a GPU): KL = 0 at π = π_ref
            ref_logp, _ = logprobs_and_entropy(reference, rollout, temperature)
        mask = rollout.response_mask.float()
        kl = kl_estimate(logp, ref_logp, estimator) * mask
        scored = task_reward(rollout, batch_prompts, ref_logp)
        rewards = scored["task"] - (kl_coef * kl if kl_in_reward else 0.0)
        if pcfg["whiten_rewards"]:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        return logp, ref_logp, entropy, mask, kl, scored, rewards

    for step in progress(range(start + 1, pcfg["steps"] + 1), pcfg["steps"], f"policy[{algo_name}/{shaping_name}]",
                         config.get("progress", True), initial=start):
        chosen = rng.sample(range(len(prompts)), min(pcfg["prompts_per_step"], len(prompts)))
        # Several processes: each rolls out its share of the step's prompts; DDP averages the gradients.
        chosen = chosen[accelerator.process_index :: accelerator.num_processes]
        batch_prompts = [prompts[i] for i in chosen for _ in range(group_size)]
        group = torch.tensor([j for j in range(len(chosen)) for _ in range(group_size)], device=device)
        generator_policy = accelerator.unwrap_model(policy)
        rollout = sample(generator_policy, batch_prompts, max_new_tokens=task_cfg["max_new_tokens"],
                         temperature=temperature, eos_id=eos_id, pad_id=pad_id, device=device)
        samples_seen += len(batch_prompts) * accelerator.num_processes
        with torch.no_grad():
            old_logp, ref_logp, entropy, mask, kl, scored, rewards = score_rollout(rollout, batch_prompts)
            baseline_score = None
            if algo.needs_greedy:
                greedy = sample(generator_policy, batch_prompts, max_new_tokens=task_cfg["max_new_tokens"],
                                temperature=temperature, eos_id=eos_id, pad_id=pad_id, device=device, greedy=True)
                *_, g_mask, _, _, g_rewards = score_rollout(greedy, batch_prompts)
                baseline_score = (g_rewards * g_mask).sum(-1)
            old_values = (response_values(value_model, rollout, value_mean, value_std) * mask
                          if value_model is not None else None)
            advantages, returns = algo.advantages(Experience(rewards=rewards, score=scored["score"], mask=mask,
                                                             group=group, values=old_values,
                                                             baseline_score=baseline_score))

        stats: dict[str, list[float]] = {}
        n = len(batch_prompts)
        size = -(-n // pcfg["minibatches"])
        for _ in range(algo.update_epochs):
            order = torch.randperm(n).tolist()
            for start in range(0, n, size):
                idx = torch.tensor(order[start : start + size], device=device)
                mb = rollout.select(idx)
                mb_mask = mask[idx]
                logp, mb_entropy = logprobs_and_entropy(policy, mb, temperature)
                tokens, clipped = algo.policy_loss_tokens(logp, old_logp[idx], advantages[idx])
                if not kl_in_reward:
                    tokens = tokens + kl_coef * kl_estimate(logp, ref_logp[idx], estimator)
                if pcfg["entropy_coef"]:
                    tokens = tokens - pcfg["entropy_coef"] * mb_entropy
                loss = aggregate_loss(tokens, mb_mask, pcfg["loss_aggregation"], task_cfg["max_new_tokens"])
                record = {"pg_loss": loss.item()}
                if clipped is not None:
                    record["clipfrac"] = masked_mean(clipped, mb_mask).item()
                if value_model is not None:
                    values = response_values(value_model, mb, value_mean, value_std)
                    vf_loss, vf_clip = clipped_value_loss(values, old_values[idx], returns[idx], mb_mask,
                                                          pcfg["value_clip"])
                    loss = loss + pcfg["vf_coef"] * vf_loss
                    record.update(value_loss=vf_loss.item(), value_clipfrac=vf_clip.item())
                accelerator.backward(loss)
                record["grad_norm"] = float(accelerator.clip_grad_norm_(policy.parameters(), pcfg["max_grad_norm"]))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if value_model is not None:
                    accelerator.clip_grad_norm_(value_model.parameters(), pcfg["max_grad_norm"])
                    value_optimizer.step()
                    value_optimizer.zero_grad(set_to_none=True)
                for key, value in record.items():
                    stats.setdefault(key, []).append(value)

        observed_kl = accelerator.reduce(kl_estimate(old_logp, ref_logp, "k1").mul(mask).sum(-1).mean(), "mean").item()
        if step % pcfg["log_every"] == 0 or step == pcfg["steps"]:
            responses = scored["responses"]
            golds = scored["gold"]
            bodies = [r[:-1] if r and r[-1] == eos_id else r for r in responses]
            row = {
                "step": step,
                "samples": samples_seen,
                "reward_proxy": scored["proxy"].mean().item(),
                "reward_gold": sum(golds) / len(golds),
                "score": scored["score"].mean().item(),
                "kl": observed_kl,
                "kl_k3": kl_estimate(old_logp, ref_logp, "k3").mul(mask).sum(-1).mean().item(),
                "entropy": masked_mean(entropy, mask).item(),
                "length": (rollout.lengths.float() - rollout.has_eos.float()).mean().item(),
                "eos_rate": rollout.has_eos.float().mean().item(),
                "repetition": M.repetition_rate(bodies),
                "distinct_2": M.distinct_n(bodies, 2),
                "kl_coef": kl_coef,
            }
            if shaping_name != "sparse":
                row["credit_spearman"] = credit_spearman(scored["task"], scored["gold_credits"], mask)
            if algo_name == "grpo":
                row["frac_reward_zero_std"] = algo.frac_zero_std
            row.update({k: sum(v) / len(v) for k, v in stats.items()})
            if accelerator.num_processes > 1:  # the row over every process's rollouts
                values = accelerator.reduce(torch.tensor(list(row.values()), device=device, dtype=torch.float64),
                                            "mean")
                row = dict(zip(row, values.tolist())) | {"step": step, "samples": samples_seen}
            history.append(row)
        if controller is not None:
            kl_coef = controller.update(observed_kl, len(batch_prompts))
        if checkpointer.due(step) and accelerator.is_main_process:
            save_training(checkpointer, step, models, optimizers, history, {
                "prompt_rng": python_rng_state(rng), "kl_coef": kl_coef, "samples_seen": samples_seen,
                "algorithm_state": {k: v for k, v in vars(algo).items() if isinstance(v, (int, float, type(None)))},
            })

    save_model_folder(accelerator, policy, tokenizer, out)
    tail = history[-max(1, len(history) // 10) :]
    keys = [k for k in history[-1] if k not in ("step", "samples")]
    def tail_mean(key: str) -> float:  # NaN when every value is missing (no gold reward on real data)
        values = [v for h in tail if not np.isnan(v := h.get(key, np.nan))]
        return float(np.mean(values)) if values else float("nan")

    metrics = {f"train_{k}": tail_mean(k) for k in keys}
    metrics.update(steps=pcfg["steps"], samples=samples_seen)
    return metrics, history, str(device)


def main() -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--algorithm", required=True)
    parser.add_argument("--shaping", default="sparse", choices=shaping.SHAPINGS)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--sft", required=True)
    parser.add_argument("--rm", required=True)
    parser.add_argument("--dpo", default=None, help="A DPO policy folder (for the dpo_implicit shaping).")
    args = parser.parse_args()
    config = parse_config(args.config)
    started = time.time()
    out = Path(args.out)
    metrics, history, device = run(config, args.algorithm, args.shaping, args.seed, Path(args.data),
                                   Path(args.sft), Path(args.rm), out, args.threads,
                                   Path(args.dpo) if args.dpo else None, args.checkpoint_every)
    if is_main_process():
        finish_stage(out, "policy", config, args.seed, started, device, metrics, history,
                     extra={"algorithm": args.algorithm, "shaping": args.shaping})
        clear_checkpoint(out)


if __name__ == "__main__":
    main()
