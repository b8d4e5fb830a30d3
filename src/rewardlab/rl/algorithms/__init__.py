"""The online policy-optimisation algorithms: one registry (``ALGORITHMS``); each algorithm is an advantage
estimator plus an objective, registered with ``@register_algorithm`` in any module of this package.

The loop in ``rewardlab.train.policy`` is shared: rollout → score → shape → advantages → update. An
algorithm says whether it needs a critic, whether it needs several samples per prompt or a greedy
baseline, how many update epochs it makes over a rollout batch, how it turns the experience into
advantages, and which policy loss it minimises on a mini-batch (the loop adds the value loss, the KL
term when the KL is in the loss, and the entropy bonus). State that must survive a resume is exposed by
``state_dict``; what it wants logged by ``metrics``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from rewardlab.registry import Registry
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
    clips_value = True  # critic methods: PPO's clipped value loss, or plain squared error

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

    def samples_per_step(self) -> int:
        """Rollouts sampled per step: a group of ``group_size`` per prompt for group methods."""
        return self.cfg["prompts_per_step"] * (self.cfg["group_size"] if self.needs_group else 1)

    def optimizer_steps_per_step(self) -> int:
        """Optimiser steps per rollout batch: update epochs × mini-batches (as the policy loop cuts them)."""
        n = self.samples_per_step()
        return self.update_epochs * len(range(0, n, -(-n // self.cfg["minibatches"])))

    def state_dict(self) -> dict[str, Any]:
        """What the algorithm carries from step to step (numbers only), for checkpoints."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def metrics(self) -> dict[str, float]:
        """Scalars about the last ``advantages`` call, logged in history.csv."""
        return {}

    def _broadcast(self, per_sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return per_sequence[:, None] * mask.to(per_sequence.dtype)

    def _whiten(self, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return adv.masked_whiten(advantages, mask) if self.cfg["whiten_advantages"] else advantages


ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm", "rewardlab.rl.algorithms")


def register_algorithm(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator: register an ``Algorithm`` subclass under its ``name``."""
    return ALGORITHMS.add(cls.name, cls)


def build(name: str, cfg: Mapping[str, Any]) -> Algorithm:
    return ALGORITHMS.get(name)(cfg)
