"""Policy-optimisation algorithms: each is an advantage estimator plus an objective.

The loop in ``rewardlab.train.policy`` is shared: rollout → score → shape → advantages → update. An
algorithm says whether it needs a critic, whether it needs several samples per prompt or a greedy
baseline, how many update epochs it makes over a rollout batch, how it turns the experience into
advantages, and which policy loss it minimises on a mini-batch (the loop adds the value loss, the KL
term when the KL is in the loss, and the entropy bonus).

  ppo            GAE(γ, λ) on shaped per-token rewards, whitened; clipped surrogate; critic (§2.6)
  reinforce      sequence return minus a moving-average baseline; vanilla PG (§2.1)
  rloo           R_i minus the leave-one-out mean of its group; clipped surrogate (§2.2)
  grpo           (r_i − group mean)/group std, zero-variance guard; clipped surrogate (§2.4)
  reinforce_pp   reward-to-go of shaped per-token rewards, global batch whitening; clipped (§2.5)
  reinforce_pp_baseline   the same after subtracting each prompt's group-mean score
  remax          R_i minus the reward of the greedy response to the same prompt; vanilla PG (§2.3)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from rewardlab.rl import advantages as adv
from rewardlab.rl.objectives import clipped_surrogate_tokens, policy_gradient_tokens


@dataclass
class Experience:
    """What the loop knows about a rollout batch when it computes advantages. (B, T) unless noted."""

    rewards: torch.Tensor  # shaped per-token rewards (task credit + −β·KL when the KL is in the reward)
    score: torch.Tensor  # (B,) sequence score, normalised, missing-EOS penalty applied
    mask: torch.Tensor
    group: torch.Tensor  # (B,) prompt index, for per-prompt baselines
    values: torch.Tensor | None = None  # V(s_t) for critic methods
    baseline_score: torch.Tensor | None = None  # (B,) ReMax: the greedy response's score (same shaping)


class Algorithm:
    name = "base"
    uses_critic = False
    needs_group = False  # several samples per prompt
    needs_greedy = False  # a greedy rollout per prompt
    clipped = True  # clipped-ratio objective (several epochs allowed) or vanilla PG (one step)

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = cfg
        self.update_epochs = cfg["epochs"] if self.clipped else 1

    def advantages(self, exp: Experience) -> tuple[torch.Tensor, torch.Tensor]:
        """(advantages, returns), both (B, T), zero on masked positions."""
        raise NotImplementedError

    def policy_loss_tokens(self, logp, old_logp, advantages) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-token policy loss and (for clipped objectives) per-token clip indicators."""
        if self.clipped:
            return clipped_surrogate_tokens(logp, old_logp, advantages, self.cfg["clip"])
        return policy_gradient_tokens(logp, old_logp, advantages), None

    def _broadcast(self, per_sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return per_sequence[:, None] * mask.to(per_sequence.dtype)

    def _whiten(self, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return adv.masked_whiten(advantages, mask) if self.cfg["whiten_advantages"] else advantages


class PPO(Algorithm):
    name = "ppo"
    uses_critic = True

    def advantages(self, exp):
        assert exp.values is not None
        advantages, returns = adv.gae(exp.rewards, exp.values, exp.mask, self.cfg["gamma"], self.cfg["lam"])
        return self._whiten(advantages, exp.mask), returns


class Reinforce(Algorithm):
    """A_i = R_i − b, b ← d·b + (1 − d)·mean R after each batch (initialised to the first batch's mean).
    With ``whiten_advantages`` the advantages are scaled by their std but keep their mean (TRL
    ``shift_mean=False``), so the baseline stays the only centring.
    """

    name = "reinforce"
    clipped = False

    def __init__(self, cfg):
        super().__init__(cfg)
        self.baseline: float | None = None

    def advantages(self, exp):
        returns = adv.sequence_returns(exp.rewards, exp.mask)
        mean = returns.mean().item()
        if self.baseline is None:
            self.baseline = mean
        advantages = adv.baseline_advantages(returns, self.baseline, exp.mask)
        decay = self.cfg["baseline_decay"]
        self.baseline = decay * self.baseline + (1.0 - decay) * mean
        if self.cfg["whiten_advantages"]:
            advantages = adv.masked_whiten(advantages, exp.mask, shift_mean=False)
        return advantages, self._broadcast(returns, exp.mask)


class RLOO(Algorithm):
    name = "rloo"
    needs_group = True

    def advantages(self, exp):
        returns = adv.sequence_returns(exp.rewards, exp.mask)
        advantages = self._broadcast(adv.rloo_advantages(returns, exp.group), exp.mask)
        return self._whiten(advantages, exp.mask), self._broadcast(returns, exp.mask)


class GRPO(Algorithm):
    """Outcome supervision on the sequence return (the score, minus β·ΣKL when the KL is in the reward);
    ``grpo_scale_rewards: false`` gives Dr. GRPO. Advantages are not whitened again.
    """

    name = "grpo"
    needs_group = True

    def advantages(self, exp):
        returns = adv.sequence_returns(exp.rewards, exp.mask)
        advantages, zero_var = adv.grpo_advantages(returns, exp.group, scale=self.cfg["grpo_scale_rewards"])
        self.frac_zero_std = zero_var.float().mean().item()
        return self._broadcast(advantages, exp.mask), self._broadcast(returns, exp.mask)


class ReinforcePP(Algorithm):
    name = "reinforce_pp"
    subtract_group_mean = False

    def advantages(self, exp):
        rewards = exp.rewards
        if self.subtract_group_mean:
            group_mean, _ = adv.group_stats(exp.score, exp.group)
            end = adv.last_valid_index(exp.mask)
            rewards = rewards.scatter_add(1, end[:, None], -group_mean[:, None].to(rewards.dtype))
        returns = adv.reward_to_go(rewards, exp.mask, self.cfg["gamma"])
        return adv.masked_whiten(returns, exp.mask), returns


class ReinforcePPBaseline(ReinforcePP):
    name = "reinforce_pp_baseline"
    needs_group = True
    subtract_group_mean = True


class ReMax(Algorithm):
    name = "remax"
    needs_greedy = True
    clipped = False

    def advantages(self, exp):
        assert exp.baseline_score is not None
        returns = adv.sequence_returns(exp.rewards, exp.mask)
        advantages = self._broadcast(returns - exp.baseline_score, exp.mask)
        if self.cfg["whiten_advantages"]:
            advantages = adv.masked_whiten(advantages, exp.mask, shift_mean=False)
        return advantages, self._broadcast(returns, exp.mask)


ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (PPO, Reinforce, RLOO, GRPO, ReinforcePP, ReinforcePPBaseline, ReMax)
}
ONLINE = tuple(ALGORITHMS)
OFFLINE = ("dpo", "ipo", "cdpo")


def build(name: str, cfg: Mapping[str, Any]) -> Algorithm:
    try:
        return ALGORITHMS[name](cfg)
    except KeyError:
        raise KeyError(f"unknown algorithm {name!r}; known: {', '.join(sorted(ALGORITHMS))}") from None
