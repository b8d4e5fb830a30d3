"""The ``vllm`` rollout backend (rewardlab.models.vllm_engine) without vLLM or a GPU: what rewardlab does around
the engine — the engine it builds, the requests it sends, the rollout it makes of the answers, the weights it
pushes after each update, the errors before compute — against ``FakeVLLM``, a small stand-in with vLLM's
interface (``LLM``, ``SamplingParams``, ``load_weights`` on the in-process model, ``reset_prefix_cache``) that
samples with plain forward passes of its own copy of the model. vLLM itself (its kernels and sampler) is not
exercised here: that needs a CUDA machine with ``rewardlab[vllm]`` installed (see the README)."""

from __future__ import annotations

import copy
import importlib.machinery
import os
import sys
import types
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from rewardlab import config as C
from rewardlab.models import vllm_engine
from rewardlab.models.vllm_engine import VLLMOptions, require_vllm
from rewardlab.rl.rollout import rollout_backend, sample

EOS, PAD = 11, 0
CPU = torch.device("cpu")
PROMPTS = [[3, 4, 5], [6], [7, 8], [9, 10, 1, 2, 3, 4]]


class FakeLLM:
    """vLLM's ``LLM`` as rewardlab uses it, sampling softmax(logits / T) token by token (no cache) from its own
    copy of the weights, each request from a generator seeded by its ``SamplingParams.seed``."""

    instances: list[FakeLLM] = []
    keep_stop_token = True  # vLLM keeps the stop token in token_ids; False checks that rewardlab copes without it

    def __init__(self, model: str, **kwargs):
        self.kwargs, self.prefix_cache_resets, self.loads = {"model": model, **kwargs}, 0, 0
        self.model = AutoModelForCausalLM.from_pretrained(model).eval()
        runner = SimpleNamespace(model=SimpleNamespace(load_weights=self.load_weights))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(
            driver_worker=SimpleNamespace(model_runner=runner)))
        self.requests: list[tuple[list[int], SimpleNamespace]] = []
        self.weights_at_generate: list[dict[str, torch.Tensor]] = []
        FakeLLM.instances.append(self)

    def load_weights(self, weights) -> None:
        own = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in weights:
                own[name].copy_(tensor)
        self.loads += 1

    def reset_prefix_cache(self) -> None:
        self.prefix_cache_resets += 1

    @torch.no_grad()
    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.weights_at_generate.append({k: v.clone() for k, v in self.model.state_dict().items()})
        outputs = []
        for prompt, params in zip(prompts, sampling_params, strict=True):
            ids = list(prompt["prompt_token_ids"])
            self.requests.append((ids, params))
            generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
            tokens, reason = [], "length"
            while len(tokens) < params.max_tokens:
                logits = self.model(torch.tensor([ids + tokens])).logits[0, -1]
                if params.temperature == 0:
                    token = int(logits.argmax())
                else:
                    token = int(torch.multinomial(torch.softmax(logits / params.temperature, -1), 1,
                                                  generator=generator))
                tokens.append(token)
                if token in params.stop_token_ids:
                    reason = "stop"
                    if not self.keep_stop_token:
                        tokens.pop()
                    break
            outputs.append(SimpleNamespace(prompt_token_ids=ids,
                                           outputs=[SimpleNamespace(token_ids=tokens, finish_reason=reason)]))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.LLM = FakeLLM
    module.SamplingParams = lambda **kwargs: SimpleNamespace(**kwargs)
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr(FakeLLM, "instances", [])
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        # recorded first, so what the engine sets for vLLM's launcher is taken back after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return module


@pytest.fixture
def lm(tmp_path) -> GPT2LMHeadModel:
    """A random 2-layer GPT-2 over 12 tokens (EOS = 11), loaded back from its folder as a policy is."""
    torch.manual_seed(1)
    config = GPT2Config(vocab_size=12, n_layer=2, n_head=2, n_embd=32, n_positions=64, eos_token_id=EOS,
                        bos_token_id=EOS, pad_token_id=PAD, initializer_range=0.2)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "policy")
    return GPT2LMHeadModel.from_pretrained(tmp_path / "policy")


