"""Reward-model losses: one registry, one pure function per loss (tensors in, scalar out).

Each function's docstring cites its paper and equation (rlhf-reference.md §1) and its module registers it
(``@register_loss``) with the label shape it consumes, so the label set it needs is known before anything
runs:

* ``pairs``: chosen/rejected scores (B,), optionally a margin or pooled embeddings;
* ``rankings``: scores (B, K) and the annotator's order (B, K);
* ``ratings``: predicted (B,) or (B, A) against Likert ratings.

A new loss is one new module in this package: the registry imports every module here when it is first read.
"""

from rewardlab.losses.registry import LABEL_FILES, LOSSES, LossParam, LossSpec, call, get, hyperparameters

__all__ = ["LABEL_FILES", "LOSSES", "LossParam", "LossSpec", "call", "get", "hyperparameters"]
