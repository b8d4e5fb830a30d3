"""Stage `policy`: optimise the SFT policy against a reward model with one shared RL loop.

Each step, top to bottom (``PolicyTrainer.step``):

1. ``rollout``: sample G responses per prompt (the ``rollout_backend``: the lean decode loop, HF ``generate`` or
   a vLLM engine), plus a greedy rollout for ReMax;
2. ``score``: log-probs under the policy and the reference, the KL, and the reward signal
   (``rewardlab.train.rl_reward``: the RM score, composite, missing-EOS penalty, shaped per token by
   ``rewardlab.rl.shapings``), with −β·KL folded into the per-token reward when the KL is in the reward;
3. ``advantages``: the algorithm's estimator (``rewardlab.rl.algorithms``), with critic values for PPO;
4. ``update``: the algorithm's objective over epochs × mini-batches (+ value loss, KL in the loss, entropy);
5. ``log``: one history row; the KL controller (which owns β) sees the step's KL.

Outputs: the policy as a Hugging Face folder (``AutoModelForCausalLM``), history.csv (one row per
logged step: reward_proxy, reward_gold, kl, kl_k3, entropy, length, eos_rate, repetition, distinct_2,
clipfrac, value_loss, grad_norm, kl_coef, credit_spearman for dense arms, …), metrics.json (the last
tenth of training averaged), run.json.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer

from rewardlab.checkpoint import python_rng_state, restore_training, save_training, set_python_rng_state
from rewardlab.evaluate import metrics as M
from rewardlab.evaluate.gold import gold_reward
from rewardlab.evaluate.references import references
from rewardlab.models.build import load_policy, load_reward_model, reward_normalisation, token_values
from rewardlab.rl import algorithms
from rewardlab.rl.advantages import aggregate_loss, masked_mean, masked_whiten
from rewardlab.rl.algorithms import Experience
from rewardlab.rl.kl import KLController, kl_estimate
from rewardlab.rl.objectives import clipped_value_loss
from rewardlab.rl.rollout import Rollout, logprobs_and_entropy, rollout_backend, sample
from rewardlab.runinfo import read_jsonl
from rewardlab.runner import Argument, Stage, StageContext, StageResult, optional_path
from rewardlab.runtime import clipped_step, require_finite, save_model_folder
from rewardlab.train.rl_reward import RewardSignal, ScoredBatch, credit_spearman


def policy_options(config: Mapping[str, Any], algo: str) -> dict[str, Any]:
    """``policy`` with the algorithm's entry of ``policy.overrides`` applied (e.g. GRPO's KL in the loss)."""
    options = {k: v for k, v in config["policy"].items() if k != "overrides"}
    options.update(config["policy"].get("overrides", {}).get(algo, {}))
    return options


@dataclass
class Batch:
    """One step's rollout and everything computed about it before the update."""

    rollout: Rollout
    prompts: list[list[int]]
    group: torch.Tensor  # (B,) prompt index within the step
    mask: torch.Tensor  # (B, T) response tokens
    old_logp: torch.Tensor | None  # the policy's log-probs at the rollout (detached)
    ref_logp: torch.Tensor
    entropy: torch.Tensor | None
    kl: torch.Tensor | None  # per token, the configured estimator
    scored: ScoredBatch
    rewards: torch.Tensor  # (B, T) shaped, with −β·KL when the KL is in the reward
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    old_values: torch.Tensor | None = None
    update_pass: tuple[torch.Tensor, torch.Tensor] | None = None  # (log-probs, entropy) with their graph


class Critic:
    """PPO's value model: initialised from the RM (member 0), on the RM's normalised scale."""

    def __init__(self, rm_dir: Path, lr: float):
        self.model = load_reward_model(rm_dir)
        self.mean, self.std = reward_normalisation(self.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr, eps=1e-5, fused=True)
        self.parameters = list(self.model.parameters())

    def values(self, rollout: Rollout) -> torch.Tensor:
        """V(s_t) for each response token t: the head at the position before y_t."""
        values = token_values(self.model, rollout.input_ids, rollout.attention_mask, rollout.prompt_width).float()
        return (values[:, rollout.prompt_width - 1 : -1] - self.mean) / self.std


