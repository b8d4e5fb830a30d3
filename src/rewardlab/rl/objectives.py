"""Policy and value objectives: per-token losses (the loop aggregates them, pitfall §6.6). Tensors in, tensors out."""

from __future__ import annotations

import torch

from rewardlab.rl.advantages import masked_mean


def clipped_surrogate_tokens(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                             clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate per token (Schulman et al., arXiv 1707.06347; reference §2.6):
    l_t = max(−Â_t ρ_t, −Â_t clip(ρ_t, 1−ε, 1+ε)), ρ_t = π_θ/π_old. Returns (l_t, clipped indicator).
    """
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    return torch.maximum(unclipped, clipped), (clipped > unclipped).float()


def policy_gradient_tokens(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """REINFORCE per token (Williams 1992; reference §2.1): l_t = −Â_t·ρ_t, whose gradient at ρ = 1 is
    −Â_t ∇ log π_θ(y_t|s_t). Used on-policy (one step per rollout mini-batch), so no clipping.
    """
    return -advantages * torch.exp(logp - old_logp)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L_vf = ½·mean max((V − R)², (V_clip − R)²), V_clip = V_old + clip(V − V_old, −ε_v, ε_v) (§2.6).
    Returns (loss, value clipfrac).
    """
    v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    clipfrac = masked_mean((loss_clipped > loss_unclipped).float(), mask)
    return loss, clipfrac
