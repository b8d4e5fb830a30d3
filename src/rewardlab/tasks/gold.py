"""The gold reward seen through a tokenizer: token ids in, R*(x, y) and per-token credits out."""

from __future__ import annotations

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
