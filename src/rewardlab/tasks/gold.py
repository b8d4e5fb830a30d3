"""The gold reward seen through a tokenizer: token ids in, R*(x, y) and per-token credits out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rewardlab.tasks import sentigram as sg


class SentiGramGold:
    """Scores id sequences with the SentiGram gold reward (§4.2)."""

    def __init__(self, tokenizer: Any, task: Mapping[str, Any]):
        self.tokenizer = tokenizer
        self.cfg = sg.GoldConfig(
            length_target=task["length_target"], length_penalty=task["length_penalty"],
            repeat_penalty=task["repeat_penalty"], missing_eos_penalty=task["missing_eos_penalty"],
        )

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(list(ids))

    def credits(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> list[float]:
        return sg.gold_credits(self.tokens(prompt_ids), self.tokens(response_ids), self.cfg)

    def reward(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> float:
        return float(sum(self.credits(prompt_ids, response_ids)))

    def rewards(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]) -> list[float]:
        return [self.reward(p, r) for p, r in zip(prompts, responses)]


class NoGold:
    """Real data without a gold reward: every gold value is NaN (reported as missing, never as zero)."""

    def credits(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> list[float]:
        return [math.nan] * len(response_ids)

    def reward(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> float:
        return math.nan

    def rewards(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]) -> list[float]:
        return [math.nan] * len(responses)


class RewardModelGold:
    """A user-provided gold reward model (Gao et al. 2022's setting): a sequence-classification folder scored
    at the last token of prompt + response, re-tokenised with its own tokenizer. Its reward is sequence-level,
    so its per-token credit sits on the last response token."""

    def __init__(self, path: str, policy_tokenizer: Any, trust_remote_code: bool = False, device: str = "cpu"):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.policy_tokenizer = policy_tokenizer
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, trust_remote_code=trust_remote_code).to(device).eval()
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device = device

    def rewards(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]) -> list[float]:
        from rewardlab.data.batching import pad_right
        from rewardlab.models.build import sequence_scores
        from rewardlab.models.tokenizer import join_text

        eos = self.policy_tokenizer.eos_token_id
        texts = [join_text(self.policy_tokenizer.decode(p), self.policy_tokenizer.decode(
            [t for t in r if t != eos], skip_special_tokens=True)) for p, r in zip(prompts, responses)]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        out = []
        with self.torch.no_grad():
            for i in range(0, len(ids), 64):
                batch, mask = pad_right(ids[i : i + 64], self.tokenizer.pad_token_id)
                out += sequence_scores(self.model, batch.to(self.device), mask.to(self.device)).float().tolist()
        return out

    def reward(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> float:
        return self.rewards([prompt_ids], [response_ids])[0]

    def credits(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> list[float]:
        value = self.reward(prompt_ids, response_ids)
        return [0.0] * (len(response_ids) - 1) + [value] if response_ids else []


def gold_reward(config: Mapping[str, Any], tokenizer: Any, device: str = "cpu"):
    """The gold reward of an experiment: SentiGram's, a user's gold reward model (evaluate.gold_model), or none."""
    gold_model = config.get("evaluate", {}).get("gold_model")
    if gold_model:
        return RewardModelGold(gold_model, tokenizer, config.get("model", {}).get("trust_remote_code", False),
                               str(device))
    if config.get("data", {}).get("source"):
        return NoGold()
    return SentiGramGold(tokenizer, config["task"])


GoldReward = SentiGramGold | NoGold | RewardModelGold  # what the policy and evaluate stages score gold with
