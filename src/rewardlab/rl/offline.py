"""Offline preference objectives on the policy itself: DPO, IPO, cDPO (rlhf-reference.md §2.7), in one registry.

h = [log π_θ(y_w|x) − log π_ref(y_w|x)] − [log π_θ(y_l|x) − log π_ref(y_l|x)], the log-probabilities
summed over response tokens (for IPO: averaged per token, TRL's choice, "confirmed with the IPO authors";
OpenRLHF sums; recorded in run.json). An objective registers a function of the batch's ``LogRatios`` and
``policy.dpo`` settings; the offline stage (``rewardlab.train.dpo``) and the DAG take their names from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from rewardlab.registry import Registry


@dataclass(frozen=True)
class LogRatios:
    """log π_θ/π_ref of chosen and rejected responses (summed over tokens), and their lengths in tokens."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_length: torch.Tensor
    rejected_length: torch.Tensor


Objective = Callable[[LogRatios, Mapping[str, Any]], torch.Tensor]
OFFLINE: Registry[Objective] = Registry("offline objective", "rewardlab.rl.offline")


def dpo_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO (Rafailov et al., arXiv 2305.18290 Eq. 7): L = −log σ(β·h)."""
    return -F.logsigmoid(beta * h).mean()


def ipo_loss(h: torch.Tensor, tau: float) -> torch.Tensor:
    """IPO (Azar et al., arXiv 2310.12036 Eq. 17): L = (h − 1/(2τ))² (τ: ``policy.dpo.ipo_tau``)."""
    return ((h - 1.0 / (2.0 * tau)) ** 2).mean()


def cdpo_loss(h: torch.Tensor, beta: float, epsilon: float) -> torch.Tensor:
    """Conservative DPO (Mitchell's cDPO note): L = −(1−ε) log σ(βh) − ε log σ(−βh)."""
    return (-(1.0 - epsilon) * F.logsigmoid(beta * h) - epsilon * F.logsigmoid(-beta * h)).mean()


@OFFLINE.register("dpo")
def dpo(r: LogRatios, cfg: Mapping[str, Any]) -> torch.Tensor:
    return dpo_loss(r.chosen - r.rejected, cfg["beta"])


@OFFLINE.register("ipo")
def ipo(r: LogRatios, cfg: Mapping[str, Any]) -> torch.Tensor:
    """IPO on length-normalised log-ratios (TRL)."""
    h = r.chosen / r.chosen_length.clamp(min=1) - r.rejected / r.rejected_length.clamp(min=1)
    return ipo_loss(h, cfg["ipo_tau"])


@OFFLINE.register("cdpo")
def cdpo(r: LogRatios, cfg: Mapping[str, Any]) -> torch.Tensor:
    return cdpo_loss(r.chosen - r.rejected, cfg["beta"], cfg["cdpo_epsilon"])
