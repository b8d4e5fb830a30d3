"""With noise-free labels, the Bradley–Terry reward model learns the gold order.

The quick config with the default corpus size and 1024 labelled prompts; measured 0.931 here. The issue
asked for ≥ 0.95; this floor (0.90) guards what the tiny model reaches now (see the issue's closing note).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoTokenizer

from rewardlab import config as C

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.workflow
def test_bt_on_noise_free_labels_learns_the_gold_order(tmp_path):
    from rewardlab.data import label, pool, preprocess
    from rewardlab.data.formats import read_pairs
    from rewardlab.evaluate.reward_model import pair_metrics
    from rewardlab.models.reward import RewardScorer
    from rewardlab.runinfo import read_jsonl
    from rewardlab.train import reward, sft

    base = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    quick = yaml.safe_load((ROOT / "config/experiments/quick.yaml").read_text())
    cfg = C.deep_update(copy.deepcopy(base), quick)
    cfg["progress"] = False
    cfg["device"] = "cpu"
    cfg["labels"]["temperature"] = 0.01  # τ → 0 and ε = 0: the annotator follows the gold order
    cfg["data"].update(num_sft_train=20000, num_prompts_train=1024)
    cfg["labels"]["num_prompts"] = 1024
    cfg["reward"]["epochs"] = 2
    cfg = C.validate(cfg)
    data = tmp_path / "data"
    preprocess.run(cfg, data)
    sft.run(cfg, data, tmp_path / "sft", threads=2)
    pool.run(cfg, data, tmp_path / "sft", tmp_path / "pool", threads=2)
    label.run(cfg, 0.0, tmp_path / "pool", tmp_path / "labels")
    reward.run(cfg, "bt", 0, tmp_path / "labels", tmp_path / "pool", tmp_path / "sft", tmp_path / "rm", threads=2)
    pairs = read_pairs(read_jsonl(tmp_path / "labels/pairs_test.jsonl"))
    metrics, _ = pair_metrics(RewardScorer(tmp_path / "rm"), AutoTokenizer.from_pretrained(tmp_path / "rm"), pairs,
                              10, torch.device("cpu"))
    assert metrics["accuracy_gold"] >= 0.90, metrics
    assert metrics["spearman_gold"] >= 0.85, metrics
