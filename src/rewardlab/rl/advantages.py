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


def reward_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """G_t = Σ_{t'≥t} γ^{t'−t} r_{t'} over valid tokens (REINFORCE++, reference §2.5)."""
    m = mask.to(rewards.dtype)
    out = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        running = (rewards[:, t] + gamma * running) * m[:, t]
        out[:, t] = running
    return out


def group_mean_others(values: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """For each i, the mean of the values of the *other* members of its group (leave-one-out)."""
    groups, index = torch.unique(group, return_inverse=True)
    sums = torch.zeros(len(groups), dtype=values.dtype, device=values.device).index_add_(0, index, values)
    counts = torch.zeros(len(groups), dtype=values.dtype, device=values.device).index_add_(
        0, index, torch.ones_like(values))
    return (sums[index] - values) / (counts[index] - 1).clamp(min=1)


def group_stats(values: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element mean and (population) std of its group."""
    groups, index = torch.unique(group, return_inverse=True)
    ones = torch.ones_like(values)
    counts = torch.zeros(len(groups), dtype=values.dtype, device=values.device).index_add_(0, index, ones)
    means = torch.zeros(len(groups), dtype=values.dtype, device=values.device).index_add_(0, index, values) / counts
    sq = torch.zeros(len(groups), dtype=values.dtype, device=values.device).index_add_(
        0, index, (values - means[index]) ** 2)
    return means[index], (sq / counts).sqrt()[index]


def rloo_advantages(returns: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """RLOO (Ahmadian et al., arXiv 2402.14740; reference §2.2): A_i = R_i − (1/(k−1)) Σ_{j≠i} R_j."""
    return returns - group_mean_others(returns, group)


def grpo_advantages(scores: torch.Tensor, group: torch.Tensor, scale: bool = True,
                    eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO outcome supervision (Shao et al., arXiv 2402.03300; reference §2.4): Â_i = (r_i − mean)/(std + ε).

    ``scale=False`` is Dr. GRPO (no std division). Zero-variance guard: a group whose rewards are all equal
    gets advantage 0 (not 0/ε noise). Returns (advantages, mask of zero-variance elements).
    """
    mean, std = group_stats(scores, group)
    zero_var = std < 1e-8
    centred = scores - mean
    advantages = centred / (std + eps) if scale else centred
    return torch.where(zero_var, torch.zeros_like(advantages), advantages), zero_var


def aggregate_loss(per_token: torch.Tensor, mask: torch.Tensor, how: str, max_length: int) -> torch.Tensor:
    """Loss aggregation (reference §2.0, pitfall §6.6): ``token_mean`` over all valid tokens of the batch
    (DAPO, TRL GRPO default), ``seq_mean`` = mean over sequences of each sequence's token mean (GRPO paper),
    ``constant`` = Σ tokens / (B·L_max) (Dr. GRPO).
    """
    m = mask.to(per_token.dtype)
    if how == "token_mean":
        return (per_token * m).sum() / m.sum().clamp(min=1)
    if how == "seq_mean":
        return ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()
    if how == "constant":
        return (per_token * m).sum() / (per_token.shape[0] * max_length)
    raise ValueError(f"unknown loss aggregation {how!r}")
