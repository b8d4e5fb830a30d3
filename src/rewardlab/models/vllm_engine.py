"""The ``vllm`` rollout backend: responses sampled by a vLLM engine inside the training process, on its GPU.

This is TRL's ``vllm_mode="colocate"`` done the way rewardlab samples everywhere else:

* **One engine per model object** (``engine_for``), built on first use from the folder the model was loaded
  from (``model.name_or_path``: the SFT folder for a policy), with vLLM's ``external_launcher`` executor so it
  runs in this process (one engine per process under ``accelerate launch``, each sampling its own share of the
  prompts, as every backend does) and ``generation_config="vllm"``: none of the model's
  ``generation_config.json`` reshapes the distribution (the same rule as ``rollout.neutral_generation_config``).
* **Weights synced after each update**: any optimiser step over the model's parameters marks its engine stale
  (a global ``torch.optim`` step hook: fused optimisers update in place without touching the parameters'
  version counters, so those alone would miss it), as does a change of a parameter's storage or version
  counter (``load_state_dict``, a checkpoint restored). Before the next sampling call the parameters go to the
  engine (``load_weights``, the path TRL takes for vLLM 0.22–0.31) and its prefix cache is reset. The first
  call pushes them too, so a model changed in memory since it was saved samples as it is now.
* **The same distribution, seeded from the config**: softmax(logits / T) with no top-k, top-p, min-p or
  penalty (greedy: T = 0); each row gets its own vLLM seed drawn from torch's global generator, which the stage
  runner seeds from the config, so a run reruns to the same tokens and ``torch.manual_seed`` before a call
  fixes its stream, as with the other backends. The tokens differ from ``lean``/``hf`` (another random stream,
  other kernels); the distribution is the same.
* The log-probabilities the objectives use are still computed by the training model (``rollout.response_logits``),
  never taken from vLLM: an engine in bf16 samples from a slightly different distribution than the fp32 policy
  it mirrors (``vllm.dtype``; ``auto`` uses the policy's own dtype, so that difference is only kernel rounding).

vLLM is an optional extra (``pip install 'rewardlab[vllm]'``) that needs a CUDA GPU; ``require_vllm`` says so
before any compute when ``rollout_backend: vllm`` is asked for without it.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from transformers import PreTrainedModel

INSTALL_HINT = "pip install 'rewardlab[vllm]'"


@dataclass(frozen=True)
class VLLMOptions:
    """The config's ``vllm`` section (and ``model.trust_remote_code``): how an engine is built."""

    dtype: str = "auto"  # auto: the dtype of the model whose weights it mirrors
    gpu_memory_utilization: float = 0.3  # the share of the GPU the engine may take; training keeps the rest
    enforce_eager: bool = False  # true: no CUDA graphs (quicker start, slower decoding)
    max_model_len: int | None = None  # None: the model's own context length
    trust_remote_code: bool = False

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> VLLMOptions:
        """From a validated config: its ``vllm`` section carries every key, with the schema's defaults."""
        return cls(**config["vllm"], trust_remote_code=config.get("model", {}).get("trust_remote_code", False))


