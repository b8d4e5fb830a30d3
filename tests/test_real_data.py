"""Real preference data and real model families: every fixture format through preprocess (ingest) → SFT →
reward → held-out evaluation, with tiny models of each supported family saved locally and loaded back through
the real loading code; two of them through the Snakemake DAG; bad inputs stop before any training."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import AutoTokenizer

from rewardlab import config as C
from rewardlab.data import ingest
from rewardlab.data.formats import chat_renderer, read_pairs
from rewardlab.evaluate.reward_model import pair_metrics
from rewardlab.models.reward import RewardScorer
from rewardlab.runinfo import read_jsonl
from rewardlab.train import policy, reward, sft
from tests.conftest import TEST_DEVICE, TEST_PRECISION
from tests.tiny_hf import save_tiny_model

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests/fixtures/datasets"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
FAMILIES = ["gpt2", "gpt_neox", "llama", "qwen2"]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {family: save_tiny_model(root / family, family, chat_template=family in ("llama", "qwen2"))
            for family in FAMILIES}


def real_config(source: dict, model_path: Path, **overrides) -> dict:
    cfg = {
        "name": "real", "device": TEST_DEVICE, "precision": TEST_PRECISION, "progress": False,
        "data": {"name": "real", "source": {"test_fraction": 0.3, **source}},
        "model": {"name_or_path": str(model_path), "max_length": 160},
        "sft": {"epochs": 1, "batch_size": 4, "lr": 0.001},
        "reward": {"losses": ["bt"], "epochs": 2, "batch_size": 4, "normalise_samples": 16},
        "task": {"max_new_tokens": 8},
        "policy": {"algorithms": ["ppo"], "steps": 2, "prompts_per_step": 2, "minibatches": 1},
        "evaluate": {"samples_per_prompt": 1},
    }
    return C.validate(C.deep_update(cfg, overrides))


CASES = [  # (format, files, model family): every format, every family
    ("hh_rlhf", {"path": "hh_rlhf.jsonl"}, "gpt2"),
    ("ultrafeedback_binarized", {"path": "ultrafeedback_binarized.jsonl"}, "llama"),
    ("tldr_comparisons", {"path": "tldr_comparisons.json"}, "gpt_neox"),
    ("helpsteer2", {"path": "helpsteer2_preference.jsonl"}, "qwen2"),
    ("shp", {"path": "shp.jsonl"}, "gpt_neox"),
    ("trl", {"path": "trl_conversational_implicit.jsonl", "test_path": "trl_conversational_explicit.jsonl"}, "llama"),
    ("trl", {"path": "trl_standard.jsonl"}, "gpt2"),
]


@pytest.mark.parametrize(("fmt", "files", "family"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_format_flows_through_preprocess_sft_reward_evaluate(fmt, files, family, tiny_models, tmp_path):
    source = {"format": fmt, **{k: str(FIXTURES / v) for k, v in files.items()}}
    cfg = real_config(source, tiny_models[family])
    data = tmp_path / "data"
    metrics = ingest.STAGE.execute(cfg, data).metrics
    assert metrics["pairs_train"] >= 2 and metrics["pairs_test"] >= 1
    assert metrics["chat_template"] == float(family in ("llama", "qwen2"))
    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizer")
    rows = read_jsonl(data / "pairs_train.jsonl")
    pairs = read_pairs(rows, render=chat_renderer(tokenizer))
    if family in ("llama", "qwen2"):  # TRL's conversational rows: the prompt's messages, unrendered …
        assert isinstance(rows[0]["prompt"], list) and rows[0]["chosen"][0]["role"] == "assistant"
        assert not rows[0]["prompt"][-1]["content"].startswith("<|")
        # … which the reader renders with the chat template, generation prompt included
        assert pairs[0]["prompt"].startswith("<|") and pairs[0]["prompt"].endswith("<|assistant|>\n")
    else:
        assert isinstance(rows[0]["prompt"], str) and isinstance(rows[0]["chosen"], str)
    sft_metrics = sft.STAGE.execute(cfg, tmp_path / "sft", data=data).metrics
    assert sft_metrics["steps"] >= 1 and sft_metrics["valid_loss"] > 0
    history = reward.STAGE.execute(cfg, tmp_path / "rm", loss="bt", seed=0, labels=data, pool=data / "pool",
                                   sft=tmp_path / "sft").history
    assert len(history) >= 2
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "rm")
    scorer = RewardScorer(tmp_path / "rm", "cpu")
    test_pairs = read_pairs(read_jsonl(data / "pairs_test.jsonl"), render=chat_renderer(tokenizer))
    result, _ = pair_metrics(scorer, tokenizer, test_pairs, 5, "cpu")
    assert 0.0 <= result["accuracy"] <= 1.0
    assert result["accuracy_gold"] is None and result["spearman_gold"] is None  # no gold reward: missing
    # RL on the dataset's prompts against that reward model, then the held-out evaluation.
    algorithm = "ppo" if family in ("gpt2", "llama") else "reinforce"
    rl = policy.STAGE.execute(cfg, tmp_path / "policy", algorithm=algorithm, shaping="sparse", seed=0, data=data,
                              sft=tmp_path / "sft", rm=tmp_path / "rm")
    rl_metrics, rl_history = rl.metrics, rl.history
    assert len(rl_history) == 2 and math.isnan(rl_history[-1]["reward_gold"])
    assert math.isfinite(rl_metrics["train_reward_proxy"]) and math.isfinite(rl_metrics["train_kl"])
    evaluated = evaluate_policy(tmp_path / "policy", tmp_path / "sft", tmp_path / "rm", data, cfg)
    assert math.isfinite(evaluated["reward_proxy"]) and math.isfinite(evaluated["kl"])
    assert math.isnan(evaluated["reward_gold"]) and math.isnan(evaluated["win_rate_vs_sft"])


def evaluate_policy(policy_dir: Path, sft_dir: Path, rm_dir: Path, data: Path, cfg: dict) -> dict:
    from rewardlab.evaluate import policy as evaluate
    from rewardlab.evaluate.gold import gold_reward
    from rewardlab.evaluate.references import references
    from rewardlab.models.build import load_policy

    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    rows = read_jsonl(data / "prompts_test.jsonl")
    prompts = tokenizer([r["prompt"] for r in rows], add_special_tokens=False)["input_ids"]
    judge = evaluate.Judge(load_policy(policy_dir).eval(), load_policy(sft_dir).eval(), RewardScorer(rm_dir, "cpu"),
                           gold_reward(cfg, tokenizer), tokenizer, cfg, "cpu",
                           references=references(cfg, tokenizer, rows, "prompts_test.jsonl"))
    cfg = {**cfg, "evaluate": {**cfg["evaluate"], "decoding": ["sample", "greedy", "beam", "rerank"]}}
    result, table, _ = evaluate.evaluate(judge, prompts, cfg)
    # every decoding runs on a real tokenizer and model family (BPE text for self-BLEU, a real generate for beam)
    assert list(table["decoding"]) == ["sample", "greedy", "beam4", "rerank8"]
    assert table["perplexity_sft"].gt(1).all() and table["reward_proxy"].notna().all()
    return result


def test_tldr_human_summaries_are_the_references_of_a_rouge_reward(tiny_models, tmp_path):
    """summarize-from-feedback SFT rows (post + human summary) → SFT documents in TL;DR's template and RL prompts
    with their summaries as references (data.source.prompts_from: sft); a policy against ROUGE-L alone logs it
    each step as its whole score, and the evaluation reports ROUGE-1/2/L against the held-out summaries."""
    from rewardlab.evaluate.metrics import rouge
    from rewardlab.evaluate.references import references

    source = {"format": "tldr_comparisons", "path": str(FIXTURES / "tldr_comparisons.json"),
              "sft_path": str(FIXTURES / "tldr_sft.jsonl"), "prompts_from": "sft"}
    cfg = real_config(source, tiny_models["gpt2"], reward={"composite": {"rm": 0.0, "rouge": 1.0}},
                      sft={"epochs": 2, "batch_size": 4, "lr": 0.003})
    data = tmp_path / "data"
    metrics = ingest.STAGE.execute(cfg, data).metrics
    train, test = read_jsonl(data / "prompts_train.jsonl"), read_jsonl(data / "prompts_test.jsonl")
    assert metrics["prompts_train"] == len(train) >= 10 and metrics["prompts_test"] == len(test) >= 1
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    posts = {json.loads(line)["summary"]: json.loads(line) for line in (FIXTURES / "tldr_sft.jsonl").open()}
    for row in train + test:
        original = posts[row["reference"]]  # the human summary (completions are stripped, as for TRL's rows)
        assert row["prompt"] == (f"SUBREDDIT: r/{original['subreddit']}\n\nTITLE: {original['title']}\n\n"
                                 f"POST: {original['post'].replace(chr(10) * 2, chr(10))}\n\nTL;DR:")
    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizer")
    refs = references(cfg, tokenizer, test, "prompts_test.jsonl")
    ids = tokenizer([test[0]["prompt"]], add_special_tokens=False)["input_ids"]
    assert refs(ids) == [test[0]["reference"].split()]
    with pytest.raises(KeyError, match="prompts_test.jsonl: a prompt without a reference"):
        refs([[tokenizer.eos_token_id]])
    sft.STAGE.execute(cfg, tmp_path / "sft", data=data)
    reward.STAGE.execute(cfg, tmp_path / "rm", loss="bt", seed=0, labels=data, pool=data / "pool",
                         sft=tmp_path / "sft")
    history = policy.STAGE.execute(cfg, tmp_path / "policy", algorithm="reinforce", shaping="sparse", seed=0,
                                   data=data, sft=tmp_path / "sft", rm=tmp_path / "rm").history
    for row in history:  # rm weight 0: the score is ROUGE-L F1 alone (in [0, 1]), less the missing-EOS penalty
        assert 0.0 <= row["rouge"] <= 1.0 and row["score_rouge"] == pytest.approx(row["rouge"])
        assert row["score_rm"] == 0.0
        penalty = cfg["policy"]["missing_eos_penalty"] * (1 - row["eos_rate"])
        assert row["score"] == pytest.approx(row["rouge"] - penalty, abs=1e-6)
    evaluated = evaluate_policy(tmp_path / "policy", tmp_path / "sft", tmp_path / "rm", data, cfg)
    assert all(0.0 <= evaluated[k] <= 1.0 for k in ("rouge1", "rouge2", "rougeL"))
    assert evaluated["rouge1"] >= evaluated["rouge2"]  # unigram overlap bounds bigram overlap
    assert rouge([test[0]["reference"].split()], [test[0]["reference"].split()], "rougeL") == [1.0]


def test_user_gold_reward_model_scores_policies(tiny_models, tmp_path):
    """evaluate.gold_model: a separate reward model plays the gold (Gao et al.'s setting)."""
    hh = {"format": "hh_rlhf", "path": str(FIXTURES / "hh_rlhf.jsonl")}
    cfg = real_config(hh, tiny_models["gpt2"])
    data = tmp_path / "data"
    ingest.STAGE.execute(cfg, data)
    sft.STAGE.execute(cfg, tmp_path / "sft", data=data)
    inputs = {"labels": data, "pool": data / "pool", "sft": tmp_path / "sft"}
    reward.STAGE.execute(cfg, tmp_path / "rm", loss="bt", seed=0, **inputs)
    reward.STAGE.execute(cfg, tmp_path / "gold", loss="hinge", seed=1, **inputs)
    cfg = real_config(hh, tiny_models["gpt2"], evaluate={"gold_model": str(tmp_path / "gold")})
    history = policy.STAGE.execute(cfg, tmp_path / "policy", algorithm="reinforce", shaping="sparse", seed=0,
                                   data=data, sft=tmp_path / "sft", rm=tmp_path / "rm").history
    assert math.isfinite(history[-1]["reward_gold"])
    result = evaluate_policy(tmp_path / "policy", tmp_path / "sft", tmp_path / "rm", data, cfg)
    assert math.isfinite(result["reward_gold"]) and 0.0 <= result["win_rate_vs_sft"] <= 1.0


def test_lora_sft_merges_into_a_plain_model(tiny_models, tmp_path):
    cfg = real_config({"format": "hh_rlhf", "path": str(FIXTURES / "hh_rlhf.jsonl")}, tiny_models["llama"],
                      model={"lora": {"r": 4, "alpha": 8}, "gradient_checkpointing": True})
    ingest.STAGE.execute(cfg, tmp_path / "data")
    sft.STAGE.execute(cfg, tmp_path / "sft", data=tmp_path / "data")
    saved = json.loads((tmp_path / "sft/config.json").read_text())
    assert saved["model_type"] == "llama" and not (tmp_path / "sft/adapter_config.json").exists()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "sft/model.safetensors"), "pt") as weights:
        assert not any("lora" in key for key in weights.keys())


