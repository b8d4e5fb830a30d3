"""The ``vllm`` rollout backend against vLLM itself, on a CUDA GPU with ``rewardlab[vllm]`` installed (skipped
elsewhere, CI included; ``bash bench/gpu_check.sh`` runs it): the engine samples softmax(logits / T) (the
chi-square test the lean sampler passes), it follows the policy's weights after an update, and the policy stage
trains with it."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rewardlab.models.vllm_engine import VLLMOptions
from rewardlab.rl.rollout import sample
from tests.distribution import two_token_pvalues

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs rewardlab[vllm]")]

EOS, PAD = 11, 0
GPU = torch.device("cuda")
OPTIONS = VLLMOptions(gpu_memory_utilization=0.15, enforce_eager=True)


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> GPT2LMHeadModel:
    folder = tmp_path_factory.mktemp("vllm") / "policy"
    torch.manual_seed(1)
    config = GPT2Config(vocab_size=12, n_layer=2, n_head=2, n_embd=32, n_positions=64, eos_token_id=EOS,
                        bos_token_id=EOS, pad_token_id=PAD, initializer_range=0.2)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return GPT2LMHeadModel.from_pretrained(folder).to(GPU).eval()


def test_vllm_samples_softmax_over_temperature(lm):
    prompt, temperature, draws = [3, 4, 5], 0.8, 6000
    torch.manual_seed(7)
    rollout = sample(lm, [prompt] * draws, max_new_tokens=2, temperature=temperature, eos_id=EOS, pad_id=PAD,
                     device=GPU, backend=OPTIONS)
    fit, other_temperature = two_token_pvalues(lm, prompt, rollout, temperature, EOS)
    assert fit > 1e-3 and other_temperature < 1e-6


def test_vllm_follows_the_weights_after_an_update(lm):
    prompts = [[3, 4, 5], [6], [7, 8], [9, 10, 1, 2, 3, 4]]

    def greedy(backend):
        return sample(lm, prompts, max_new_tokens=10, temperature=1.0, eos_id=EOS, pad_id=PAD, device=GPU,
                      greedy=True, backend=backend).input_ids

    assert torch.equal(greedy(OPTIONS), greedy("lean"))
    before = greedy("lean")
    optimizer = torch.optim.Adam(lm.parameters(), lr=0.05, fused=True)
    for _ in range(20):  # teach it one continuation hard enough to change the greedy answers
        target = torch.tensor([[3, 4, 5, 2, 2, 2, 2, EOS]], device=GPU)
        optimizer.zero_grad()
        lm(target, labels=target).loss.backward()
        optimizer.step()
    after = greedy("lean")
    assert not torch.equal(before, after)
    assert torch.equal(greedy(OPTIONS), after)


def test_policy_stage_trains_with_vllm(tiny_pipeline, tmp_path):
    from rewardlab.train import policy

    p = tiny_pipeline
    cfg = copy.deepcopy(p["config"])
    cfg.update(device="cuda", rollout_backend="vllm",
               vllm={**cfg["vllm"], "gpu_memory_utilization": 0.15, "enforce_eager": True})
    history = policy.STAGE.execute(cfg, tmp_path, algorithm="grpo", shaping="sparse", seed=0, data=p["data"],
                                   sft=p["sft"], rm=p["rm"]).history
    assert len(history) == cfg["policy"]["steps"] and history[0]["kl"] == pytest.approx(0.0, abs=1e-3)
