"""Each stage on tiny inputs: its files, its metrics, and models that reload through the Auto classes."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.models.build import NORMALISATION_KEY, sequence_scores
from rewardlab.models.tokenizer import build_word_tokenizer
from rewardlab.runinfo import read_jsonl
from rewardlab.tasks import sentigram as sg


def test_tokenizer_round_trip_through_save_pretrained(tmp_path):
    tokenizer = build_word_tokenizer(sg.VOCAB)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "<bos> topic: food <sep> the taste was very great , but its price is bad . <eos>"
    ids = loaded(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.split())
    assert loaded.unk_token_id not in ids
    assert loaded.decode(ids) == text
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.bos_token_id) == (0, 2, 1)
    assert loaded.convert_ids_to_tokens(ids) == text.split()


def test_preprocess_writes_files_datasets_loads(tiny_pipeline):
    data = tiny_pipeline["data"]
    train = datasets.load_dataset("json", data_files=str(data / "sft_train.jsonl"), split="train")
    assert train.column_names == ["prompt", "completion"] and len(train) == 400
    prompts = read_jsonl(data / "prompts_test.jsonl")
    assert len(prompts) == 16 and all(p["prompt"].startswith("<bos> topic:") for p in prompts)
    assert (data / "tokenizer" / "tokenizer.json").exists()


def test_preprocess_is_deterministic(tiny_config, tmp_path):
    from rewardlab.data import preprocess

    preprocess.run(tiny_config, tmp_path / "a")
    preprocess.run(tiny_config, tmp_path / "b")
    for name in ("sft_train.jsonl", "prompts_train.jsonl", "prompts_test.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_sft_model_reloads_as_causal_lm_and_learned(tiny_pipeline):
    model = AutoModelForCausalLM.from_pretrained(tiny_pipeline["sft"])
    assert model.config.n_layer == 1
    history = tiny_pipeline["sft_history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 1.0  # from ~log V towards the corpus
    assert (tiny_pipeline["sft"] / "model.safetensors").exists()


def test_labels_are_in_trl_format_with_gold_fields(tiny_pipeline):
    rows = read_jsonl(tiny_pipeline["labels"] / "train.jsonl")
    assert rows, "no pairs"
    assert set(rows[0]) == {"prompt", "chosen", "rejected", "score_chosen", "score_rejected", "p_star"}
    for row in rows[:20]:
        assert row["chosen"] != row["rejected"]
        prompt = row["prompt"].split()
        assert row["score_chosen"] == pytest.approx(sg.gold_reward(prompt, row["chosen"].split()))
        assert row["score_rejected"] == pytest.approx(sg.gold_reward(prompt, row["rejected"].split()))


def test_bt_annotator_matches_p_star():
    import random

    from rewardlab.data.label import bt_label

    rng = random.Random(0)
    wins = sum(bt_label(1.0, 0.0, 1.0, 0.0, rng)[0] for _ in range(20000))
    assert wins / 20000 == pytest.approx(1 / (1 + torch.exp(torch.tensor(-1.0)).item()), abs=0.01)
    flipped = sum(bt_label(100.0, 0.0, 1.0, 0.25, rng)[0] for _ in range(20000))
    assert flipped / 20000 == pytest.approx(0.75, abs=0.01)


def test_reward_model_reloads_and_scores_at_last_token(tiny_pipeline):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_pipeline["rm"]).eval()
    stats = getattr(model.config, NORMALISATION_KEY)
    assert stats["std"] > 0
    tokenizer = AutoTokenizer.from_pretrained(tiny_pipeline["rm"])
    ids = torch.tensor([tokenizer("<bos> topic: game <sep> the level was great . <eos>",
                                  add_special_tokens=False)["input_ids"]])
    mask = torch.ones_like(ids)
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    padded_mask = torch.cat([mask, torch.zeros(1, 3, dtype=torch.long)], 1)
    with torch.no_grad():
        hf = model(input_ids=ids).logits.squeeze()
        ours = sequence_scores(model, ids, mask).squeeze()
        ours_padded = sequence_scores(model, padded, padded_mask).squeeze()
    assert ours.item() == pytest.approx(hf.item(), abs=1e-5)
    assert ours_padded.item() == pytest.approx(hf.item(), abs=1e-5)
    assert tiny_pipeline["rm_history"][-1]["loss"] < 0.75


@pytest.mark.parametrize("algorithm", ["ppo", "reinforce"])
def test_policy_stage_runs_and_logs(tiny_pipeline, algorithm, tmp_path):
    from rewardlab.train import policy

    p = tiny_pipeline
    metrics, history, _ = policy.run(p["config"], algorithm, 0, p["data"], p["sft"], p["rm"], tmp_path)
    assert len(history) == 3
    for key in ("reward_proxy", "reward_gold", "kl", "kl_k3", "entropy", "length", "eos_rate", "grad_norm"):
        assert key in history[-1]
    if algorithm == "ppo":
        assert "value_loss" in history[-1] and "clipfrac" in history[-1]
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # the first rollout comes from π = π_ref
    AutoModelForCausalLM.from_pretrained(tmp_path)


def test_evaluate_stages(tiny_pipeline):
    from rewardlab.evaluate import policy as policy_eval
    from rewardlab.evaluate import reward_model as rm_eval
    from rewardlab.models.build import load_policy, load_reward_model
    from rewardlab.tasks.gold import SentiGramGold
    from rewardlab.train.policy import RewardFunction

    p = tiny_pipeline
    tokenizer = AutoTokenizer.from_pretrained(p["sft"])
    result, bins = rm_eval.evaluate(load_reward_model(p["rm"]), tokenizer, read_jsonl(p["labels"] / "test.jsonl"),
                                    10, torch.device("cpu"))
    for key in ("accuracy", "accuracy_gold", "ece", "brier", "spearman_gold"):
        assert key in result
    assert 0 <= result["ece"] <= 0.5 and 0 <= result["brier"] <= 1
    assert sum(b["count"] for b in bins) == result["pairs"]
    sft = load_policy(p["sft"]).eval()
    prompts = tokenizer([r["prompt"] for r in read_jsonl(p["data"] / "prompts_test.jsonl")],
                        add_special_tokens=False)["input_ids"]
    result, samples = policy_eval.evaluate(sft, sft, RewardFunction(load_reward_model(p["rm"]), torch.device("cpu")),
                                           SentiGramGold(tokenizer, p["config"]["task"]), prompts, p["config"],
                                           tokenizer, torch.device("cpu"))
    assert result["kl"] == pytest.approx(0.0, abs=1e-6)  # π = π_ref exactly
    for key in ("reward_proxy", "reward_gold", "kl", "entropy", "length", "win_rate_vs_sft", "distinct_2"):
        assert key in result
    assert len(samples) == 16
    json.dumps(result)