def test_bad_rows_stop_with_file_and_row_or_are_counted(tiny_models, tmp_path):
    source = {"format": "hh_rlhf", "path": str(FIXTURES / "hh_rlhf_malformed.jsonl"), "test_fraction": 0.5}
    with pytest.raises(SystemExit, match=r"hh_rlhf_malformed.jsonl: row 2: not valid JSON.*on_bad_row: skip"):
        ingest.STAGE.execute(real_config(source, tiny_models["gpt2"]), tmp_path / "a")
    assert not (tmp_path / "a").exists()  # nothing written before the error
    metrics = ingest.STAGE.execute(real_config(source, tiny_models["gpt2"], data={"on_bad_row": "skip"}),
                                   tmp_path / "b").metrics
    assert metrics["rows_skipped"] == 2 and metrics["rows_read"] == 2


def test_inputs_are_checked_before_anything_runs(tiny_models, tmp_path):
    hh = {"format": "hh_rlhf", "path": str(FIXTURES / "hh_rlhf.jsonl")}
    with pytest.raises(SystemExit, match="model.name_or_path: .* not a local Hugging Face model folder"):
        ingest.STAGE.execute(real_config(hh, tmp_path / "missing-model"), tmp_path / "out")
    with pytest.raises(SystemExit, match=r"data.source.path: .*nope.jsonl does not exist"):
        ingest.STAGE.execute(real_config({**hh, "path": str(tmp_path / "nope.jsonl")}, tiny_models["gpt2"]),
                             tmp_path / "out")
    with pytest.raises(SystemExit, match="every pair is longer than model.max_length"):
        ingest.STAGE.execute(real_config(hh, tiny_models["gpt2"], model={"max_length": 8}), tmp_path / "out")
    with pytest.raises(C.ConfigError, match="reward.losses: plackett_luce needs rankings"):
        real_config(hh, tiny_models["gpt2"], reward={"losses": ["plackett_luce"]})
    with pytest.raises(C.ConfigError, match="policy.shapings: oracle"):
        real_config(hh, tiny_models["gpt2"], policy={"shapings": ["oracle"]})
    with pytest.raises(C.ConfigError, match="reward.composite.rouge: 1.0 but data.source.prompts_from: pairs"):
        real_config(hh, tiny_models["gpt2"], reward={"composite": {"rouge": 1.0}})
    with pytest.raises(C.ConfigError, match="data.source.prompts_from: sft takes .*sft_path, which is not set"):
        real_config({**hh, "prompts_from": "sft"}, tiny_models["gpt2"])
    assert real_config(hh, tiny_models["gpt2"])["model"]["trust_remote_code"] is False


