"""Build or load the policy, reward and value models (Hugging Face formats, safetensors on disk).

* policy: any causal LM (``AutoModelForCausalLM``); the embedded default is a tiny GPT-2 from scratch;
* reward model: the SFT backbone with a scalar head read at the last non-pad token
  (``AutoModelForSequenceClassification(num_labels=1)``, rlhf-reference.md §1);
* value model: a reward model whose head is applied at every position (``token_values``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
)

from rewardlab.models.packing import forward as packed_forward
from rewardlab.tensors import last_token_index

# Post-hoc RM normalisation (§1.12) lives in the model's config.json under this key.
NORMALISATION_KEY = "rewardlab_reward_normalisation"
# Weights that turn a multi-attribute head into a scalar reward.
ATTRIBUTE_KEY = "rewardlab_attribute_combination"


def build_tiny_gpt(vocab_size: int, pad_id: int, bos_id: int, eos_id: int, n_layer: int, n_head: int,
                   n_embd: int, n_positions: int) -> GPT2LMHeadModel:
    """A small GPT-2 trained from scratch. Dropout is off everywhere (pitfall §6.3). Its GELU is torch's fused
    tanh approximation (``gelu_pytorch_tanh``): GPT-2's own ``gelu_new`` is the same function written as five
    Python-level tensor operations."""
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id, tie_word_embeddings=True,
        activation_function="gelu_pytorch_tanh",
    )
    return GPT2LMHeadModel(config)


def load_policy(path: str | Path, trust_remote_code: bool = False) -> PreTrainedModel:
    """A causal LM folder as a policy (or a reference), dropout off (pitfall §6.3)."""
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code)
    disable_dropout(model)
    return model


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability to 0 (TRL ``disable_dropout=True``; pitfall §6.3)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def reward_model_from_backbone(path: str | Path, seed: int, num_labels: int = 1,
                               trust_remote_code: bool = False) -> PreTrainedModel:
    """The SFT backbone plus a fresh head (scalar, or one output per attribute), initialised N+-style:
    normal(std=1/sqrt(H+1)), bias 0.
    """
    # problem_type "regression": transformers' text-classification pipeline then returns the raw score, not
    # σ(score) as it does for any other one-label model.
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=num_labels, problem_type="regression", trust_remote_code=trust_remote_code
    )
    head = score_head(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        hidden = head.weight.shape[1]
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) / math.sqrt(hidden + 1))
        if head.bias is not None:
            head.bias.zero_()
    disable_dropout(model)
    return model


def load_reward_model(path: str | Path, trust_remote_code: bool = False) -> PreTrainedModel:
    model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=trust_remote_code)
    disable_dropout(model)
    return model


def score_head(model: PreTrainedModel) -> torch.nn.Linear:
    """The scalar head of a sequence-classification model (``score`` in GPT-2, Llama, Qwen, GPT-NeoX)."""
    head = getattr(model, "score", None)
    if not isinstance(head, torch.nn.Linear):
        raise TypeError(f"{type(model).__name__} has no linear `score` head; cannot use it as a reward model")
    return head


def head_outputs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 prompt_width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states (B, T, H), raw head outputs (B, T, D)) from one forward pass.

    The pass goes through the model's own ``forward``, so a model wrapped for several processes (DDP)
    synchronises its gradients. Hugging Face sequence-classification models apply their ``score`` head at
    every position before pooling; a forward hook on the head takes its input (the last hidden states) and its
    output (B, T, D) from that pass — without asking for every layer's hidden states, which would hold
    L × B × T × H activations at once. ``prompt_width``: rows that share their first ``prompt_width`` columns'
    tokens (a rollout's prompts) share their pass (``rewardlab.models.packing.share_prompts``).
    """
    head = score_head(getattr(model, "module", model))
    captured: dict[str, torch.Tensor] = {}

    def keep(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        captured["hidden"], captured["outputs"] = inputs[0], output

    handle = head.register_forward_hook(keep)
    try:
        # padding-free when the model allows it
        _, packing = packed_forward(model, input_ids, attention_mask, prompt_width=prompt_width)
    finally:
        handle.remove()
    if captured["outputs"].dim() != 3:
        raise TypeError(f"{type(head).__name__} head was not applied per position; cannot read token values")
    if packing is not None:
        return packing.unpack(captured["hidden"]), packing.unpack(captured["outputs"])
    return captured["hidden"], captured["outputs"]


def combine_heads(model: torch.nn.Module, outputs: torch.Tensor) -> torch.Tensor:
    """A scalar from the head: itself when D = 1; for a multi-attribute head (SteerLM, §1.5) the fixed
    linear combination Σ_j w_j·v_j + c stored in config.json at training time.
    """
    if outputs.shape[-1] == 1:
        return outputs.squeeze(-1)
    combination = getattr(getattr(model, "module", model).config, ATTRIBUTE_KEY, None)
    if combination is None:
        raise ValueError(f"a {outputs.shape[-1]}-output reward head needs `{ATTRIBUTE_KEY}` in its config.json")
    weights = torch.tensor(combination["weights"], dtype=outputs.dtype, device=outputs.device)
    return outputs @ weights + combination["offset"]


def token_values(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 prompt_width: int | None = None) -> torch.Tensor:
    """The (combined) head applied at every position: V(s_t) for a value model initialised from the RM."""
    _, outputs = head_outputs(model, input_ids, attention_mask, prompt_width)
    return combine_heads(model, outputs)


def sequence_scores(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    prompt_width: int | None = None) -> torch.Tensor:
    """r_φ(x, y): the head read at the last non-pad token (pitfall §6.1), raw (not normalised)."""
    values = token_values(model, input_ids, attention_mask, prompt_width)
    return values.gather(1, last_token_index(attention_mask)[:, None]).squeeze(1)


def reward_normalisation(model: PreTrainedModel) -> tuple[float, float]:
    """(mean, std) of the RM on SFT samples, stored at training time; (0, 1) when absent."""
    stats = getattr(model.config, NORMALISATION_KEY, None) or {}
    return float(stats.get("mean", 0.0)), float(stats.get("std", 1.0))


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
