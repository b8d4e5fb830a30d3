"""Rollouts: batched sampling with a KV cache, then log-probs, values and scores without redundant passes.

A rollout holds one row per sample: the prompt left-padded to a common width P, then the response
right-padded to width R. Tokens after the first EOS are replaced by padding and masked out (pitfall §6.1),
so the last non-pad token of a row is its EOS (or its last token when it never terminated).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import GenerationConfig, PreTrainedModel

from rewardlab.models.packing import forward as packed_forward
from rewardlab.models.vllm_engine import VLLMOptions, engine_for
from rewardlab.rl.sampler import decode
from rewardlab.tensors import pad_left, pad_right


@dataclass
class Rollout:
    """Sampled responses, aligned for scoring and updates."""

    input_ids: torch.Tensor  # (B, P+R) prompt (left-padded) then response (right-padded)
    attention_mask: torch.Tensor  # (B, P+R)
    prompt_width: int  # P
    response_mask: torch.Tensor  # (B, R) 1 on response tokens up to and including EOS
    has_eos: torch.Tensor  # (B,) bool

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_width :]

    @property
    def lengths(self) -> torch.Tensor:
        """Response tokens, EOS included."""
        return self.response_mask.sum(-1)

    def select(self, index: torch.Tensor) -> Rollout:
        return Rollout(self.input_ids[index], self.attention_mask[index], self.prompt_width,
                       self.response_mask[index], self.has_eos[index])


def truncate_after_eos(responses: torch.Tensor, eos_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                      torch.Tensor]:
    """Mask everything after the first EOS. Returns (responses, mask, has_eos)."""
    is_eos = responses == eos_id
    # Number of EOS tokens strictly before each position; a position is valid if none came before it.
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    mask = (eos_before == 0).long()
    responses = responses.masked_fill(mask == 0, pad_id)
    return responses, mask, is_eos.any(dim=1)


@contextmanager
def neutral_generation_config(model: PreTrainedModel, eos_id: int, pad_id: int) -> Iterator[None]:
    """``generate`` fills every setting the caller leaves unset from the model's ``generation_config.json``: a
    pretrained model's repetition_penalty, no_repeat_ngram_size, suppress_tokens, top_k, min_length … would
    reshape the sampling distribution away from softmax(logits / T), the one whose log-probs the objectives
    use. For the call, the model's config is replaced by a blank one (library defaults: no processors)."""
    saved = model.generation_config
    model.generation_config = GenerationConfig(bos_token_id=saved.bos_token_id, eos_token_id=eos_id,
                                               pad_token_id=pad_id)
    try:
        yield
    finally:
        model.generation_config = saved


# The config's rollout_backend: the lean decode loop (sampler.py), HF generate, or vLLM (models/vllm_engine.py).
ROLLOUT_BACKENDS = ("lean", "hf", "vllm")
RolloutBackend = str | VLLMOptions  # "lean", "hf", or the vllm backend with its engine options


def rollout_backend(config: dict) -> RolloutBackend:
    """What ``sample`` takes as ``backend`` for a stage's config: the name, or for ``vllm`` its options."""
    name = config["rollout_backend"]
    return VLLMOptions.from_config(config) if name == "vllm" else name


@torch.no_grad()
def generate(policy: PreTrainedModel, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, eos_id: int,
             pad_id: int, device: torch.device, **decoding) -> Rollout:
    """One response per prompt row with HF ``generate``, under the decoding settings given (``do_sample``,
    ``temperature``, ``top_k``, ``top_p``, ``num_beams``, ``length_penalty``) and no other: the model's own
    generation_config.json is set aside for the call (``neutral_generation_config``)."""
    prompt_ids, prompt_mask = pad_left(prompts, pad_id)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    was_training = policy.training
    policy.eval()
    with neutral_generation_config(policy, eos_id, pad_id):
        generated = policy.generate(
            input_ids=prompt_ids, attention_mask=prompt_mask, max_new_tokens=max_new_tokens, min_new_tokens=0,
            eos_token_id=eos_id, pad_token_id=pad_id, use_cache=True, **decoding,
        )
    policy.train(was_training)
    return assemble(prompt_ids, prompt_mask, generated[:, prompt_ids.shape[1] :], eos_id, pad_id)


