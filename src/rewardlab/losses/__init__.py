"""Reward-model losses: one registry, one pure function per loss (tensors in, scalar out).

Each function's docstring cites its paper and equation (rlhf-reference.md §1). A loss declares the label
shape it needs (``pairs`` for now), so a mismatch with the labels is a config error before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rewardlab.losses.pairwise import bradley_terry


@dataclass(frozen=True)
class LossSpec:
    name: str
    fn: Callable[..., torch.Tensor]
    label_shape: str  # "pairs"
    description: str


REGISTRY: dict[str, LossSpec] = {
    "bt": LossSpec("bt", bradley_terry, "pairs", "Bradley–Terry pairwise (InstructGPT, Stiennon, Ziegler)"),
}


def get(name: str) -> LossSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown reward loss {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
