"""Each stage on tiny inputs: its files, its metrics, and models that reload through the Auto classes."""

from __future__ import annotations

import copy
import json
import math

import datasets
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.models.build import NORMALISATION_KEY, sequence_scores
from rewardlab.models.tokenizer import build_word_tokenizer
from rewardlab.runinfo import read_jsonl
from rewardlab.tasks import sentigram as sg


def test_tokenizer_round_trip_through_save_pretrained(tmp_path):
    tokenizer = build_word_tokenizer(sg.VOCAB, sg.SPECIALS)
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

    preprocess.STAGE.execute(tiny_config, tmp_path / "a")
    preprocess.STAGE.execute(tiny_config, tmp_path / "b")
    for name in ("sft_train.jsonl", "prompts_train.jsonl", "prompts_test.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_sft_model_reloads_as_causal_lm_and_learned(tiny_pipeline):
    model = AutoModelForCausalLM.from_pretrained(tiny_pipeline["sft"])
    assert model.config.n_layer == 1
    history = tiny_pipeline["sft_history"]
    assert history[-1]["loss"] < history[0]["loss"] - 1.0  # from ~log V towards the corpus
    assert (tiny_pipeline["sft"] / "model.safetensors").exists()


def test_pool_holds_k_samples_with_gold(tiny_pipeline):
    rows = read_jsonl(tiny_pipeline["pool"] / "train.jsonl")
    assert len(rows) == 48
    for row in rows[:10]:
        assert len(row["responses"]) == len(row["gold"]) == len(row["components"]) == 4
        for response, gold, parts in zip(row["responses"], row["gold"], row["components"]):
            assert gold == pytest.approx(sg.gold_reward(row["prompt"].split(), response.split()))
            assert gold == pytest.approx(sum(parts[c] for c in sg.COMPONENTS))
    bon = read_jsonl(tiny_pipeline["pool"] / "bon.jsonl")
    assert len(bon) == 8 and all(len(r["responses"]) == 8 for r in bon)


def test_pairs_are_trl_standard_rows_that_read_back(tiny_pipeline):
    from rewardlab.data.formats import read_pairs

    rows = read_jsonl(tiny_pipeline["labels"] / "pairs_train.jsonl")
    assert rows, "no pairs"
    assert {"prompt", "prompt_id", "chosen", "rejected", "score_chosen", "score_rejected",
            "p_star", "strength", "margin"} <= set(rows[0])
    assert "messages" not in rows[0]  # TRL would take it for a conversation (is_conversational picks any key)
    # TRL's standard format: strings, joined by TRL as prompt + chosen, so each response starts with its space
    assert all(isinstance(rows[0][k], str) for k in ("prompt", "chosen", "rejected"))
    assert rows[0]["chosen"].startswith(" ") and not rows[0]["chosen"].startswith("  ")
    for pair in read_pairs(rows[:20]):
        assert pair["chosen"] != pair["rejected"]
        prompt = pair["prompt"].split()
        assert pair["score_chosen"] == pytest.approx(sg.gold_reward(prompt, pair["chosen"].split()))
        assert pair["score_rejected"] == pytest.approx(sg.gold_reward(prompt, pair["rejected"].split()))
        assert pair["margin"] in (0.0, 1 / 3, 2 / 3, 1.0)


def test_rankings_and_ratings_label_sets(tiny_pipeline):
    rankings = read_jsonl(tiny_pipeline["labels"] / "rankings_train.jsonl")
    assert rankings and sorted(rankings[0]["order"]) == [0, 1, 2, 3]
    ratings = read_jsonl(tiny_pipeline["labels"] / "ratings_train.jsonl")
    attributes = {"helpfulness", "correctness", "coherence", "complexity", "verbosity"}
    assert {"prompt", "response"} | attributes <= set(ratings[0])
    assert all(0 <= r[a] <= 4 for r in ratings for a in ("helpfulness", "verbosity"))


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


@pytest.mark.parametrize("loss", ["plackett_luce", "kwise_allpairs", "best_of_k", "mse_rating", "mse_multiattr",
                                  "triplet_aux", "focal"])
def test_reward_stage_trains_every_label_shape(tiny_pipeline, loss, tmp_path):
    from rewardlab.models.reward import RewardScorer
    from rewardlab.train import reward

    p = tiny_pipeline
    history = reward.STAGE.execute(p["config"], tmp_path, loss=loss, seed=0, labels=p["labels"], pool=p["pool"],
                                   sft=p["sft"]).history
    assert history[-1]["loss"] < history[0]["loss"]
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert model.config.num_labels == (5 if loss == "mse_multiattr" else 1)
    ids = torch.tensor([[1, 5, 6, 3, 77, 10, 73, 31, 84, 2]])
    score = RewardScorer(tmp_path).raw(ids, torch.ones_like(ids))
    assert score.shape == (1,) and torch.isfinite(score).all()


def test_several_seeds_in_one_process_give_each_run_its_own_results(tiny_pipeline, tmp_path):
    """``--seeds 1,0`` (resources.reward.seeds_per_job): two runs one after another in one process write the
    same files as one process each, model weights included."""
    import json

    from rewardlab.train import reward

    p = tiny_pipeline
    common = ["--config", json.dumps(p["config"]), "--loss", "bt", "--labels", str(p["labels"]), "--pool",
              str(p["pool"]), "--sft", str(p["sft"])]
    reward.STAGE.main(common + ["--seeds", "1,0", "--out", str(tmp_path / "together-s{seed}"),
                                "--eval-out", str(tmp_path / "eval-together-s{seed}")])
    for seed in (0, 1):
        reward.STAGE.main(common + ["--seed", str(seed), "--out", str(tmp_path / f"alone-s{seed}"),
                                    "--eval-out", str(tmp_path / f"eval-alone-s{seed}")])
        for folder, names in (("", ("metrics.json", "history.csv", "model.safetensors")),
                              ("eval-", ("metrics.json", "bon.csv"))):
            for name in names:
                together = (tmp_path / f"{folder}together-s{seed}" / name).read_bytes()
                assert together == (tmp_path / f"{folder}alone-s{seed}" / name).read_bytes(), (seed, folder, name)
    assert (tmp_path / "together-s0" / "metrics.json").read_bytes() != (tmp_path / "together-s1" /
                                                                       "metrics.json").read_bytes()
    with pytest.raises(SystemExit):  # several runs need '{seed}' in --out
        reward.STAGE.main(common + ["--seeds", "0,1", "--out", str(tmp_path / "one-folder")])


def test_ensemble_scores_aggregate_members(tiny_pipeline, tmp_path):
    import copy

    from rewardlab.models.reward import RewardScorer, aggregate
    from rewardlab.train import reward

    p = tiny_pipeline
    cfg = copy.deepcopy(p["config"])
    cfg["reward"]["ensemble"] = {"members": 3, "aggregate": "min", "uwo_lambda": 0.5}
    metrics = reward.STAGE.execute(cfg, tmp_path, loss="bt", seed=0, labels=p["labels"], pool=p["pool"],
                                   sft=p["sft"]).metrics
    assert metrics["members"] == 3
    scorer = RewardScorer(tmp_path)
    assert scorer.members == 3
    ids = torch.tensor([[1, 5, 6, 3, 77, 10, 73, 31, 84, 2], [1, 5, 7, 3, 78, 15, 73, 45, 84, 2]])
    z = scorer._z(ids, torch.ones_like(ids))
    assert torch.allclose(scorer.normalised(ids, torch.ones_like(ids)), z.min(0).values)
    assert torch.allclose(aggregate(z, "uwo", 0.5), z.mean(0) - 0.5 * z.var(0, unbiased=False))


@pytest.mark.parametrize("algorithm, kl", [("grpo", {"kl_in": "loss", "kl_estimator": "k3"}),
                                           ("rloo", {"kl_in": "reward", "kl_estimator": "k1"})])
def test_one_update_per_batch_reuses_its_pass_and_changes_nothing(tiny_pipeline, tmp_path, monkeypatch, algorithm,
                                                                   kl):
    """One update on the whole batch (GRPO with the KL in the loss, RLOO with the KL in the reward) takes the
    rollout's log-probs, entropy and KL from the update's own forward pass, run at scoring time, instead of a
    separate no-grad pass: the same history and weights as with the separate pass (to rounding), one policy
    forward fewer per step."""
    from rewardlab.train import policy

    p = tiny_pipeline
    cfg = copy.deepcopy(p["config"])
    cfg["policy"].update(epochs=1, minibatches=1, overrides={algorithm: kl})
    inputs = {"algorithm": algorithm, "shaping": "sparse", "seed": 0, "data": p["data"], "sft": p["sft"],
              "rm": p["rm"]}
    passes = []
    original = policy.logprobs_and_entropy
    monkeypatch.setattr(policy, "logprobs_and_entropy", lambda model, *a: passes.append(model) or original(model, *a))
    policy.STAGE.execute(cfg, tmp_path / "reused", **inputs)
    reused = len(passes)
    monkeypatch.setattr(policy.PolicyTrainer, "reuses_update_logprobs", property(lambda self: False))
    policy.STAGE.execute(cfg, tmp_path / "separate", **inputs)
    steps = cfg["policy"]["steps"]
    assert reused == 2 * steps and len(passes) - reused == 3 * steps  # reference + update, against + the no-grad pass
    # the same numbers to rounding: the separate pass packs the rows in rollout order, the update in its own
    history = {run: pd.read_csv(tmp_path / run / "history.csv") for run in ("reused", "separate")}
    pd.testing.assert_frame_equal(history["reused"], history["separate"], rtol=1e-3, atol=1e-6)
    weights = {run: load_file(tmp_path / run / "model.safetensors") for run in ("reused", "separate")}
    for name, tensor in weights["reused"].items():
        torch.testing.assert_close(tensor, weights["separate"][name], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("algorithm, shaping", [
    ("ppo", "sparse"), ("a2c", "sparse"), ("reinforce", "sparse"), ("rloo", "sparse"), ("grpo", "sparse"),
    ("reinforce_pp", "sparse"), ("reinforce_pp_baseline", "sparse"), ("remax", "sparse"), ("ppo", "uniform"),
    ("ppo", "abc"),
    ("reinforce_pp", "prefix_difference"), ("reinforce_pp", "oracle"),
])
def test_policy_stage_runs_and_logs(tiny_pipeline, algorithm, shaping, tmp_path):
    from rewardlab.train import policy

    p = tiny_pipeline
    history = policy.STAGE.execute(p["config"], tmp_path, algorithm=algorithm, shaping=shaping, seed=0,
                                   data=p["data"], sft=p["sft"], rm=p["rm"]).history
    assert len(history) == 3
    for key in ("reward_proxy", "reward_gold", "kl", "kl_k3", "entropy", "length", "eos_rate", "grad_norm",
                "repetition", "distinct_2", "samples"):
        assert key in history[-1]
    if algorithm == "ppo":
        assert "value_loss" in history[-1] and "clipfrac" in history[-1]
    if algorithm == "a2c":  # a critic, no ratio clipping and an unclipped value loss
        assert "value_loss" in history[-1] and "clipfrac" not in history[-1]
        assert history[-1]["value_clipfrac"] == 0.0
    if shaping != "sparse":
        assert "credit_spearman" in history[-1]
    if shaping == "oracle":
        assert history[-1]["credit_spearman"] == pytest.approx(1.0)  # the oracle credit is the gold's
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # the first rollout comes from π = π_ref
    group = 4 if algorithm in ("rloo", "grpo", "reinforce_pp_baseline") else 1
    assert history[-1]["samples"] == 3 * 8 * group
    from rewardlab.rl.algorithms import build
    from rewardlab.train.policy import policy_options

    algo = build(algorithm, policy_options(p["config"], algorithm))
    assert history[-1]["optimizer_steps"] == 3 * algo.optimizer_steps_per_step()
    assert algo.samples_per_step() == 8 * group
    AutoModelForCausalLM.from_pretrained(tmp_path)


def test_dpo_implicit_shaping_uses_the_dpo_policy(tiny_pipeline, tmp_path):
    from rewardlab.train import dpo, policy

    p = tiny_pipeline
    dpo.STAGE.execute(p["config"], tmp_path / "dpo", algorithm="dpo", seed=0, labels=p["labels"], sft=p["sft"])
    inputs = {"seed": 0, "data": p["data"], "sft": p["sft"], "rm": p["rm"]}
    history = policy.STAGE.execute(p["config"], tmp_path / "policy", algorithm="reinforce_pp", shaping="dpo_implicit",
                                   dpo=tmp_path / "dpo", **inputs).history
    assert len(history) == 3 and "credit_spearman" in history[-1]
    with pytest.raises(ValueError, match="dpo_implicit"):
        policy.STAGE.execute(p["config"], tmp_path / "x", algorithm="ppo", shaping="dpo_implicit", **inputs)


@pytest.mark.parametrize("algorithm", ["dpo", "ipo", "cdpo"])
def test_offline_policy_stage(tiny_pipeline, algorithm, tmp_path):
    from rewardlab.train import dpo

    p = tiny_pipeline
    history = dpo.STAGE.execute(p["config"], tmp_path, algorithm=algorithm, seed=0, labels=p["labels"],
                                sft=p["sft"]).history
    assert history and {"loss", "accuracy", "reward_chosen", "reward_rejected"} <= set(history[0])
    if algorithm == "dpo":
        assert history[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # π = π_ref at the start
    AutoModelForCausalLM.from_pretrained(tmp_path)


def test_evaluate_stages(tiny_pipeline):
    from rewardlab.data.formats import read_pairs
    from rewardlab.evaluate import policy as policy_eval
    from rewardlab.evaluate import reward_model as rm_eval
    from rewardlab.models.build import load_policy
    from rewardlab.models.reward import RewardScorer
    from rewardlab.tasks import TASKS
    from rewardlab.tasks.gold import TaskGold

    p = tiny_pipeline
    cpu = torch.device("cpu")
    tokenizer = AutoTokenizer.from_pretrained(p["sft"])
    scorer = RewardScorer(p["rm"])
    pairs = read_pairs(read_jsonl(p["labels"] / "pairs_test.jsonl"))
    result, bins = rm_eval.pair_metrics(scorer, tokenizer, pairs, 10, cpu)
    for key in ("accuracy", "accuracy_gold", "ece", "brier", "spearman_gold", "ece_scaled", "brier_scaled",
                "calibration_scale"):
        assert key in result
    assert 0 <= result["ece"] <= 0.5 and 0 <= result["brier"] <= 1
    assert 0 <= result["ece_scaled"] <= 0.5 and 0 <= result["brier_scaled"] <= 1
    assert result["calibration_scale"] >= 0
    assert sum(b["count"] for b in bins) == result["pairs"]
    bench = rm_eval.bench_metrics(scorer, tokenizer, read_jsonl(p["pool"] / "bench.jsonl"), cpu)
    assert 0 <= bench["bench_score"] <= 1
    bon, rows = rm_eval.bon_metrics(scorer, tokenizer, read_jsonl(p["pool"] / "bon.jsonl"), cpu)
    assert rows[0]["n"] == 1 and rows[-1]["n"] == 8
    assert rows[-1]["proxy"] >= rows[0]["proxy"]  # best-of-n never lowers the proxy
    assert {"bon_alpha", "bon_beta", "bon_r2", "spearman_gold_ood"} <= set(bon)

    sft = load_policy(p["sft"]).eval()
    prompts = tokenizer([r["prompt"] for r in read_jsonl(p["data"] / "prompts_test.jsonl")],
                        add_special_tokens=False)["input_ids"]
    gold = TaskGold(TASKS.get("sentigram"), tokenizer, p["config"]["task"])
    cfg = copy.deepcopy(p["config"])
    cfg["evaluate"].update(samples_per_prompt=2, decoding=["sample", "greedy", "top_k", "top_p", "beam", "rerank"])
    judge = policy_eval.Judge(sft, sft, scorer, gold, tokenizer, cfg, cpu)
    result, table, samples = policy_eval.evaluate(judge, prompts, cfg)
    assert result["kl"] == pytest.approx(0.0, abs=1e-6)  # π = π_ref exactly
    for key in ("reward_proxy", "reward_gold", "kl", "entropy", "length", "win_rate_vs_sft", "distinct_2",
                "self_bleu", "perplexity_sft"):
        assert key in result
    assert result["perplexity_sft"] > 1
    assert len(samples) == 16 * 2 * 4 + 16 * 2  # four sampling decoders × 2 per prompt, two deterministic × 1
    json.dumps(result)
    rows = table.set_index("decoding")
    assert list(rows.index) == ["sample", "greedy", "top_k10", "top_p0.9", "beam4", "rerank8"]
    assert rows.loc["sample", "reward_gold"] == result["reward_gold"]  # the main protocol, not sampled twice
    assert rows.loc["greedy", "self_bleu"] == pytest.approx(100.0)  # one answer per prompt: the samples agree
    # At π = π_ref a truncated sampler's KL is E[−Σ_t log Z_t] > 0 (Z_t the kept mass); a point mass's is
    # −log π_ref(y) > 0; best-of-n of the policy's own samples has no closed form.
    assert rows.loc["top_k10", "kl"] > 0 and rows.loc["top_p0.9", "kl"] > 0 and rows.loc["greedy", "kl"] > 0
    assert math.isnan(rows.loc["rerank8", "kl"])
    assert rows.loc["rerank8", "reward_proxy"] > rows.loc["sample", "reward_proxy"]  # best of 8 by the RM
    assert rows.loc["greedy", "perplexity_sft"] < rows.loc["sample", "perplexity_sft"]  # argmax is likelier


def test_a_plain_pipeline_returns_the_reward_models_raw_score(tiny_pipeline):
    """Reward models save problem_type "regression", so transformers' text-classification pipeline applies no
    sigmoid; the stored normalisation (README) is then (score − mean) / std."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    rm = tiny_pipeline["rm"]
    config = json.loads((rm / "config.json").read_text())
    assert config["problem_type"] == "regression"
    text = "the movie was great <eos>"
    scorer = pipeline("text-classification", model=str(rm), device="cpu")
    score = scorer(text)[0]["score"]
    tokenizer, model = AutoTokenizer.from_pretrained(rm), AutoModelForSequenceClassification.from_pretrained(rm)
    with torch.no_grad():
        raw = model(**tokenizer(text, return_tensors="pt")).logits[0, 0].item()
    assert score == pytest.approx(raw, abs=1e-5)  # not σ(raw)
    assert set(config["rewardlab_reward_normalisation"]) == {"mean", "std"}