@pytest.mark.parametrize(("fmt", "fixture", "losses"), [
    ("helpsteer2", "helpsteer2.jsonl", ["mse_rating", "mse_multiattr", "bt"]),
    ("ultrafeedback", "ultrafeedback.jsonl", ["plackett_luce", "kwise_allpairs", "best_of_k", "bt"]),
])
def test_real_ratings_and_rankings_train_their_losses(fmt, fixture, losses, tiny_models, tmp_path):
    """Issue 15: HelpSteer2's main data (five attributes per response) trains the rating losses, UltraFeedback's
    four scored completions per prompt the K-wise losses; both imply held-out pairs (each prompt's best response
    against its worst) on which every reward model is evaluated."""
    source = {"format": fmt, "path": str(FIXTURES / fixture), "test_fraction": 0.25}
    cfg = real_config(source, tiny_models["gpt2"], reward={"losses": losses})
    data = tmp_path / "data"
    metrics = ingest.STAGE.execute(cfg, data).metrics
    pairs = read_jsonl(data / "pairs_train.jsonl") + read_jsonl(data / "pairs_test.jsonl")
    # HelpSteer2's fixture has a prompt whose two responses are equally helpful: no pair (a tie, as everywhere)
    assert metrics["ties_dropped"] == (1 if fmt == "helpsteer2" else 0)
    assert len(pairs) == 8 - metrics["ties_dropped"] and all(p["score_chosen"] > p["score_rejected"] for p in pairs)
    assert all(p["margin"] == p["score_chosen"] - p["score_rejected"] for p in pairs)
    if fmt == "helpsteer2":
        ratings = read_jsonl(data / "ratings_train.jsonl")
        assert metrics["ratings_train"] == len(ratings) == 12  # 6 of 8 prompts × 2 responses
        assert all(r["rating"] == r["helpfulness"] for r in ratings)  # attribute_weights: helpfulness alone
        assert read_jsonl(data / "rankings_train.jsonl") == []
    else:
        rankings = read_jsonl(data / "rankings_train.jsonl")
        # 6 training prompts; the one with two completions scored alike has no order and is dropped (if in train)
        assert metrics["rankings_tied_dropped"] + len(rankings) == 6 and len(rankings) == metrics["rankings_train"]
        assert len(rankings) >= 5 and all(len(r["responses"]) == 4 for r in rankings)
        for row in rankings:
            assert [row["scores"][i] for i in row["order"]] == sorted(row["scores"], reverse=True)
    sft.STAGE.execute(cfg, tmp_path / "sft", data=data)
    for loss in losses:
        result = reward.STAGE.execute(cfg, tmp_path / loss, loss=loss, seed=0, labels=data, pool=data / "pool",
                                      sft=tmp_path / "sft", eval_out=tmp_path / f"eval-{loss}")
        assert result.history and math.isfinite(result.history[-1]["loss"])
        evaluated = json.loads((tmp_path / f"eval-{loss}" / "metrics.json").read_text())
        assert 0.0 <= evaluated["accuracy"] <= 1.0  # on the held-out pairs the ratings or rankings imply
    preference = {"format": "helpsteer2", "path": str(FIXTURES / "helpsteer2_preference.jsonl")}
    with pytest.raises(C.ConfigError, match="reward.losses: plackett_luce needs rankings; data.source.format "
                                            "helpsteer2 gives pairs and ratings"):
        real_config(preference, tiny_models["gpt2"], reward={"losses": ["plackett_luce"]})
    cfg = real_config(preference, tiny_models["gpt2"], reward={"losses": ["mse_rating"]})
    ingest.STAGE.execute(cfg, tmp_path / "pref")
    with pytest.raises(SystemExit, match="mse_rating trains on ratings, and .*ratings_train.jsonl has none"):
        reward.STAGE.execute(cfg, tmp_path / "rm-pref", loss="mse_rating", seed=0, labels=tmp_path / "pref",
                             pool=tmp_path / "pref" / "pool", sft=tmp_path / "sft")


