"""A user-provided gold reward model (Gao et al. 2022's synthetic-gold setting): a sequence-classification folder
scored at the last token of prompt + response, re-tokenised with its own tokenizer. Its reward is
sequence-level, so its per-token credit sits on the last response token."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.models.build import sequence_scores
from rewardlab.models.folder import check_model_folder
from rewardlab.models.tokenizer import join_text
from rewardlab.tensors import pad_right


class RewardModelGold:
    def __init__(self, path: str, policy_tokenizer: Any, trust_remote_code: bool = False, device: str = "cpu"):
        check_model_folder(path, "evaluate.gold_model", trust_remote_code)
        self.policy_tokenizer = policy_tokenizer
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, trust_remote_code=trust_remote_code).to(device).eval()
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device = device

    @torch.no_grad()
    def rewards(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]) -> list[float]:
        eos = self.policy_tokenizer.eos_token_id
        texts = [join_text(self.policy_tokenizer.decode(p), self.policy_tokenizer.decode(
            [t for t in r if t != eos], skip_special_tokens=True)) for p, r in zip(prompts, responses)]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        out: list[float] = []
        for i in range(0, len(ids), 64):
            batch, mask = pad_right(ids[i : i + 64], self.tokenizer.pad_token_id)
            out += sequence_scores(self.model, batch.to(self.device), mask.to(self.device)).float().tolist()
        return out

    def reward(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> float:
        return self.rewards([prompt_ids], [response_ids])[0]

    def credits(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> list[float]:
        value = self.reward(prompt_ids, response_ids)
        return [0.0] * (len(response_ids) - 1) + [value] if response_ids else []