def draw(model, seed: int, greedy: bool = False, **options):
    torch.manual_seed(seed)
    return sample(model, [p for p in PROMPTS for _ in range(3)], max_new_tokens=8, temperature=0.7, eos_id=EOS,
                  pad_id=PAD, device=CPU, greedy=greedy, backend=VLLMOptions(**options))


def test_the_engine_mirrors_the_policy_folder_with_neutral_sampling(fake_vllm, lm):
    draw(lm, seed=0, gpu_memory_utilization=0.5)
    (engine,) = FakeLLM.instances
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"]) == ("0", "1")  # one process: rank 0 of 1
    assert engine.kwargs["seed"] == 0
    assert engine.kwargs["model"] == str(lm.name_or_path)
    assert engine.kwargs["skip_tokenizer_init"] and engine.kwargs["generation_config"] == "vllm"
    assert engine.kwargs["dtype"] == "float32"  # auto: the policy's dtype
    assert engine.kwargs["distributed_executor_backend"] == "external_launcher"
    assert engine.kwargs["gpu_memory_utilization"] == 0.5 and not engine.kwargs["trust_remote_code"]
    params = [p for _, p in engine.requests]
    assert {(p.n, p.temperature, p.max_tokens, p.min_tokens, tuple(p.stop_token_ids), p.detokenize)
            for p in params} == {(1, 0.7, 8, 0, (EOS,), False)}
    assert not {"top_k", "top_p", "min_p", "repetition_penalty"} & set(vars(params[0]))  # vLLM's neutral defaults
    assert len({p.seed for p in params}) == len(params)  # each row its own stream
    draw(lm, seed=0, greedy=True)
    assert {(p.temperature, p.seed) for _, p in engine.requests[len(params):]} == {(0.0, None)}


@pytest.mark.parametrize("keep_stop_token", [True, False], ids=["eos-kept", "eos-left-out"])
def test_engine_answers_become_a_rollout_that_ends_at_eos(fake_vllm, lm, monkeypatch, keep_stop_token):
    monkeypatch.setattr(FakeLLM, "keep_stop_token", keep_stop_token)
    rollout = draw(lm, seed=3)
    (engine,) = FakeLLM.instances
    width = max(len(p) for p in PROMPTS)
    assert rollout.prompt_width == width
    ended = 0
    for row, (prompt, _) in enumerate(engine.requests):
        mask = rollout.response_mask[row].bool()
        response = rollout.response_ids[row][mask].tolist()
        prompt_part = rollout.input_ids[row, :width][rollout.attention_mask[row, :width].bool()].tolist()
        assert prompt_part == prompt
        assert bool(rollout.has_eos[row]) == (EOS in response)
        if rollout.has_eos[row]:
            ended += 1
            assert response[-1] == EOS and EOS not in response[:-1]
        else:
            assert len(response) == 8
        assert (rollout.response_ids[row][~mask] == PAD).all()
    assert 0 < ended < len(engine.requests)  # both kinds of row were seen


def test_the_stream_is_seeded_from_torch(fake_vllm, lm):
    first, again, other = draw(lm, seed=5), draw(lm, seed=5), draw(lm, seed=6)
    assert torch.equal(first.input_ids, again.input_ids)
    assert not torch.equal(first.input_ids, other.input_ids)
    assert len(FakeLLM.instances) == 1  # one engine per model object


def test_weights_are_pushed_once_per_change(fake_vllm, lm):
    draw(lm, seed=0)
    (engine,) = FakeLLM.instances
    assert engine.loads == 1 and engine.prefix_cache_resets == 1  # the first call pushes what is in memory
    draw(lm, seed=0)
    assert engine.loads == 1  # unchanged weights: nothing sent
    optimizer = torch.optim.Adam(lm.parameters(), lr=0.1, fused=True)
    lm(torch.tensor([PROMPTS[0]]), labels=torch.tensor([PROMPTS[0]])).loss.backward()
    optimizer.step()
    draw(lm, seed=0)
    assert engine.loads == 2 and engine.prefix_cache_resets == 2
    for name, tensor in lm.state_dict().items():
        torch.testing.assert_close(engine.weights_at_generate[-1][name], tensor, rtol=0, atol=0)
    lm.load_state_dict(GPT2LMHeadModel.from_pretrained(lm.name_or_path).state_dict())  # a checkpoint restored
    draw(lm, seed=0)
    assert engine.loads == 3


