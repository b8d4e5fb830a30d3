"""Label sets as training batches for the reward model: one class per label shape, each encoding its rows once
and turning a mini-batch into the sequences of one forward pass and, from the head's outputs, the loss.

A loss (``rewardlab.losses``) names the label shape it consumes; ``LABEL_SETS[shape]`` is the class that
feeds it. Every set returns the same thing for a batch: ``sequences`` (all responses of the batch, padded only
to the batch's longest row by the caller), ``prompt_lengths``, and ``loss(spec, outputs, params)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from rewardlab import losses
from rewardlab.data.annotators import ATTRIBUTES
from rewardlab.data.formats import chat_renderer, read_pairs
from rewardlab.models.tokenizer import encode_prompt_responses


@dataclass
class HeadOutputs:
    """The reward model on one batch: scores (N,) or (N, D) at the last token, and pooled hidden states."""

    scores: torch.Tensor
    hidden: torch.Tensor  # at each sequence's last token
    prompt_hidden: torch.Tensor  # at each sequence's last prompt token


@dataclass
class Batch:
    sequences: list[list[int]]
    prompt_lengths: list[int]
    index: torch.Tensor


class LabelSet:
    """Examples of one label shape, encoded once."""

    def __init__(self, tokenizer: Any, prompts: list[str]):
        lengths = {p: len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in dict.fromkeys(prompts)}
        self.prompt_length = [lengths[p] for p in prompts]
        self.size = len(prompts)

    def __len__(self) -> int:
        return self.size

    def batch(self, index: list[int]) -> Batch:
        raise NotImplementedError

    def loss(self, spec: losses.LossSpec, batch: Batch, out: HeadOutputs,
             params: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


class PairSet(LabelSet):
    """Chosen/rejected pairs: a batch is its chosen responses, then its rejected ones."""

    def __init__(self, rows: list[dict], tokenizer: Any, combination: Mapping[str, Any] | None = None):
        pairs = read_pairs(rows, losses.LABEL_FILES["pairs"], chat_renderer(tokenizer))
        prompts = [p["prompt"] for p in pairs]
        super().__init__(tokenizer, prompts)
        self.chosen = encode_prompt_responses(tokenizer, prompts, [p["chosen"] for p in pairs])
        self.rejected = encode_prompt_responses(tokenizer, prompts, [p["rejected"] for p in pairs])
        self.margin = torch.tensor([p["margin"] for p in pairs], dtype=torch.float)

    def batch(self, index: list[int]) -> Batch:
        lengths = [self.prompt_length[i] for i in index]
        return Batch([self.chosen[i] for i in index] + [self.rejected[i] for i in index], lengths * 2,
                     torch.tensor(index))

    def loss(self, spec, batch, out, params):
        n = len(batch.index)
        r_c, r_r = out.scores[:n], out.scores[n:]
        inputs = {"chosen": r_c, "rejected": r_r, "margin": self.margin[batch.index].to(r_c.device),
                  "h_chosen": out.hidden[:n], "h_rejected": out.hidden[n:], "h_prompt": out.prompt_hidden[:n]}
        stats = {"accuracy": (r_c > r_r).float().mean().item(), "margin": (r_c - r_r).mean().item()}
        return losses.call(spec, inputs, params), stats


class RankingSet(LabelSet):
    """K responses per prompt and the annotator's order (best first): a batch is K rows per example."""

    def __init__(self, rows: list[dict], tokenizer: Any, combination: Mapping[str, Any] | None = None):
        super().__init__(tokenizer, [r["prompt"] for r in rows])
        self.k = len(rows[0]["responses"])
        self.responses = [encode_prompt_responses(tokenizer, [r["prompt"]] * self.k, r["responses"]) for r in rows]
        self.order = torch.tensor([r["order"] for r in rows], dtype=torch.long)

    def batch(self, index: list[int]) -> Batch:
        return Batch([s for i in index for s in self.responses[i]],
                     [self.prompt_length[i] for i in index for _ in range(self.k)], torch.tensor(index))

    def loss(self, spec, batch, out, params):
        grid = out.scores.view(len(batch.index), self.k)
        order = self.order[batch.index].to(grid.device)
        top1 = (grid.argmax(1) == order[:, 0]).float().mean().item()
        return losses.call(spec, {"scores": grid, "order": order}, params), {"accuracy": top1}


class RatingSet(LabelSet):
    """Likert ratings of single responses: the attribute vector, and the scalar target a scalar head regresses.

    The scalar is the annotator's scalar rating (or, in older label files, the fixed combination of attribute
    ratings that estimates R*), standardised over the training ratings.
    R* sits far from 0 (about −20 on a young SFT policy's samples): regressed raw, the first hundreds of steps
    only move the output's offset (seen in bf16 on a GPU). An affine change of target leaves the order unchanged.
    """

    def __init__(self, rows: list[dict], tokenizer: Any, combination: Mapping[str, Any] | None = None):
        super().__init__(tokenizer, [r["prompt"] for r in rows])
        self.sequences = encode_prompt_responses(tokenizer, [r["prompt"] for r in rows], [r["response"] for r in rows])
        self.attributes = torch.tensor([[float(r[a]) for a in ATTRIBUTES] for r in rows])
        scalar = None
        if rows and "rating" in rows[0]:  # the annotator's scalar rating (R* + τ·G, the noise model of the pairs)
            scalar = torch.tensor([float(r["rating"]) for r in rows])
        elif combination:  # older label files: the fixed combination of the attribute ratings
            scalar = self.attributes @ torch.tensor(combination["weights"]) + combination["offset"]
        self.scalar = None if scalar is None else (scalar - scalar.mean()) / scalar.std().clamp_min(1e-8)

    def batch(self, index: list[int]) -> Batch:
        return Batch([self.sequences[i] for i in index], [self.prompt_length[i] for i in index], torch.tensor(index))

    def loss(self, spec, batch, out, params):
        target = self.attributes[batch.index] if spec.head_dim > 1 else self.scalar[batch.index]
        return losses.call(spec, {"predicted": out.scores, "target": target.to(out.scores.device)}, params), {}


LABEL_SETS: dict[str, type[LabelSet]] = {"pairs": PairSet, "rankings": RankingSet, "ratings": RatingSet}
