"""The policy-gradient family of rewardlab (rlhf-reference.md §2), one class each.

The loop in ``rewardlab.train.policy`` is shared: rollout → score → shape → advantages → update. An
algorithm says whether it needs a critic, whether it needs several samples per prompt or a greedy
baseline, how many update epochs it makes over a rollout batch, how it turns the experience into
advantages, and which policy loss it minimises on a mini-batch (the loop adds the value loss, the KL
term when the KL is in the loss, and the entropy bonus).

  ppo            GAE(γ, λ) on shaped per-token rewards, whitened; clipped surrogate; critic (§2.6)
  a2c            A_t = G_t − V(s_t), Monte Carlo reward-to-go minus a learned critic; vanilla PG (§2.1, §2.6)
  reinforce      sequence return minus a moving-average baseline; vanilla PG (§2.1)
  rloo           R_i minus the leave-one-out mean of its group; clipped surrogate (§2.2)
  grpo           (r_i − group mean)/group std, zero-variance guard; clipped surrogate (§2.4)
  reinforce_pp   reward-to-go of shaped per-token rewards, global batch whitening; clipped (§2.5)
  reinforce_pp_baseline   the same after subtracting each prompt's group-mean score
  remax          R_i minus the reward of the greedy response to the same prompt; vanilla PG (§2.3)
"""

from __future__ import annotations

from rewardlab.rl import advantages as adv
from rewardlab.rl.algorithms import Algorithm, register_algorithm


@register_algorithm
class PPO(Algorithm):
    name = "ppo"
    uses_critic = True

    def advantages(self, exp):
        assert exp.values is not None
        advantages, returns = adv.gae(exp.rewards, exp.values, exp.mask, self.cfg["gamma"], self.cfg["lam"])
        return self._whiten(advantages, exp.mask), returns


@register_algorithm
class A2C(Algorithm):
    """Advantage actor-critic (Mnih et al. 2016, arXiv 1602.01783; reference §2.1 with the baseline b(s_t) =
    V(s_t) of §2.6): ∇J = E[Σ_t (G_t − V(s_t)) ∇ log π(y_t|s_t)], G_t the reward-to-go of the shaped per-token
    rewards. The critic is PPO's (initialised from the reward model) and regresses G_t by plain squared error;
    no ratio clipping and one pass over each batch. With ``whiten_advantages`` the advantages are scaled by
    their std but keep their mean, so the critic stays the only centring (as REINFORCE's baseline).
    """

    name = "a2c"
    uses_critic = True
    clipped = False
    clips_value = False

    def advantages(self, exp):
        assert exp.values is not None
        returns = adv.reward_to_go(exp.rewards, exp.mask, self.cfg["gamma"])
        advantages = (returns - exp.values) * exp.mask.to(returns.dtype)
        if self.cfg["whiten_advantages"]:
            advantages = adv.masked_whiten(advantages, exp.mask, shift_mean=False)
        return advantages, returns


@register_algorithm
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

    def state_dict(self):
        return {"baseline": self.baseline}


@register_algorithm
class RLOO(Algorithm):
    name = "rloo"
    needs_group = True

    def advantages(self, exp):
        returns = adv.sequence_returns(exp.rewards, exp.mask)
        advantages = self._broadcast(adv.rloo_advantages(returns, exp.group), exp.mask)
        return self._whiten(advantages, exp.mask), self._broadcast(returns, exp.mask)


@register_algorithm
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

    def metrics(self):
        return {"frac_reward_zero_std": self.frac_zero_std}


@register_algorithm
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


@register_algorithm
class ReinforcePPBaseline(ReinforcePP):
    name = "reinforce_pp_baseline"
    needs_group = True
    subtract_group_mean = True


@register_algorithm
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
