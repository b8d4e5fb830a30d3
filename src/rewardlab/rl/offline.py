"""Offline preference objectives on the policy itself: DPO, IPO, cDPO (rlhf-reference.md §2.7).

h = [log π_θ(y_w|x) − log π_ref(y_w|x)] − [log π_θ(y_l|x) − log π_ref(y_l|x)], the log-probabilities
summed over response tokens (for IPO: averaged per token, TRL's choice, "confirmed with the IPO authors";
OpenRLHF sums; recorded in run.json).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO (Rafailov et al., arXiv 2305.18290 Eq. 7): L = −log σ(β·h)."""
    return -F.logsigmoid(beta * h).mean()


def ipo_loss(h: torch.Tensor, tau: float) -> torch.Tensor:
    """IPO (Azar et al., arXiv 2310.12036 Eq. 17): L = (h − 1/(2τ))² (τ: ``policy.dpo.ipo_tau``)."""
    return ((h - 1.0 / (2.0 * tau)) ** 2).mean()


def cdpo_loss(h: torch.Tensor, beta: float, epsilon: float) -> torch.Tensor:
    """Conservative DPO (Mitchell's cDPO note): L = −(1−ε) log σ(βh) − ε log σ(−βh)."""
    return (-(1.0 - epsilon) * F.logsigmoid(beta * h) - epsilon * F.logsigmoid(-beta * h)).mean()
