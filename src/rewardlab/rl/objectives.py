"""Policy and value objectives (tensors in, scalar loss and diagnostics out), aggregated as a token mean."""

from __future__ import annotations

import torch

from rewardlab.rl.advantages import masked_mean


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                      clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO policy loss (Schulman et al., arXiv 1707.06347; reference §2.6):
    L_pg = mean_t max(−Â_t ρ_t, −Â_t clip(ρ_t, 1−ε, 1+ε)), ρ_t = π_θ/π_old. Returns (loss, clipfrac).
    """
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clipfrac


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


def policy_gradient(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:
    """REINFORCE (Williams 1992; reference §2.1): L = −mean_t Â_t·ρ_t, whose gradient at ρ = 1 is
    −Â_t ∇ log π_θ(y_t|s_t). Used on-policy (one step per rollout mini-batch), so no clipping.
    """
    ratio = torch.exp(logp - old_logp)
    return masked_mean(-advantages * ratio, mask)