def require_vllm(device: torch.device) -> None:
    """Stop before any compute when the vllm backend cannot run here, naming the config key and the fix."""
    if importlib.util.find_spec("vllm") is None:
        raise SystemExit(f"rollout_backend: vllm needs the vllm package, which is not installed ({INSTALL_HINT}); "
                         "or set rollout_backend: lean")
    if device.type != "cuda":
        raise SystemExit(f"rollout_backend: vllm samples on a CUDA GPU; this stage runs on {device.type} "
                         "(device: cuda, or rollout_backend: lean)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _launcher_environment() -> None:
    """``external_launcher`` reads the process group from the environment; a single process (no ``accelerate
    launch``) is rank 0 of 1 on a free local port."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "localhost")
    if os.environ.get("MASTER_PORT", "").strip().lower() in ("", "0", "auto"):
        os.environ["MASTER_PORT"] = str(_free_port())


def _weights_state(model: PreTrainedModel) -> tuple[tuple[int, int], ...]:
    """Each parameter's storage and version counter: any in-place change (an optimiser step, ``load_state_dict``)
    or replacement of a parameter changes it."""
    return tuple((p.data_ptr(), p._version) for p in model.parameters())


def _mark_stale(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """After any optimiser step: the engines of the models it updated must be sent their weights again."""
    stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for engine in _ENGINES.values():
        if not engine.stale and not stepped.isdisjoint(engine.parameter_ids):
            engine.stale = True


class VLLMEngine:
    """A vLLM ``LLM`` that mirrors one model's weights."""

    step_hook: Any = None  # the global optimiser step hook, registered with the first engine

    def __init__(self, model: PreTrainedModel, options: VLLMOptions):
        folder = Path(str(model.name_or_path))
        if not (folder / "config.json").is_file():
            raise ValueError(f"rollout_backend: vllm builds its engine from the model's folder; {folder} has no "
                             "config.json (the model was not loaded from a local Hugging Face folder)")
        from vllm import LLM  # the optional extra: imported only here

        _launcher_environment()
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.") if options.dtype == "auto" \
            else options.dtype
        self.llm = LLM(model=str(folder), skip_tokenizer_init=True, dtype=dtype,
                       gpu_memory_utilization=options.gpu_memory_utilization, enforce_eager=options.enforce_eager,
                       max_model_len=options.max_model_len, trust_remote_code=options.trust_remote_code,
                       distributed_executor_backend="external_launcher", generation_config="vllm",
                       seed=int(os.environ["RANK"]))
        self.parameter_ids = frozenset(id(p) for p in model.parameters())
        self.pushed: tuple[tuple[int, int], ...] | None = None
        self.stale, self.pushes = True, 0
        if VLLMEngine.step_hook is None:
            VLLMEngine.step_hook = register_optimizer_step_post_hook(_mark_stale)

    def sync(self, model: PreTrainedModel) -> None:
        """Push the model's weights to the engine if they changed since the last push (always, the first time)."""
        state = _weights_state(model)
        if not self.stale and state == self.pushed:
            return
        engine_model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        engine_model.load_weights((name, param.detach()) for name, param in model.named_parameters())
        self.llm.reset_prefix_cache()  # cached prompt states were computed with the old weights
        self.pushed, self.stale, self.pushes = state, False, self.pushes + 1

    def responses(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float, eos_id: int,
                  greedy: bool) -> list[list[int]]:
        """One response per prompt, EOS included when the row ended (vLLM stops at ``eos_id``)."""
        from vllm import SamplingParams

        seeds = torch.randint(0, 2**31 - 1, (len(prompts),)).tolist()  # torch's global stream: seeded by the stage

        def params(seed: int) -> Any:
            # top_k, top_p, min_p and the penalties keep vLLM's neutral defaults (generation_config="vllm")
            return SamplingParams(n=1, temperature=0.0 if greedy else temperature, max_tokens=max_new_tokens,
                                  min_tokens=0, stop_token_ids=[eos_id], detokenize=False,
                                  seed=None if greedy else seed)

        outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts],
                                    sampling_params=[params(s) for s in seeds], use_tqdm=False)
        responses = []
        for out in outputs:
            completion = out.outputs[0]
            tokens = list(completion.token_ids)
            if completion.finish_reason == "stop" and (not tokens or tokens[-1] != eos_id):
                tokens.append(eos_id)  # stopped on EOS but left it out: the rollout's rows end with their EOS
            responses.append(tokens)
        return responses


_ENGINES: weakref.WeakKeyDictionary[PreTrainedModel, VLLMEngine] = weakref.WeakKeyDictionary()


def engine_for(model: PreTrainedModel, options: VLLMOptions) -> VLLMEngine:
    """The model's engine (built on first use), its weights synced with the model's."""
    engine = _ENGINES.get(model)
    if engine is None:
        engine = _ENGINES[model] = VLLMEngine(model, options)
    engine.sync(model)
    return engine
