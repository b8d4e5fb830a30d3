"""Regression reward-model losses on absolute ratings (rlhf-reference.md §1.5)."""

from __future__ import annotations

import torch

from rewardlab.losses.registry import register_loss


@register_loss("mse_rating", "ratings", "Regression on a scalar rating (Ziegler)", logit_output=False)
def mse_rating(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Scalar rating regression (Ziegler et al. ``label_types.ScalarRating``): L = mean (s − r_φ(x, y))²."""
    return ((predicted - target) ** 2).mean()


@register_loss("mse_multiattr", "ratings", "SteerLM/HelpSteer2 multi-attribute regression head", head_dim=5,
               logit_output=False)
def mse_multiattr(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SteerLM / HelpSteer2 multi-attribute regression (arXiv 2310.05344, 2406.08673):
    L = E ‖v_φ(x, y) − a‖² over the attribute vector a (summed over attributes, averaged over the batch).
    """
    return ((predicted - target) ** 2).sum(dim=-1).mean()