def assemble(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, generated: torch.Tensor, eos_id: int,
             pad_id: int) -> Rollout:
    """A rollout from left-padded prompts and the tokens generated after them (anything after EOS masked)."""
    responses, response_mask, has_eos = truncate_after_eos(generated, eos_id, pad_id)
    if responses.shape[1] == 0:  # generation may stop at once; keep a 1-token placeholder column
        responses = torch.full((prompt_ids.shape[0], 1), pad_id, device=prompt_ids.device)
        response_mask = torch.zeros_like(responses)
    input_ids = torch.cat([prompt_ids, responses], dim=1)
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)
    return Rollout(input_ids, attention_mask, prompt_ids.shape[1], response_mask, has_eos)


def sample(policy: PreTrainedModel, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float,
           eos_id: int, pad_id: int, device: torch.device, greedy: bool = False,
           backend: RolloutBackend = "lean") -> Rollout:
    """Sample one response per prompt row (repeat rows for several samples).

    The distribution is exactly softmax(logits / temperature), the one whose log-probs the objectives use:
    no top-k, top-p or penalty, whatever the model's generation_config.json says. ``backend`` ``lean`` decodes
    with ``sampler.decode`` (finished rows leave the batch; the same tokens as ``generate`` from the same
    random state), ``hf`` with HF ``generate``, the reference implementation, ``vllm`` (``VLLMOptions``) with the
    model's vLLM engine, its weights synced first when they changed (``vllm_engine``: the same distribution,
    another random stream).
    """
    if backend == "vllm":
        backend = VLLMOptions()
    if isinstance(backend, VLLMOptions):
        engine = engine_for(policy, backend)
        responses = engine.responses(prompts, max_new_tokens=max_new_tokens, temperature=temperature, eos_id=eos_id,
                                     greedy=greedy)
        prompt_ids, prompt_mask = pad_left(prompts, pad_id)
        generated, _ = pad_right(responses, pad_id)
        return assemble(prompt_ids.to(device), prompt_mask.to(device), generated.to(device), eos_id, pad_id)
    if backend == "hf":
        decoding = {"do_sample": False} if greedy else {"do_sample": True, "temperature": temperature, "top_k": 0,
                                                        "top_p": 1.0}
        return generate(policy, prompts, max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                        device=device, **decoding)
    if backend != "lean":
        raise ValueError(f"unknown rollout backend {backend!r}; known: {', '.join(ROLLOUT_BACKENDS)}")
    prompt_ids, prompt_mask = pad_left(prompts, pad_id)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    generated = decode(policy, prompt_ids, prompt_mask, max_new_tokens=max_new_tokens, temperature=temperature,
                       eos_id=eos_id, pad_id=pad_id, greedy=greedy)
    return assemble(prompt_ids, prompt_mask, generated, eos_id, pad_id)


def response_logits(model: PreTrainedModel, rollout: Rollout, temperature: float) -> torch.Tensor:
    """Logits ÷ temperature at the positions that predict response tokens: (B, R, V); one padding-free pass
    when the model allows it, each prompt run once for the rows that share it (``rewardlab.models.packing``;
    zeros where the response is padding)."""
    out, packing = packed_forward(model, rollout.input_ids, rollout.attention_mask, prompt_width=rollout.prompt_width)
    columns = slice(rollout.prompt_width - 1, -1)
    logits = out.logits[:, columns] if packing is None else packing.unpack(out.logits, columns)
    return logits.float() / temperature


def token_logprobs(logp_all: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """(B, R, V) log-probabilities → (B, R): the log-probability of each token that was taken."""
    return logp_all.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)


def logprobs_and_entropy_from_logits(logits: torch.Tensor,
                                     token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(y_t | s_t) of the taken tokens and the entropy of π(· | s_t), from (B, R, V) logits."""
    logp_all = F.log_softmax(logits, dim=-1)
    return token_logprobs(logp_all, token_ids), -(logp_all.exp() * logp_all).sum(-1)


def logprobs_and_entropy(model: PreTrainedModel, rollout: Rollout,
                         temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(y_t | s_t) at the sampling temperature (pitfall §6.2) and the policy's entropy at each t."""
    return logprobs_and_entropy_from_logits(response_logits(model, rollout, temperature), rollout.response_ids)


def rows_to_lists(rollout: Rollout) -> list[list[int]]:
    """The response ids of each row, EOS included, without padding."""
    return [row[mask.bool()].tolist() for row, mask in zip(rollout.response_ids.cpu(), rollout.response_mask.cpu())]
