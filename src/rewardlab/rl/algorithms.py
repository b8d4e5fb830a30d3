"""Policy-optimisation algorithms: each is an advantage estimator plus an objective.

The loop in ``rewardlab.train.policy`` is shared: rollout → score → shape → advantages → update.
An algorithm says whether it needs a critic, how many update epochs it makes over a rollout batch, how
it turns shaped per-token rewards into advantages, and which loss it minimises on a mini-batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from rewardlab.rl.advantages import baseline_advantages, gae, masked_whiten, sequence_returns
from rewardlab.rl.objectives import clipped_surrogate, clipped_value_loss, policy_gradient


@dataclass
class MiniBatch:
    """Tensors of one mini-batch: (B, T) over response tokens."""

    logp: torch.Tensor  # under the current policy, with grad
    old_logp: torch.Tensor  # at rollout time
    advantages: torch.Tensor
    returns: torch.Tensor
    mask: torch.Tensor
    values: torch.Tensor | None = None  # under the current critic, with grad
    old_values: torch.Tensor | None = None


class Algorithm(Protocol):
    name: str
    uses_critic: bool
    update_epochs: int

    def advantages(self, rewards: torch.Tensor, values: torch.Tensor | None,
                   mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def loss(self, batch: MiniBatch) -> tuple[torch.Tensor, dict[str, float]]: ...


class PPO:
    """PPO with GAE, a value head initialised from the RM and a clipped value loss (reference §2.6)."""

    name = "ppo"
    uses_critic = True

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = cfg
        self.update_epochs = cfg["epochs"]

    def advantages(self, rewards, values, mask):
        assert values is not None
        advantages, returns = gae(rewards, values, mask, self.cfg["gamma"], self.cfg["lam"])
        if self.cfg["whiten_advantages"]:
            advantages = masked_whiten(advantages, mask)
        return advantages, returns

    def loss(self, batch):
        assert batch.values is not None and batch.old_values is not None
        pg_loss, clipfrac = clipped_surrogate(batch.logp, batch.old_logp, batch.advantages, batch.mask,
                                              self.cfg["clip"])
        vf_loss, vf_clipfrac = clipped_value_loss(batch.values, batch.old_values, batch.returns, batch.mask,
                                                  self.cfg["value_clip"])
        loss = pg_loss + self.cfg["vf_coef"] * vf_loss
        return loss, {"pg_loss": pg_loss.item(), "value_loss": vf_loss.item(), "clipfrac": clipfrac.item(),
                      "value_clipfrac": vf_clipfrac.item()}


class Reinforce:
    """REINFORCE with a moving-average baseline, sequence-level form (reference §2.1).

    A_i = R_i − b with R_i = score_i − β·Σ_t KL_{i,t}; b ← d·b + (1 − d)·mean_i R_i after each batch
    (initialised to the first batch's mean). With ``whiten_advantages`` the advantages are divided by
    their std but keep their mean, so the baseline stays the only centring. One on-policy gradient step
    per mini-batch (``policy.epochs`` applies to clipped objectives only).
    """

    name = "reinforce"
    uses_critic = False
    update_epochs = 1

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = cfg
        self.baseline: float | None = None

    def advantages(self, rewards, values, mask):
        returns = sequence_returns(rewards, mask)
        mean = returns.mean().item()
        if self.baseline is None:
            self.baseline = mean
        advantages = baseline_advantages(returns, self.baseline, mask)
        decay = self.cfg["baseline_decay"]
        self.baseline = decay * self.baseline + (1.0 - decay) * mean
        if self.cfg["whiten_advantages"]:
            advantages = masked_whiten(advantages, mask, shift_mean=False)
        return advantages, returns[:, None] * mask.to(returns.dtype)

    def loss(self, batch):
        loss = policy_gradient(batch.logp, batch.old_logp, batch.advantages, batch.mask)
        return loss, {"pg_loss": loss.item()}


ALGORITHMS: dict[str, type] = {"ppo": PPO, "reinforce": Reinforce}


def build(name: str, cfg: Mapping[str, Any]) -> Algorithm:
    try:
        return ALGORITHMS[name](cfg)
    except KeyError:
        raise KeyError(f"unknown algorithm {name!r}; known: {', '.join(sorted(ALGORITHMS))}") from None
