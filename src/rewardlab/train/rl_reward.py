"""The reward a rollout batch earns in the policy loop: the sequence score (the seeds' composite, reference
§4.7: rm·RM normalised + rouge·ROUGE(y, y*) + fluency·mean log π_sft(y) + diversity·distinct-n(y); minus the
missing-EOS penalty), then how it reaches the tokens through the configured shaping (``rewardlab.rl.shapings``),
and the gold per-token credit it is judged by.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from rewardlab.config import run_composite
from rewardlab.evaluate import metrics as M
from rewardlab.evaluate.gold import GoldReward
from rewardlab.evaluate.references import References
from rewardlab.models.build import load_policy, reward_normalisation, token_values
from rewardlab.models.reward import RewardScorer
from rewardlab.rl.advantages import masked_mean
from rewardlab.rl.rollout import Rollout, logprobs_and_entropy, rows_to_lists
from rewardlab.rl.shapings import SHAPINGS, ShapingInputs
from rewardlab.rl.shapings import credit as C
from rewardlab.tensors import position_ids_from_mask


@dataclass
class ScoredBatch:
    proxy: torch.Tensor  # (B,) normalised RM score
    score: torch.Tensor  # (B,) the sequence score the policy optimises, missing-EOS penalty applied
    task: torch.Tensor  # (B, T) per-token task reward (shaped, penalty at the last token)
    gold_credits: torch.Tensor  # (B, T)
    gold: list[float]  # R* per response
    responses: list[list[int]]
    parts: dict[str, float]  # the composite's weighted parts (score_rm, score_rouge, …) and raw ROUGE, means


def pad_rows(rows: list[list[float]], width: int, device: Any) -> torch.Tensor:
    out = torch.zeros(len(rows), width, device=device)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row[:width], dtype=torch.float)
    return out


class RewardSignal:
    """Scores rollouts with the reward model and shapes the score into per-token rewards."""

    def __init__(self, config: Mapping[str, Any], options: Mapping[str, Any], shaping: str, rm_dir: Path,
                 gold: GoldReward, device: torch.device, dpo_dir: Path | None = None,
                 reference: torch.nn.Module | None = None, references: References | None = None):
        self.options, self.gold, self.device, self.reference = options, gold, device, reference
        self.references = references  # y* per prompt (ROUGE), or None
        self.shaping = SHAPINGS.get(shaping)
        self.composite = run_composite(config["reward"]["composite"], options)
        self.scorer = RewardScorer(rm_dir, device)
        self.attention_model = self.dpo_model = None
        if "dpo_policy" in self.shaping.needs:
            if dpo_dir is None:
                raise ValueError(f"reward shaping {shaping} needs a DPO policy (--dpo)")
            self.dpo_model = load_policy(dpo_dir).to(device).eval().requires_grad_(False)
        if "attention" in self.shaping.needs:  # attentions need the eager implementation
            self.attention_model = AutoModelForSequenceClassification.from_pretrained(
                rm_dir, attn_implementation="eager").to(device).eval()

    def sequence_score(self, rollout: Rollout, prompts: list[list[int]], responses: list[list[int]],
                       ref_logp: torch.Tensor, mask: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
        """(normalised RM score, its weighted part, the composite score, the parts' means) of each response:
        score = rm·RM + rouge·ROUGE_F1(y, y*) + fluency·mean_t log π_sft(y_t) + diversity·distinct-n(y)."""
        proxy = self.scorer.normalised(rollout.input_ids, rollout.attention_mask, rollout.prompt_width)
        c = self.composite
        rm_score = c["rm"] * proxy
        parts = {"score_rm": rm_score}
        if self.references is not None:  # ROUGE is logged wherever there are references, weighted or not
            words = [self.references.words(r) for r in responses]
            rouge = torch.tensor(M.rouge(words, self.references(prompts), c["rouge_type"]), device=proxy.device)
            parts["rouge"] = rouge
            if c["rouge"]:
                parts["score_rouge"] = c["rouge"] * rouge
        if c["fluency"]:
            parts["score_fluency"] = c["fluency"] * masked_mean(ref_logp, mask, dim=-1)
        if c["diversity"]:
            distinct = [M.distinct_n([r], c["diversity_n"]) for r in responses]
            parts["score_diversity"] = c["diversity"] * torch.tensor(distinct, device=proxy.device)
        score = sum(v for k, v in parts.items() if k.startswith("score_"))
        return proxy, rm_score, score, {k: v.float().mean().item() for k, v in parts.items()}

    def prefix_scores(self, rollout: Rollout) -> torch.Tensor:
        """Normalised RM scores of every prefix (member 0), R(x, y_≤t) for t = 0 … T, from one forward pass."""
        model = self.scorer.models[0]
        mean, std = reward_normalisation(model)
        values = (token_values(model, rollout.input_ids, rollout.attention_mask, rollout.prompt_width).float()
                  - mean) / std
        return values[:, rollout.prompt_width - 1 :]

    def final_token_attention(self, rollout: Rollout) -> torch.Tensor:
        out = self.attention_model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask,
                                   position_ids=position_ids_from_mask(rollout.attention_mask), output_attentions=True)
        return C.final_token_attention(out.attentions[-1], rollout.attention_mask, rollout.prompt_width)

    def dpo_log_ratio(self, rollout: Rollout) -> torch.Tensor:
        dpo_logp, _ = logprobs_and_entropy(self.dpo_model, rollout, 1.0)
        ref_logp, _ = logprobs_and_entropy(self.reference, rollout, 1.0)
        return dpo_logp - ref_logp

    @torch.no_grad()
    def __call__(self, rollout: Rollout, prompts: list[list[int]], ref_logp: torch.Tensor) -> ScoredBatch:
        mask = rollout.response_mask.float()
        responses = rows_to_lists(rollout)
        proxy, rm_score, score, parts = self.sequence_score(rollout, prompts, responses, ref_logp, mask)
        credits = [self.gold.credits(p, r) for p, r in zip(prompts, responses)]
        gold_credits = pad_rows(credits, mask.shape[1], self.device)
        shaped = self.shaping.fn(ShapingInputs(
            score=score, rm_score=rm_score, mask=mask, gold_credits=gold_credits, options=self.options,
            prefix_scores=lambda: self.prefix_scores(rollout),
            final_token_attention=lambda: self.final_token_attention(rollout),
            dpo_log_ratio=lambda: self.dpo_log_ratio(rollout)))
        task, score = shaped.task, shaped.score
        if shaped.penalised:
            penalty = self.options["missing_eos_penalty"] * (~rollout.has_eos).float()
            task, score = task - C.sparse(penalty, mask), score - penalty
        return ScoredBatch(proxy, score, task, gold_credits, [float(sum(c)) for c in credits], responses, parts)


def credit_spearman(task: torch.Tensor, gold: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over responses (≥ 3 tokens) of Spearman(r_t, g_t): how well dense credit matches the gold's."""
    values = []
    for r, g, m in zip(task.cpu(), gold.cpu(), mask.cpu().bool()):
        if m.sum() >= 3:
            rho = M.spearman(r[m].tolist(), g[m].tolist())
            if not np.isnan(rho):
                values.append(rho)
    return float(np.mean(values)) if values else float("nan")
