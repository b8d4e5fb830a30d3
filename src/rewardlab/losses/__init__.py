"""Reward-model losses: one registry, one pure function per loss (tensors in, scalar out).

Each function's docstring cites its paper and equation (rlhf-reference.md §1). A loss declares the label
shape it consumes, so the label set it needs is known before anything runs:

* ``pairs``: chosen/rejected scores (B,), optionally a margin or pooled embeddings;
* ``rankings``: scores (B, K) and the annotator's order (B, K);
* ``ratings``: predicted (B,) or (B, A) against Likert ratings.

``call(spec, scores, batch, params)`` maps a batch onto the function's arguments, with the loss's
hyper-parameters taken from ``reward.loss_params``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from rewardlab.losses import listwise, pairwise, regression
from rewardlab.losses.catalog import LOSS_SHAPES

LABEL_SHAPES = ("pairs", "rankings", "ratings")


@dataclass(frozen=True)
class LossSpec:
    name: str
    fn: Callable[..., torch.Tensor]
    description: str
    params: Mapping[str, str] = field(default_factory=dict)  # function kwarg -> reward.loss_params key
    head_dim: int = 1  # outputs of the RM head (5 for the multi-attribute head)
    uses_margin: bool = False
    uses_embeddings: bool = False
    exploratory: bool = False

    @property
    def label_shape(self) -> str:
        """pairs, rankings or ratings (from ``rewardlab.losses.catalog``)."""
        return LOSS_SHAPES[self.name]


REGISTRY: dict[str, LossSpec] = {
    spec.name: spec
    for spec in [
        LossSpec("bt", pairwise.bradley_terry, "Bradley–Terry pairwise (InstructGPT, Stiennon, Ziegler)"),
        LossSpec("bt_margin", pairwise.bradley_terry_margin, "BT with Llama-2 preference-strength margins",
                 uses_margin=True),
        LossSpec("kwise_allpairs", listwise.kwise_allpairs,
                 "InstructGPT: all C(K,2) pairs of a prompt in one batch element"),
        LossSpec("plackett_luce", listwise.plackett_luce, "Plackett–Luce listwise NLL"),
        LossSpec("best_of_k", listwise.best_of_k, "Best-of-K softmax (Ziegler et al.)"),
        LossSpec("hinge", pairwise.hinge, "Margin ranking max(0, m − Δ)", {"margin": "hinge_margin"}),
        LossSpec("mse_rating", regression.mse_rating, "Regression on a scalar rating (Ziegler)"),
        LossSpec("mse_multiattr", regression.mse_multiattr,
                 "SteerLM/HelpSteer2 multi-attribute regression head", head_dim=5),
        LossSpec("focal", pairwise.focal, "Focal BT with optional log-barrier (InternLM2)",
                 {"gamma": "focal_gamma", "barrier_weight": "focal_barrier_weight"}),
        LossSpec("label_smoothing", pairwise.label_smoothing, "Conservative BT (cDPO-style smoothing)",
                 {"epsilon": "label_smoothing"}),
        LossSpec("robust_bt", pairwise.robust_bt, "Unbiased BT under flip rate ε (Chowdhury et al.)",
                 {"epsilon": "robust_epsilon"}),
        LossSpec("bt_centered", pairwise.bt_centered, "BT + reward-centering regulariser (Eisenstein)",
                 {"coefficient": "center_coefficient"}),
        LossSpec("classification", pairwise.classification, "Order-consistent classifier (Sun et al.)"),
        LossSpec("triplet_aux", pairwise.triplet_aux, "BT + triplet auxiliary on embeddings (exploratory)",
                 {"margin": "triplet_margin", "weight": "triplet_weight"}, uses_embeddings=True, exploratory=True),
    ]
}


def get(name: str) -> LossSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown reward loss {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def hyperparameters(spec: LossSpec, loss_params: Mapping[str, Any]) -> dict[str, Any]:
    return {arg: loss_params[key] for arg, key in spec.params.items()}


def call(spec: LossSpec, batch: Mapping[str, torch.Tensor], loss_params: Mapping[str, Any]) -> torch.Tensor:
    """Evaluate ``spec`` on a batch of scores (keys depend on the label shape)."""
    kwargs = hyperparameters(spec, loss_params)
    if spec.label_shape == "pairs":
        args = [batch["chosen"], batch["rejected"]]
        if spec.uses_margin:
            args.append(batch["margin"])
        if spec.uses_embeddings:
            args += [batch["h_chosen"], batch["h_rejected"], batch["h_prompt"]]
        return spec.fn(*args, **kwargs)
    if spec.label_shape == "rankings":
        return spec.fn(batch["scores"], batch["order"], **kwargs)
    return spec.fn(batch["predicted"], batch["target"], **kwargs)
