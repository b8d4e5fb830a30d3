"""The reward-model loss registry: a loss registers itself, in its own module, with everything the rest of the
lab needs to know about it — the label shape it consumes, the batch inputs it takes, its hyper-parameters
(their config keys under ``reward.loss_params``, defaults and bounds), and the width of the head it trains.

The config schema (``reward.losses`` and ``reward.loss_params``), the label file a loss reads, and the
Snakefile's inputs are all derived from these entries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from rewardlab.registry import Registry

# The label sets the annotators write, and the file each lives in under labels/<noise>/.
LABEL_FILES = {"pairs": "pairs_train.jsonl", "rankings": "rankings_train.jsonl", "ratings": "ratings_train.jsonl"}
# What a batch of each shape provides; a loss names the subset it takes, in its argument order.
DEFAULT_INPUTS = {"pairs": ("chosen", "rejected"), "rankings": ("scores", "order"), "ratings": ("predicted", "target")}


@dataclass(frozen=True)
class LossParam:
    """A hyper-parameter: its key under ``reward.loss_params``, default and bounds (they become the schema)."""

    key: str
    default: float
    minimum: float | None = 0.0
    maximum: float | None = None
    description: str = ""

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "number", "default": self.default}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class LossSpec:
    name: str
    fn: Callable[..., torch.Tensor]
    label_shape: str  # pairs, rankings or ratings
    description: str
    inputs: tuple[str, ...] = ()  # batch keys passed positionally; the shape's default when empty
    params: Mapping[str, LossParam] = field(default_factory=dict)  # function kwarg -> its config entry
    head_dim: int = 1  # outputs of the RM head (5 for the multi-attribute head)
    exploratory: bool = False
    logit_output: bool = True  # σ(r_c − r_r) is the modelled preference probability (False: hinge, regression …)

    @property
    def label_file(self) -> str:
        return LABEL_FILES[self.label_shape]

    @property
    def batch_inputs(self) -> tuple[str, ...]:
        return self.inputs or DEFAULT_INPUTS[self.label_shape]


LOSSES: Registry[LossSpec] = Registry("reward loss", "rewardlab.losses")


def register_loss(name: str, label_shape: str, description: str, **options: Any) -> Callable:
    """Decorator: register the function below as the loss ``name`` (options: the other ``LossSpec`` fields)."""
    if label_shape not in LABEL_FILES:
        raise ValueError(f"loss {name!r}: label shape {label_shape!r} is not one of {', '.join(LABEL_FILES)}")

    def decorate(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        LOSSES.add(name, LossSpec(name, fn, label_shape, description, **options))
        return fn

    return decorate


def get(name: str) -> LossSpec:
    return LOSSES.get(name)


def hyperparameters(spec: LossSpec, loss_params: Mapping[str, Any]) -> dict[str, Any]:
    """The loss's keyword arguments from ``reward.loss_params`` (defaults where the config has none)."""
    return {arg: loss_params.get(p.key, p.default) for arg, p in spec.params.items()}


def call(spec: LossSpec, batch: Mapping[str, torch.Tensor], loss_params: Mapping[str, Any]) -> torch.Tensor:
    """Evaluate ``spec`` on a batch of head outputs (keys depend on the label shape)."""
    return spec.fn(*(batch[key] for key in spec.batch_inputs), **hyperparameters(spec, loss_params))


def loss_params_schema() -> dict[str, Any]:
    """``reward.loss_params``' properties: every registered loss's hyper-parameters."""
    properties: dict[str, Any] = {}
    for _, spec in LOSSES.items():
        for param in spec.params.values():
            properties[param.key] = param.schema()
    return properties
