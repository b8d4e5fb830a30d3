"""Reward shaping and advantage estimators, each one function mirroring its equation.

All tensors are (B, T) over response tokens with a 0/1 ``mask``; positions after EOS are masked out.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean)/std over valid tokens; with ``shift_mean=False`` the mean is kept (pitfall §6.5)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(x.dtype)


def last_valid_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last valid token of each row (0 for an empty row)."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    return (positions * mask.long()).argmax(-1)


def shaped_rewards(score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """r_t = −β·KL_t + 1[t = T_end]·score (rlhf-reference.md §2.0, Ziegler/TRL/N+/OpenRLHF).

    ``score`` is (B,), already normalised and penalised for a missing EOS.
    """
    rewards = -kl_coef * kl * mask.to(kl.dtype)
    end = last_valid_index(mask)
    return rewards.scatter_add(1, end[:, None], score[:, None].to(rewards.dtype))


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al., arXiv 1506.02438; reference §2.6).

    δ_t = r_t + γ·V(s_{t+1}) − V(s_t) with V(s_{T+1}) = 0;  Â_t = Σ_l (γλ)^l δ_{t+l};  R_t = Â_t + V(s_t).
    Returns (advantages, returns), zero on masked positions.
    """
    m = mask.to(values.dtype)
    values = values * m
    rewards = rewards * m
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    next_value = torch.zeros_like(running)
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        # A masked position contributes nothing and passes nothing back.
        running = running * m[:, t]
        advantages[:, t] = running
        next_value = values[:, t]
    return advantages, (advantages + values) * m


def sequence_returns(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """R_i = Σ_t r_{i,t}: score minus β·Σ KL for the bandit (sequence-level) form (§2.1)."""
    return (rewards * mask.to(rewards.dtype)).sum(-1)


def baseline_advantages(returns: torch.Tensor, baseline: float, mask: torch.Tensor) -> torch.Tensor:
    """REINFORCE with a baseline (§2.1, sequence-level form): A_{i,t} = R_i − b for every token t."""
    return (returns - baseline)[:, None] * mask.to(returns.dtype)
