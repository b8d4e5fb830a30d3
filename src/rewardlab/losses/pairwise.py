"""Pairwise reward-model losses over r_c = r_φ(x, y_c), r_r = r_φ(x, y_r) and Δ = r_c − r_r.

Each function takes (B,) tensors and returns the batch-mean loss; hyper-parameters are keyword arguments
with the defaults of the cited source. Equations: rlhf-reference.md §1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rewardlab.losses.registry import LossParam, register_loss


@register_loss("bt", "pairs", "Bradley–Terry pairwise (InstructGPT, Stiennon, Ziegler)")
def bradley_terry(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry, §1.1: L = −E log σ(r_c − r_r).

    InstructGPT (arXiv 2203.02155) Eq. 1; Stiennon et al. (arXiv 2009.01325); TRL ``RewardTrainer``.
    """
    return -F.logsigmoid(chosen - rejected).mean()


@register_loss("bt_margin", "pairs", "BT with Llama-2 preference-strength margins",
               inputs=("chosen", "rejected", "margin"))
def bradley_terry_margin(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """BT with a preference-strength margin, §1.2 (Llama 2, arXiv 2307.09288 Eq. 2):
    L = −log σ(r_c − r_r − m(r)), m from the annotator's strength bin (small: 0, 1/3, 2/3, 1).
    """
    return -F.logsigmoid(chosen - rejected - margin).mean()


@register_loss("hinge", "pairs", "Margin ranking max(0, m − Δ)", params={"margin": LossParam("hinge_margin", 1.0)},
               logit_output=False)
def hinge(chosen: torch.Tensor, rejected: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Margin ranking, §1.4: L = max(0, m − (r_c − r_r)) (``nn.MarginRankingLoss``)."""
    return F.relu(margin - (chosen - rejected)).mean()


def log_barrier(scores: torch.Tensor, bound: float = 5.0) -> torch.Tensor:
    """−log(b − r) − log(r + b), keeping scores inside (−b, b) (InternLM2 / xtuner ``log_barrier_penalty``).

    Clamped at 1e-6 inside the logs so a score that left the interval gives a large finite penalty.
    """
    return -torch.log((bound - scores).clamp(min=1e-6)) - torch.log((scores + bound).clamp(min=1e-6))


@register_loss("focal", "pairs", "Focal BT with optional log-barrier (InternLM2)",
               params={"gamma": LossParam("focal_gamma", 2.0),
                       "barrier_weight": LossParam("focal_barrier_weight", 0.0,
                                                   description="λ of the log-barrier (xtuner: 0.01; 0: off).")})
def focal(chosen: torch.Tensor, rejected: torch.Tensor, gamma: float = 2.0, barrier_weight: float = 0.0,
          bound: float = 5.0) -> torch.Tensor:
    """Focal BT, §1.6 (InternLM2, arXiv 2403.17297; xtuner ``focal_loss``):
    p = σ(Δ); L = (1 − 2·max(0, p − ½))^γ·(−log p) + λ·[barrier(r_c) + barrier(r_r)].
    The modulating factor is not detached, as in xtuner. λ = 0 turns the log-barrier off (xtuner: 0.01).
    """
    delta = chosen - rejected
    p = torch.sigmoid(delta)
    modulation = (1.0 - 2.0 * torch.clamp(p - 0.5, min=0.0)) ** gamma
    loss = (modulation * -F.logsigmoid(delta)).mean()
    if barrier_weight:
        loss = loss + barrier_weight * (log_barrier(chosen, bound) + log_barrier(rejected, bound)).mean()
    return loss


@register_loss("label_smoothing", "pairs", "Conservative BT (cDPO-style smoothing)",
               params={"epsilon": LossParam("label_smoothing", 0.1, maximum=0.49,
                                            description="ε, the assumed flip rate.")})
def label_smoothing(chosen: torch.Tensor, rejected: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Conservative BT / cDPO-style label smoothing, §1.7: L = −(1−ε) log σ(Δ) − ε log σ(−Δ).

    Mitchell's cDPO note; applied to RMs by "Secrets of RLHF II" (arXiv 2401.06080). Optimum σ(Δ*) = 1 − ε.
    """
    delta = chosen - rejected
    return (-(1.0 - epsilon) * F.logsigmoid(delta) - epsilon * F.logsigmoid(-delta)).mean()


@register_loss("robust_bt", "pairs", "Unbiased BT under flip rate ε (Chowdhury et al.)",
               params={"epsilon": LossParam("robust_epsilon", 0.1, maximum=0.49)})
def robust_bt(chosen: torch.Tensor, rejected: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Unbiased ("robust") BT under flip rate ε, §1.7 (Chowdhury et al., arXiv 2403.00409 Eq. 7):
    L = [(1−ε)(−log σ(Δ)) − ε(−log σ(−Δ))] / (1 − 2ε).
    """
    delta = chosen - rejected
    return (((1.0 - epsilon) * -F.logsigmoid(delta) - epsilon * -F.logsigmoid(-delta)) / (1.0 - 2.0 * epsilon)).mean()


@register_loss("bt_centered", "pairs", "BT + reward-centering regulariser (Eisenstein)",
               params={"coefficient": LossParam("center_coefficient", 0.01)})
def bt_centered(chosen: torch.Tensor, rejected: torch.Tensor, coefficient: float = 0.01) -> torch.Tensor:
    """BT plus the reward-centering regulariser, §1.8 (Eisenstein et al., arXiv 2312.09244 Eq. 2):
    L = −log σ(r_c − r_r) + η·(r_c + r_r)², η = 0.01 (TRL ``center_rewards_coefficient``).
    """
    return bradley_terry(chosen, rejected) + coefficient * ((chosen + rejected) ** 2).mean()


@register_loss("classification", "pairs", "Order-consistent classifier (Sun et al.)", logit_output=False)
def classification(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Order-consistent per-response classifier, §1.11 (Sun et al., arXiv 2411.04991):
    L = −log σ(r(y_c)) − log(1 − σ(r(y_r))).
    """
    return (-F.logsigmoid(chosen) - F.logsigmoid(-rejected)).mean()


@register_loss("triplet_aux", "pairs", "BT + triplet auxiliary on embeddings (exploratory)",
               inputs=("chosen", "rejected", "h_chosen", "h_rejected", "h_prompt"), exploratory=True,
               params={"margin": LossParam("triplet_margin", 1.0), "weight": LossParam("triplet_weight", 0.1)})
def triplet_aux(chosen: torch.Tensor, rejected: torch.Tensor, h_chosen: torch.Tensor, h_rejected: torch.Tensor,
                h_prompt: torch.Tensor, margin: float = 1.0, weight: float = 0.1) -> torch.Tensor:
    """EXPLORATORY, not a literature-standard RM loss (§1.10): BT plus a triplet term on pooled embeddings,
    L = BT + w·max(0, ‖h(x,y_c) − h_x‖ − ‖h(x,y_r) − h_x‖ + m), anchored at the prompt embedding h_x.
    The closest published work adds contrastive auxiliaries to RM representations (arXiv 2401.06080).
    """
    d_chosen = (h_chosen - h_prompt).norm(dim=-1)
    d_rejected = (h_rejected - h_prompt).norm(dim=-1)
    return bradley_terry(chosen, rejected) + weight * F.relu(d_chosen - d_rejected + margin).mean()