def test_a_model_without_a_folder_is_refused(fake_vllm):
    model = GPT2LMHeadModel(GPT2Config(vocab_size=12, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(ValueError, match="rollout_backend: vllm builds its engine from the model's folder"):
        draw(model, seed=0)


def test_vllm_needs_the_package_and_a_gpu(fake_vllm, monkeypatch):
    with pytest.raises(SystemExit, match="CUDA GPU"):
        require_vllm(CPU)
    require_vllm(torch.device("cuda"))  # the package is there (the fake) and the device is a GPU
    monkeypatch.delitem(sys.modules, "vllm")
    monkeypatch.setattr(vllm_engine.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match=r"rewardlab\[vllm\]"):
        require_vllm(torch.device("cuda"))


def test_vllm_is_a_config_choice_with_its_own_section():
    config = C.validate({"rollout_backend": "vllm", "vllm": {"dtype": "bfloat16"}})
    assert rollout_backend(config) == VLLMOptions(dtype="bfloat16")
    assert rollout_backend(C.validate({})) == "lean"
    with pytest.raises(C.ConfigError, match="rollout_backend: vllm samples on a CUDA GPU"):
        C.validate({"rollout_backend": "vllm", "device": "cpu"})
    with pytest.raises(C.ConfigError, match="vllm.gpu_memory_utilization"):
        C.validate({"rollout_backend": "vllm", "vllm": {"gpu_memory_utilization": 1.5}})
    from rewardlab import dag

    # the engine's settings are parameters of the sampling stages under vllm only: other runs do not rerun
    assert "vllm" in dag.stage_slice(config, "policy") and "vllm" in dag.stage_slice(config, "evaluate")
    assert "vllm" not in dag.stage_slice(C.validate({}), "policy")


def test_a_stage_asked_for_vllm_stops_before_compute(tiny_config, tmp_path):
    from rewardlab.runner import Stage, StageResult

    ran = []
    stage = Stage("probe", lambda ctx: ran.append(1) or StageResult({}, []), ())
    with pytest.raises(SystemExit, match="rollout_backend: vllm"):  # no vllm here, or no GPU
        stage.execute({**tiny_config, "rollout_backend": "vllm"}, tmp_path)
    assert not ran and not (tmp_path / "metrics.json").exists()


def test_policy_training_samples_each_step_from_the_current_weights(fake_vllm, tiny_pipeline, tmp_path, monkeypatch):
    """The policy stage under ``rollout_backend: vllm``: every rollout comes from an engine holding exactly the
    policy's weights at that moment (pushed after each update), through the whole RL loop."""
    from rewardlab.train import policy

    monkeypatch.setattr(vllm_engine, "require_vllm", lambda device: None)  # the fake runs on the CPU
    p = tiny_pipeline
    cfg = copy.deepcopy(p["config"])
    cfg["rollout_backend"] = "vllm"
    at_rollout = []
    original = policy.PolicyTrainer.generate

    def generate(self, prompts, greedy=False):
        weights = self.ctx.accelerator.unwrap_model(self.policy).state_dict()
        at_rollout.append({k: v.clone() for k, v in weights.items()})
        return original(self, prompts, greedy)

    monkeypatch.setattr(policy.PolicyTrainer, "generate", generate)
    history = policy.STAGE.execute(cfg, tmp_path, algorithm="reinforce_pp", shaping="sparse", seed=0,
                                   data=p["data"], sft=p["sft"], rm=p["rm"]).history
    (engine,) = FakeLLM.instances
    steps = cfg["policy"]["steps"]
    assert len(at_rollout) == len(engine.weights_at_generate) == steps and engine.loads == steps
    for policy_weights, engine_weights in zip(at_rollout, engine.weights_at_generate, strict=True):
        for name, tensor in policy_weights.items():
            torch.testing.assert_close(engine_weights[name], tensor, rtol=0, atol=0)
    assert not torch.equal(at_rollout[0]["transformer.wte.weight"], at_rollout[-1]["transformer.wte.weight"])
    assert len(history) == steps and history[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert (pd.read_csv(tmp_path / "history.csv")["eos_rate"] >= 0).all()