class PolicyTrainer:
    def __init__(self, ctx: StageContext, algorithm: str, shaping: str, seed: int, data: Path, sft: Path, rm: Path,
                 dpo: Path | None):
        self.ctx, self.shaping_name = ctx, shaping
        self.opts = opts = policy_options(ctx.config, algorithm)
        accelerator, device = ctx.accelerator, ctx.device
        self.tokenizer = AutoTokenizer.from_pretrained(sft)
        self.gold = gold_reward(ctx.config, self.tokenizer, device)
        rows = read_jsonl(data / "prompts_train.jsonl")
        self.prompts = self.tokenizer([r["prompt"] for r in rows], add_special_tokens=False)["input_ids"]
        prompt_references = references(ctx.config, self.tokenizer, rows, str(data / "prompts_train.jsonl"))
        self.algo = algorithms.build(algorithm, opts)
        self.group_size = opts["group_size"] if self.algo.needs_group else 1
        policy = load_policy(sft)
        self.reference = load_policy(sft).to(device).eval().requires_grad_(False)
        self.reward = RewardSignal(ctx.config, opts, shaping, rm, self.gold, device, dpo, self.reference,
                                   prompt_references)
        optimizer = torch.optim.Adam(policy.parameters(), lr=opts["lr"], eps=1e-5, fused=True)
        self.policy, self.optimizer = accelerator.prepare(policy, optimizer)
        self.policy_parameters = list(self.policy.parameters())  # clipped every mini-batch step: listed once
        self.critic = Critic(rm, opts["value_lr"]) if self.algo.uses_critic else None
        if self.critic is not None:
            self.critic.model, self.critic.optimizer = accelerator.prepare(self.critic.model, self.critic.optimizer)
            self.critic.parameters = list(self.critic.model.parameters())
        self.prompt_rng = random.Random(seed)
        self.backend = rollout_backend(ctx.config)  # vllm: its engine follows the policy's weights (vllm_engine)
        self.kl = KLController(opts["kl_coef"], opts["kl_target"], opts["kl_horizon"])
        self.samples_seen = self.optimizer_steps = 0
        self.checkpointer = ctx.checkpointer(algorithm, shaping, seed, str(dpo))
        self.start, self.history = self.restore()

    # --- checkpoints -------------------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, torch.nn.Module], dict[str, Any]]:
        models = {"policy": self.ctx.accelerator.unwrap_model(self.policy)}
        optimizers: dict[str, Any] = {"policy": self.optimizer}
        if self.critic is not None:
            models["value"] = self.ctx.accelerator.unwrap_model(self.critic.model)
            optimizers["value"] = self.critic.optimizer
        return models, optimizers

    def restore(self) -> tuple[int, list[dict]]:
        start, history, extra = restore_training(self.checkpointer, *self._state())
        if start:
            set_python_rng_state(self.prompt_rng, extra["prompt_rng"])
            self.kl.load_state_dict(extra["kl"])
            self.samples_seen, self.optimizer_steps = extra["samples_seen"], extra["optimizer_steps"]
            self.algo.load_state_dict(extra["algorithm_state"])
        return start, history

    def save(self, step: int) -> None:
        save_training(self.checkpointer, step, *self._state(), self.history, {
            "prompt_rng": python_rng_state(self.prompt_rng), "kl": self.kl.state_dict(),
            "samples_seen": self.samples_seen, "optimizer_steps": self.optimizer_steps,
            "algorithm_state": self.algo.state_dict()})

    # --- one step, in order --------------------------------------------------------------------------------------
    def rollout(self) -> tuple[Rollout, list[list[int]], torch.Tensor]:
        accelerator = self.ctx.accelerator
        chosen = self.prompt_rng.sample(range(len(self.prompts)), min(self.opts["prompts_per_step"], len(self.prompts)))
        # Several processes: each rolls out its share of the step's prompts; DDP averages the gradients.
        chosen = chosen[accelerator.process_index :: accelerator.num_processes]
        prompts = [self.prompts[i] for i in chosen for _ in range(self.group_size)]
        group = torch.tensor([j for j in range(len(chosen)) for _ in range(self.group_size)], device=self.ctx.device)
        rollout = self.generate(prompts)
        self.samples_seen += len(prompts) * accelerator.num_processes
        return rollout, prompts, group

    def generate(self, prompts: list[list[int]], greedy: bool = False) -> Rollout:
        return sample(self.ctx.accelerator.unwrap_model(self.policy), prompts,
                      max_new_tokens=self.ctx.config["task"]["max_new_tokens"], temperature=self.opts["temperature"],
                      eos_id=self.tokenizer.eos_token_id, pad_id=self.tokenizer.pad_token_id, device=self.ctx.device,
                      greedy=greedy, backend=self.backend)

    @property
    def reuses_update_logprobs(self) -> bool:
        """One update on the whole batch (GRPO's and RLOO's setting): the update's forward pass, run at scoring
        time with its graph kept, gives the rollout's log-probs too (detached: the ratio is exactly 1, as with a
        separate no-grad pass), so that pass is saved (TRL does the same). Its log-probs feed the KL in the
        reward; the update takes the pass itself (``Batch.update_pass``)."""
        return self.algo.update_epochs == 1 and self.opts["minibatches"] == 1 and not self.algo.needs_greedy

    @torch.no_grad()
    def score(self, rollout: Rollout, prompts: list[list[int]], group: torch.Tensor) -> Batch:
        """Log-probs, KL and shaped rewards of a rollout at the current policy (from the update's own forward pass
        when there is one update per batch: ``reuses_update_logprobs``)."""
        temperature = self.opts["temperature"]
        with self.ctx.accelerator.autocast():  # the policy's precision (bf16 on a GPU): KL = 0 at π = π_ref
            ref_logp, _ = logprobs_and_entropy(self.reference, rollout, temperature)
        mask = rollout.response_mask.float()
        update_pass = None
        if self.reuses_update_logprobs:
            with torch.enable_grad():
                update_pass = logprobs_and_entropy(self.policy, rollout, temperature)
            logp, entropy = (t.detach() for t in update_pass)
        else:
            logp, entropy = logprobs_and_entropy(self.policy, rollout, temperature)
        kl = kl_estimate(logp, ref_logp, self.opts["kl_estimator"]) * mask
        scored = self.reward(rollout, prompts, ref_logp)
        rewards = scored.task - (self.kl.value * kl if self.opts["kl_in"] == "reward" else 0.0)
        if self.opts["whiten_rewards"]:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        return Batch(rollout, prompts, group, mask, logp, ref_logp, entropy, kl, scored, rewards,
                     update_pass=update_pass)

    @torch.no_grad()
    def advantages(self, batch: Batch) -> None:
        baseline_score = None
        if self.algo.needs_greedy:  # ReMax: the greedy response's return, under the same shaping
            greedy = self.score(self.generate(batch.prompts, greedy=True), batch.prompts, batch.group)
            baseline_score = (greedy.rewards * greedy.mask).sum(-1)
        if self.critic is not None:
            batch.old_values = self.critic.values(batch.rollout) * batch.mask
        batch.advantages, batch.returns = self.algo.advantages(Experience(
            rewards=batch.rewards, score=batch.scored.score, mask=batch.mask, group=batch.group,
            values=batch.old_values, baseline_score=baseline_score))

    def update(self, batch: Batch, step: int) -> dict[str, list[float]]:
        """The algorithm's objective over its epochs × ``policy.minibatches`` mini-batches."""
        stats: dict[str, list[float]] = {}
        n = len(batch.prompts)
        size = -(-n // self.opts["minibatches"])
        for _ in range(self.algo.update_epochs):
            order = torch.randperm(n).tolist()
            for start in range(0, n, size):
                record = self.minibatch_step(batch, torch.tensor(order[start : start + size], device=self.ctx.device),
                                             step)
                for key, value in record.items():
                    stats.setdefault(key, []).append(value)
        return stats

    def minibatch_step(self, batch: Batch, idx: torch.Tensor, step: int) -> dict[str, float]:
        opts, accelerator = self.opts, self.ctx.accelerator
        mb, mb_mask = batch.rollout.select(idx), batch.mask[idx]
        if batch.update_pass is not None:  # the single update's pass, run at scoring time (reuses_update_logprobs)
            logp, entropy = (t[idx] for t in batch.update_pass)
            batch.update_pass = None
        else:
            logp, entropy = logprobs_and_entropy(self.policy, mb, opts["temperature"])
        tokens, clipped = self.algo.policy_loss_tokens(logp, batch.old_logp[idx], batch.advantages[idx])
        if opts["kl_in"] == "loss":
            tokens = tokens + self.kl.value * kl_estimate(logp, batch.ref_logp[idx], opts["kl_estimator"])
        if opts["entropy_coef"]:
            tokens = tokens - opts["entropy_coef"] * entropy
        loss = aggregate_loss(tokens, mb_mask, opts["loss_aggregation"], self.ctx.config["task"]["max_new_tokens"])
        record = {"pg_loss": loss.item()}
        if clipped is not None:
            record["clipfrac"] = masked_mean(clipped, mb_mask).item()
        if self.critic is not None:
            value_clip = opts["value_clip"] if self.algo.clips_value else float("inf")
            vf_loss, vf_clip = clipped_value_loss(self.critic.values(mb), batch.old_values[idx], batch.returns[idx],
                                                  mb_mask, value_clip)
            loss = loss + opts["vf_coef"] * vf_loss
            record.update(value_loss=vf_loss.item(), value_clipfrac=vf_clip.item())
        require_finite(loss, f"policy[{self.algo.name}/{self.shaping_name}]", step)
        accelerator.backward(loss)
        record["grad_norm"] = clipped_step(accelerator, self.optimizer, self.policy_parameters, opts["max_grad_norm"])
        self.optimizer_steps += 1
        if self.critic is not None:
            clipped_step(accelerator, self.critic.optimizer, self.critic.parameters, opts["max_grad_norm"])
        return record

    def log(self, step: int, batch: Batch, stats: dict[str, list[float]], observed_kl: float) -> dict[str, float]:
        """One history row: the rollout's rewards, KL and text statistics, the algorithm's and the update's."""
        scored, mask, eos_id = batch.scored, batch.mask, self.tokenizer.eos_token_id
        bodies = [r[:-1] if r and r[-1] == eos_id else r for r in scored.responses]
        rollout = batch.rollout
        row = {
            "step": step, "samples": self.samples_seen, "optimizer_steps": self.optimizer_steps,
            "reward_proxy": scored.proxy.mean().item(), "reward_gold": sum(scored.gold) / len(scored.gold),
            "score": scored.score.mean().item(), "kl": observed_kl,
            "kl_k3": kl_estimate(batch.old_logp, batch.ref_logp, "k3").mul(mask).sum(-1).mean().item(),
            "entropy": masked_mean(batch.entropy, mask).item(),
            "length": (rollout.lengths.float() - rollout.has_eos.float()).mean().item(),
            "eos_rate": rollout.has_eos.float().mean().item(),
            "repetition": M.repetition_rate(bodies), "distinct_2": M.distinct_n(bodies, 2), "kl_coef": self.kl.value,
        }
        row.update(scored.parts)
        if self.shaping_name != "sparse":
            row["credit_spearman"] = credit_spearman(scored.task, scored.gold_credits, mask)
        row.update(self.algo.metrics())
        row.update({k: sum(v) / len(v) for k, v in stats.items()})
        accelerator = self.ctx.accelerator
        if accelerator.num_processes > 1:  # the row over every process's rollouts
            values = accelerator.reduce(torch.tensor(list(row.values()), device=self.ctx.device,
                                                     dtype=torch.float64), "mean")
            counters = {"step": step, "samples": self.samples_seen, "optimizer_steps": self.optimizer_steps}
            row = dict(zip(row, values.tolist())) | counters
        return row

    def observed_kl(self, batch: Batch) -> float:
        """Σ_t k1 per response, mean over the batch and the processes: what the KL controller and logs see."""
        kl = kl_estimate(batch.old_logp, batch.ref_logp, "k1").mul(batch.mask).sum(-1).mean()
        return self.ctx.accelerator.reduce(kl, "mean").item()

    def step(self, step: int) -> None:
        rollout, prompts, group = self.rollout()
        batch = self.score(rollout, prompts, group)
        self.advantages(batch)
        stats = self.update(batch, step)
        observed_kl = self.observed_kl(batch)
        if step % self.opts["log_every"] == 0 or step == self.opts["steps"]:
            self.history.append(self.log(step, batch, stats, observed_kl))
        self.kl.update(observed_kl, len(prompts))
        if self.checkpointer.due(step) and self.ctx.accelerator.is_main_process:
            self.save(step)

    def train(self) -> list[dict]:
        steps = self.opts["steps"]
        bar = self.ctx.progress(steps, f"policy[{self.algo.name}/{self.shaping_name}]", initial=self.start)
        for step in range(self.start + 1, steps + 1):
            self.step(step)
            if self.history:
                bar.set_postfix(gold=f"{self.history[-1]['reward_gold']:.3f}", kl=f"{self.history[-1]['kl']:.2f}",
                                refresh=False)
            bar.update(1)
        bar.close()
        return self.history


def tail_metrics(history: list[dict]) -> dict[str, float]:
    """``train_<key>``: each logged quantity averaged over the last tenth of the run (NaN where all missing)."""
    tail = history[-max(1, len(history) // 10) :]
    metrics = {}
    for key in (k for k in history[-1] if k not in ("step", "samples", "optimizer_steps")):
        values = [v for h in tail if not np.isnan(v := h.get(key, np.nan))]
        metrics[f"train_{key}"] = float(np.mean(values)) if values else float("nan")
    return metrics


def run(ctx: StageContext, algorithm: str, shaping: str, seed: int, data: Path, sft: Path, rm: Path,
        dpo: Path | None = None) -> StageResult:
    trainer = PolicyTrainer(ctx, algorithm, shaping, seed, data, sft, rm, dpo)
    history = trainer.train()
    save_model_folder(ctx.accelerator, trainer.policy, trainer.tokenizer, ctx.out)
    metrics = tail_metrics(history) | {"steps": trainer.opts["steps"], "samples": trainer.samples_seen,
                                       "optimizer_steps": trainer.optimizer_steps}
    return StageResult(metrics, history, {"algorithm": algorithm, "shaping": shaping})


STAGE = Stage("policy", run, (
    Argument("--algorithm", str, "A registered online algorithm (rewardlab.rl.algorithms)."),
    Argument("--shaping", str, "A registered reward shaping (rewardlab.rl.shapings).", required=False,
             default="sparse"),
    Argument("--seed", int),
    Argument("--data", Path),
    Argument("--sft", Path),
    Argument("--rm", Path),
    Argument("--dpo", optional_path, "A DPO policy folder (for shapings that need one).", required=False),
), seed=lambda config, inputs: inputs["seed"], description=__doc__.splitlines()[0])

if __name__ == "__main__":
    STAGE.main()