# (family, format, fixture, LoRA rank, algorithms) through Snakemake: with and without a chat template, with and
# without LoRA, online and offline policies. Every family and format also runs every stage in
# test_format_flows_through_preprocess_sft_reward_evaluate (stage by stage, without Snakemake's start-up cost).
DAG_CASES = [
    ("gpt2", "hh_rlhf", "hh_rlhf.jsonl", 0, ["reinforce", "rloo"]),
    ("qwen2", "ultrafeedback_binarized", "ultrafeedback_binarized.jsonl", 4, ["ppo", "dpo"]),
]


@pytest.mark.workflow
@pytest.mark.parametrize(("family", "fmt", "fixture", "lora", "algorithms"), DAG_CASES, ids=[c[0] for c in DAG_CASES])
def test_real_data_dag_end_to_end(family, fmt, fixture, lora, algorithms, tiny_models, tmp_path):
    """A tiny model of each family, saved to a folder, through the whole DAG from that path."""
    for name in ("Snakefile", "workflow", "config"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    (tmp_path / "profiles").symlink_to("workflow/profiles")
    experiment = {
        "name": "real", "device": TEST_DEVICE, "precision": TEST_PRECISION, "progress": False,
        "data": {"name": "real", "source": {"format": fmt, "path": str(FIXTURES / fixture), "test_fraction": 0.3}},
        "model": {"name_or_path": str(tiny_models[family]), "max_length": 160, "lora": {"r": lora}},
        "sft": {"epochs": 1, "batch_size": 4},
        "reward": {"losses": ["bt"], "epochs": 1, "batch_size": 4, "normalise_samples": 16},
        "task": {"max_new_tokens": 8},
        "policy": {"algorithms": algorithms, "steps": 2, "prompts_per_step": 2, "minibatches": 1, "group_size": 2},
        # every decoding runs on every family in test_format_flows_…; here the DAG's decoding table
        "evaluate": {"samples_per_prompt": 1, "decoding": ["sample", "greedy"]},
    }
    (tmp_path / "real.yaml").write_text(yaml.safe_dump(experiment))
    proc = subprocess.run([*SNAKEMAKE, "--cores", "2", "--configfile", "real.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    logs = "\n".join(p.read_text()[-2000:] for p in tmp_path.glob("results/real/logs/**/*.log"))
    assert proc.returncode == 0, proc.stderr[-4000:] + logs
    results = tmp_path / "results/real"
    metrics = json.loads((results / "eval/rm/bt-eps0.0-s0/metrics.json").read_text())
    assert metrics["accuracy"] is not None and metrics["accuracy_gold"] is None
    assert (results / "eval/summary.md").is_file() and (results / "eval/plots/rm_calibration.png").is_file()
    runs = [f"{a}-offline-bt-eps0.0-s0" if a == "dpo" else f"{a}-sparse-bt-eps0.0-s0" for a in algorithms]
    for run in ["sft-bt-eps0.0-s0", *runs]:
        metrics = json.loads((results / f"eval/policy/{run}/metrics.json").read_text())
        assert metrics["reward_proxy"] is not None and metrics["reward_gold"] is None
    prep = json.loads((tmp_path / "data/processed/real/metrics.json").read_text())
    assert prep["chat_template"] == float(family in ("llama", "qwen2"))
    run = json.loads((results / "sft/run.json").read_text())
    assert run["config"]["model"]["name_or_path"] == str(tiny_models[family])
    assert json.loads((results / "sft/config.json").read_text())["model_type"] == family


@pytest.mark.parametrize("family", FAMILIES)
def test_head_outputs_read_the_last_hidden_states_of_each_family(family, tiny_models):
    """The per-position head (reward at the last token, values for PPO) equals the backbone's last hidden state
    through the score head, computed independently, for every family; padding on the right as in training."""
    import torch

    from rewardlab.models.build import head_outputs, reward_model_from_backbone
    from rewardlab.models.packing import packs_sequences
    from rewardlab.tensors import position_ids_from_mask

    model = reward_model_from_backbone(tiny_models[family], seed=0).eval()
    model.config.pad_token_id = 0
    ids = torch.randint(5, 100, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        hidden, outputs = head_outputs(model, ids, mask)
        reference = model.base_model(input_ids=ids, attention_mask=mask,
                                     position_ids=position_ids_from_mask(mask)).last_hidden_state
    assert packs_sequences(model)  # every family keeps packed sequences apart: the pass was padding-free
    real = mask.bool()
    assert torch.allclose(hidden[real], reference[real], atol=1e-5)
    assert torch.allclose(outputs[real], model.score(reference)[real], atol=1e-5) and outputs.shape == (3, 9, 1)
    assert (outputs[~real] == 0).all()


def test_hh_single_and_multi_turn_prompts_render_alike_without_a_chat_template(tiny_models, tmp_path):
    """Without a chat template every HH prompt is a Human/Assistant transcript ending in "Assistant:", one turn
    or several; completion-style prompts (TL;DR, TRL standard) stay plain text."""
    data = tmp_path / "hh"
    ingest.STAGE.execute(real_config({"format": "hh_rlhf", "path": str(FIXTURES / "hh_rlhf.jsonl")},
                                     tiny_models["gpt2"]), data)
    prompts = [row["prompt"] for name in ("prompts_train.jsonl", "prompts_test.jsonl")
               for row in read_jsonl(data / name)]
    assert prompts and all(p.startswith("\n\nHuman: ") and p.endswith("\n\nAssistant:") for p in prompts)
    assert any(p.count("\n\nHuman: ") > 1 for p in prompts) and any(p.count("\n\nHuman: ") == 1 for p in prompts)
    tldr = tmp_path / "tldr"
    ingest.STAGE.execute(real_config({"format": "tldr_comparisons", "path": str(FIXTURES / "tldr_comparisons.json")},
                                     tiny_models["gpt2"]), tldr)
    assert all(r["prompt"].startswith("SUBREDDIT: ") for r in read_jsonl(tldr / "prompts_train.jsonl"))


def test_dropping_many_pairs_for_length_warns_and_is_measured(tiny_models, tmp_path, capsys):
    hh = {"format": "hh_rlhf", "path": str(FIXTURES / "hh_rlhf.jsonl")}
    metrics = ingest.STAGE.execute(real_config(hh, tiny_models["gpt2"], model={"max_length": 40}),
                                   tmp_path / "out").metrics
    assert metrics["pairs_too_long"] > 0
    assert metrics["pairs_too_long_fraction"] == pytest.approx(
        metrics["pairs_too_long"] / (metrics["pairs_too_long"] + metrics["pairs_train"] + metrics["pairs_test"]))
    assert "pairs" in capsys.readouterr().err and metrics["pairs_too_long_fraction"] > 0.2


def train_with_trl(labels: Path, model_dir: Path, tmp_path: Path) -> tuple[list[int], list[int]]:
    """TRL's RewardTrainer and DPOTrainer, two steps each, on a label folder's pairs_train.jsonl as it is
    (datasets' json loader, no conversion); returns the first pair's chosen ids as each trainer tokenised them."""
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = load_dataset("json", data_files=str(labels / "pairs_train.jsonl"), split="train")
    dataset = dataset.select(range(min(8, len(dataset))))
    common = {"max_steps": 2, "per_device_train_batch_size": 2, "report_to": [], "save_strategy": "no",
              "disable_tqdm": True, "use_cpu": True, "gradient_checkpointing": False, "seed": 0, "bf16": False,
              "dataloader_num_workers": 0}
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    rm.config.pad_token_id = tokenizer.pad_token_id
    reward = RewardTrainer(model=rm, args=RewardConfig(output_dir=str(tmp_path / "trl-rm"), **common),
                           train_dataset=dataset, processing_class=tokenizer)
    assert reward.train().global_step == 2
    dpo = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir),
                     args=DPOConfig(output_dir=str(tmp_path / "trl-dpo"), **common), train_dataset=dataset,
                     processing_class=tokenizer)
    assert dpo.train().global_step == 2
    row = dpo.train_dataset[0]
    dpo_ids = row["prompt_ids"] + row["chosen_ids"] if "prompt_ids" in row else row["chosen_ids"]
    return reward.train_dataset[0]["chosen_ids"], dpo_ids


def test_trl_trains_on_our_label_files_as_they_are(tiny_pipeline, tiny_models, tmp_path):
    """Issue 15: TRL 1.x reads rewardlab's pair files without conversion — SentiGram labels in TRL's standard
    format, a chat model's real-data pairs in its conversational format (prompt messages unrendered) — and
    tokenises each pair into the sequence rewardlab's own reward model trains on (plus TRL's EOS)."""
    from rewardlab.models.tokenizer import encode_prompt_responses

    labels, sft_dir = tiny_pipeline["labels"], tiny_pipeline["sft"]
    reward_ids, dpo_ids = train_with_trl(labels, sft_dir, tmp_path / "sentigram")
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    first = read_pairs(read_jsonl(labels / "pairs_train.jsonl")[:1])[0]
    ours = encode_prompt_responses(tokenizer, [first["prompt"]], [first["chosen"]])[0]
    eos = tokenizer.eos_token_id
    assert reward_ids == (ours if ours[-1] == eos else ours + [eos])  # TRL adds the EOS a response lacks
    assert dpo_ids[: len(ours)] == ours

    source = {"format": "ultrafeedback_binarized", "path": str(FIXTURES / "ultrafeedback_binarized.jsonl")}
    cfg = real_config(source, tiny_models["qwen2"])
    data = tmp_path / "data"
    ingest.STAGE.execute(cfg, data)
    reward_ids, dpo_ids = train_with_trl(data, tiny_models["qwen2"], tmp_path / "chat")
    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizer")
    first = read_pairs(read_jsonl(data / "pairs_train.jsonl")[:1], render=chat_renderer(tokenizer))[0]
    ours = encode_prompt_responses(tokenizer, [first["prompt"]], [first["chosen"]])[0]
    # TRL renders the whole conversation; the response's turn then closes with the template's end of turn
    assert reward_ids[: len(ours)] == ours and dpo_ids[: len(ours)] == ours
