"""Scoring with a trained reward model or an ensemble of them.

A reward-model folder is a Hugging Face ``AutoModelForSequenceClassification`` directory. An ensemble
(``reward.ensemble.members > 1``) keeps member 0 at the top level, so the folder still loads as one model,
and the other members under ``members/<m>/``, listed in ``ensemble.json`` with the aggregate.

Ensemble aggregation (Coste et al., arXiv 2310.02743; Eisenstein et al., arXiv 2312.09244; §1.9): members
are z-normalised on SFT samples first (pitfall §6.9), then combined by ``mean``, ``min`` (worst-case, WCO)
or ``uwo`` (mean − λ·variance).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rewardlab.models.build import load_reward_model, reward_normalisation, sequence_scores
from rewardlab.models.tokenizer import encode_prompt_responses
from rewardlab.tensors import pad_right

ENSEMBLE_FILE = "ensemble.json"


def aggregate(z: torch.Tensor, how: str, uwo_lambda: float = 0.5) -> torch.Tensor:
    """Combine z-normalised member scores (M, B) into (B,)."""
    if how == "mean":
        return z.mean(0)
    if how == "min":
        return z.min(0).values
    if how == "uwo":
        return z.mean(0) - uwo_lambda * z.var(0, unbiased=False)
    raise ValueError(f"unknown ensemble aggregate {how!r}; expected mean, min or uwo")


class RewardScorer:
    """``raw``: a score on the BT scale (for accuracy and calibration); ``normalised``: mean 0 / std 1 on SFT
    samples (what RL optimises). For one model, normalised = (raw − μ)/σ; for an ensemble the aggregate of
    the members' z-scores, and raw = σ̄·aggregate + μ̄ with the members' mean statistics. ``prompt_width``: the
    rows' prompts end there (left-padded prompts, then responses), so rows that share a prompt share its pass.
    """

    def __init__(self, path: str | Path, device: torch.device | str = "cpu"):
        path = Path(path)
        spec_file = path / ENSEMBLE_FILE
        spec = json.loads(spec_file.read_text()) if spec_file.exists() else {"members": ["."], "aggregate": "mean"}
        self.aggregate, self.uwo_lambda = spec["aggregate"], spec.get("uwo_lambda", 0.5)
        self.models = [load_reward_model(path / member).to(device).eval() for member in spec["members"]]
        stats = [reward_normalisation(m) for m in self.models]
        self.means = torch.tensor([s[0] for s in stats])
        self.stds = torch.tensor([s[1] for s in stats])

    @property
    def members(self) -> int:
        return len(self.models)

    @torch.no_grad()
    def _z(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
           prompt_width: int | None = None) -> torch.Tensor:
        raw = torch.stack([sequence_scores(m, input_ids, attention_mask, prompt_width).float() for m in self.models])
        return (raw - self.means.to(raw.device)[:, None]) / self.stds.to(raw.device)[:, None]

    @torch.no_grad()
    def normalised(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   prompt_width: int | None = None) -> torch.Tensor:
        return aggregate(self._z(input_ids, attention_mask, prompt_width), self.aggregate, self.uwo_lambda)

    @torch.no_grad()
    def raw(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            prompt_width: int | None = None) -> torch.Tensor:
        if len(self.models) == 1:
            return sequence_scores(self.models[0], input_ids, attention_mask, prompt_width).float()
        agg = self.normalised(input_ids, attention_mask, prompt_width)
        return agg * self.stds.mean().to(agg.device) + self.means.mean().to(agg.device)


@torch.no_grad()
def score_texts(score: torch.nn.Module | Callable[[torch.Tensor, torch.Tensor], torch.Tensor], tokenizer: Any,
                prompts: list[str], responses: list[str], device: torch.device | str,
                batch_size: int = 512) -> torch.Tensor:
    """Scores of prompt + response texts, in batches padded on the right: ``score`` is a reward model (its raw
    r_φ(x, y)) or any function of (input_ids, attention_mask), e.g. a ``RewardScorer``'s ``normalised``."""
    if isinstance(score, torch.nn.Module):
        model = score.eval()
        score = lambda ids, mask: sequence_scores(model, ids, mask)  # noqa: E731
    sequences = encode_prompt_responses(tokenizer, prompts, responses)
    out = []
    for i in range(0, len(sequences), batch_size):
        ids, mask = pad_right(sequences[i : i + batch_size], tokenizer.pad_token_id)
        out.append(score(ids.to(device), mask.to(device)).float().cpu())
    return torch.cat(out)
