"""The gold reward an experiment is judged by: its task's (SentiGram), a user's gold reward model
(``evaluate.gold_model``), or none on real data (every gold value missing, never zero)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rewardlab.models.gold_model import RewardModelGold
from rewardlab.tasks import TASKS
from rewardlab.tasks.gold import NoGold, TaskGold

GoldReward = TaskGold | NoGold | RewardModelGold  # what the policy and evaluate stages score gold with


def gold_reward(config: Mapping[str, Any], tokenizer: Any, device: Any = "cpu") -> GoldReward:
    gold_model = config.get("evaluate", {}).get("gold_model")
    if gold_model:
        return RewardModelGold(gold_model, tokenizer, config.get("model", {}).get("trust_remote_code", False),
                               str(device))
    if config.get("data", {}).get("source"):
        return NoGold()
    return TaskGold(TASKS.get(config["task"]["name"]), tokenizer, config["task"])
