"""How the reward reaches the tokens (``policy.shapings``): one registry of shapings, each a pure function
from what the loop knows about a scored rollout batch (``ShapingInputs``) to per-token task rewards.

What a shaping may ask for beyond the sequence score — the RM's score of every prefix, its last-layer
attention from the final token, a DPO policy's per-token log-ratio, the gold per-token credit — arrives as
tensors or as functions that compute them on demand; the shaping declares in ``needs`` which of the costly
ones (``attention``, ``dpo_policy``, ``gold_credits``) it uses, so the policy stage loads only those models
and the DAG adds the DPO policy to its inputs only then. A new shaping is one module here that calls
``register_shaping``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from rewardlab.registry import Registry

NEEDS = ("attention", "dpo_policy", "gold_credits")


@dataclass
class ShapingInputs:
    """A scored rollout batch, as a shaping sees it. (B, T) over response tokens unless noted."""

    score: torch.Tensor  # (B,) the sequence score: composite of the RM and its extras, before the EOS penalty
    rm_score: torch.Tensor  # (B,) its reward-model part (the composite's task weight × the normalised RM score)
    mask: torch.Tensor
    gold_credits: torch.Tensor  # the gold per-token credit g_t (NaN on real data)
    options: Mapping[str, Any]  # the policy options (abc_beta, dpo.beta, …)
    prefix_scores: Callable[[], torch.Tensor]  # (B, T + 1): normalised R_φ(x, y_≤t), t = 0 … T
    final_token_attention: Callable[[], torch.Tensor]  # RM last-layer attention from the final token (B, T)
    dpo_log_ratio: Callable[[], torch.Tensor]  # log π_DPO(y_t|s_t) − log π_ref(y_t|s_t) at temperature 1


@dataclass
class Shaped:
    task: torch.Tensor  # (B, T) per-token task reward
    score: torch.Tensor  # (B,) the sequence score it stands for
    penalised: bool = True  # False: the credits already hold the missing-EOS penalty (the loop adds none)


@dataclass(frozen=True)
class Shaping:
    name: str
    fn: Callable[[ShapingInputs], Shaped]
    description: str
    needs: frozenset[str] = frozenset()


SHAPINGS: Registry[Shaping] = Registry("reward shaping", "rewardlab.rl.shapings")


def register_shaping(name: str, description: str, needs: tuple[str, ...] = ()) -> Callable:
    """Decorator: register the function below as the shaping ``name``."""
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"shaping {name!r} needs {sorted(unknown)}; the loop provides {', '.join(NEEDS)}")

    def decorate(fn: Callable[[ShapingInputs], Shaped]) -> Callable[[ShapingInputs], Shaped]:
        SHAPINGS.add(name, Shaping(name, fn, description, frozenset(needs)))
        return fn

    return decorate
