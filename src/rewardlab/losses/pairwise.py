"""Pairwise reward-model losses over score differences Δ = r_φ(x, y_c) − r_φ(x, y_r)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry loss, rlhf-reference.md §1.1: L = −E log σ(r_φ(x, y_c) − r_φ(x, y_r)).

    InstructGPT (arXiv 2203.02155) Eq. 1; Stiennon et al. (arXiv 2009.01325); TRL ``RewardTrainer``.
    """
    return -F.logsigmoid(chosen - rejected).mean()
