"""K-wise reward-model losses over the scores of K responses to one prompt (rlhf-reference.md §1.3).

``scores`` is (B, K); ``order`` is (B, K) with the indices of the responses from best to worst, so
``scores.gather(1, order)`` lists them in ranked order.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from rewardlab.losses.registry import register_loss


def _ranked(scores: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    return scores.gather(1, order)


@register_loss("plackett_luce", "rankings", "Plackett–Luce listwise NLL")
def plackett_luce(scores: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Plackett–Luce listwise NLL, §1.3.2 (Zhu et al., arXiv 2301.11270; DPO App. A.3):
    L = −Σ_{k=0}^{K−1} [ r(x, y_τ(k)) − log Σ_{j=k}^{K−1} exp r(x, y_τ(j)) ]. With K = 2 it is BT.
    """
    ranked = _ranked(scores, order)
    # log Σ_{j≥k} exp r_τ(j): a reversed cumulative logsumexp.
    tail_lse = torch.flip(torch.logcumsumexp(torch.flip(ranked, [1]), dim=1), [1])
    return -(ranked - tail_lse).sum(dim=1).mean()


@register_loss("kwise_allpairs", "rankings", "InstructGPT: all C(K,2) pairs of a prompt in one batch element")
def kwise_allpairs(scores: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """InstructGPT all-pairs loss, §1.3.1 (arXiv 2203.02155 Eq. 1): all C(K,2) pairs of one ranking in one
    batch element, L = −1/C(K,2) Σ_{i<j} log σ(r_τ(i) − r_τ(j)). With K = 2 it is BT.
    """
    ranked = _ranked(scores, order)
    k = ranked.shape[1]
    better, worse = zip(*itertools.combinations(range(k), 2))
    diffs = ranked[:, list(better)] - ranked[:, list(worse)]
    return -F.logsigmoid(diffs).mean(dim=1).mean()


@register_loss("best_of_k", "rankings", "Best-of-K softmax (Ziegler et al.)")
def best_of_k(scores: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Best-of-K softmax, §1.3.3 (Ziegler et al., arXiv 1909.08593, ``label_types.PickBest``):
    L = −log softmax_k(r(x, y_1..y_K))[best]; the first term of Plackett–Luce.
    """
    return -(F.log_softmax(scores, dim=1).gather(1, order[:, :1])).mean()
