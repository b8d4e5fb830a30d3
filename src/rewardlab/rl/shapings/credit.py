"""The math of per-token credit: sparse versus dense ("instant") rewards (rlhf-reference.md §1.14).

Every function returns the task part of the per-token reward r_t (B, T) over response tokens; the KL
penalty and the missing-EOS penalty are added by the loop. ``score`` is the sequence score R (B,). The
registered shapings (``rewardlab.rl.shapings``) are built from these:

  sparse             r_t = 1[t = T]·R                                  (TRL, N+, OpenRLHF)
  uniform            r_t = R/T                                         (ABC repo baseline)
  abc                r_t = β·w_t·R + (1 − β)·1[t = T]·R, w_t the RM's last-layer attention from the final
                     token to response token t, averaged over heads, renormalised (Chan et al., arXiv
                     2402.00782)
  prefix_difference  r_t = R_φ(x, y_≤t) − R_φ(x, y_≤t−1), the RM on growing prefixes (RED / R3HF, arXiv
                     2411.08302). A causal RM's head at position t *is* R_φ(x, y_≤t), so one forward pass
                     gives every prefix score. Σ_t r_t = R_φ(x, y) − R_φ(x): potential-based shaping of
                     the sparse reward (Ng et al. 1999), same optimum, other credit assignment.
  dpo_implicit       r_t = β·log π_DPO(y_t|s_t)/π_ref(y_t|s_t), the implicit token reward of a DPO policy
                     trained on the same pairs (RTO, arXiv 2404.18922; "From r to Q*", arXiv 2404.12358);
                     computed in the policy loop, which holds the DPO and reference models
  oracle             r_t = g_t, the gold per-token credit (only a synthetic task can give it; an upper bound)
"""

from __future__ import annotations

import torch

from rewardlab.rl.advantages import last_valid_index


def sparse(score: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    rewards = torch.zeros(mask.shape, dtype=score.dtype, device=score.device)
    return rewards.scatter(1, last_valid_index(mask)[:, None], score[:, None])


def uniform(score: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(score.dtype)
    return score[:, None] * m / m.sum(-1, keepdim=True).clamp(min=1)


def attention_credit(score: torch.Tensor, attention_weights: torch.Tensor, mask: torch.Tensor,
                     beta: float) -> torch.Tensor:
    """ABC: ``attention_weights`` (B, T) from the final token to each response token (any scale)."""
    m = mask.to(score.dtype)
    w = attention_weights.to(score.dtype) * m
    w = w / w.sum(-1, keepdim=True).clamp(min=1e-12)
    return beta * w * score[:, None] + (1.0 - beta) * sparse(score, mask)


def prefix_difference(prefix_scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``prefix_scores`` (B, T + 1): R_φ(x, y_≤t) for t = 0 (prompt only) … T. Returns r_t = Δ of consecutive ones."""
    return (prefix_scores[:, 1:] - prefix_scores[:, :-1]) * mask.to(prefix_scores.dtype)


def final_token_attention(attentions: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int) -> torch.Tensor:
    """From the RM's last-layer attentions (B, H, S, S): the row of each sequence's last non-pad token,
    averaged over heads, restricted to the response columns (``abcrl get_attention_distribution``).
    """
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (positions * attention_mask.long()).argmax(-1)
    rows = attentions.mean(1)[torch.arange(attentions.shape[0], device=attentions.device), last]  # (B, S)
    return rows[:, prompt_width:]
