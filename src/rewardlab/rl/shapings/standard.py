"""The shapings rewardlab ships (rlhf-reference.md §1.14); their math is in ``credit``."""

from __future__ import annotations

from rewardlab.rl.shapings import Shaped, ShapingInputs, register_shaping
from rewardlab.rl.shapings import credit as C


@register_shaping("sparse", "r_t = 1[t = T]·R (TRL, N+, OpenRLHF)")
def sparse(x: ShapingInputs) -> Shaped:
    return Shaped(C.sparse(x.score, x.mask), x.score)


@register_shaping("uniform", "r_t = R/T (the ABC repository's baseline)")
def uniform(x: ShapingInputs) -> Shaped:
    return Shaped(C.uniform(x.score, x.mask), x.score)


@register_shaping("abc", "RM attention from the final token (Chan et al., arXiv 2402.00782)", needs=("attention",))
def abc(x: ShapingInputs) -> Shaped:
    return Shaped(C.attention_credit(x.score, x.final_token_attention(), x.mask, x.options["abc_beta"]), x.score)


@register_shaping("prefix_difference", "R_φ(x, y_≤t) − R_φ(x, y_≤t−1) (RED / R3HF, arXiv 2411.08302)")
def prefix_difference(x: ShapingInputs) -> Shaped:
    task = C.prefix_difference(x.prefix_scores(), x.mask)
    # Composite extras are sequence-level: they stay sparse on top of the dense RM credit.
    return Shaped(task + C.sparse(x.score - x.rm_score, x.mask), x.score)


@register_shaping("dpo_implicit", "β·log π_DPO/π_ref per token (RTO, arXiv 2404.18922)", needs=("dpo_policy",))
def dpo_implicit(x: ShapingInputs) -> Shaped:
    """The DPO policy's implicit token reward replaces the RM; its sum is the sequence score."""
    task = x.options["dpo"]["beta"] * x.dpo_log_ratio() * x.mask
    return Shaped(task, task.sum(-1))


@register_shaping("oracle", "r_t = g_t, the gold per-token credit (an upper bound only the toy gives)",
                  needs=("gold_credits",))
def oracle(x: ShapingInputs) -> Shaped:
    return Shaped(x.gold_credits, x.gold_credits.sum(-1), penalised=False)
