"""A task's gold reward seen through a tokenizer: token ids in, R*(x, y) and per-token credits out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rewardlab.tasks.registry import Task


class TaskGold:
    """Scores id sequences with a task's gold reward (SentiGram: §4.2)."""

    def __init__(self, task: Task, tokenizer: Any, task_cfg: Mapping[str, Any]):
        self.task, self.tokenizer = task, tokenizer
        self.cfg = task.gold_config(task_cfg)

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(list(ids))

    def credits(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> list[float]:
        return self.task.gold_credits(self.tokens(prompt_ids), self.tokens(response_ids), self.cfg)

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
