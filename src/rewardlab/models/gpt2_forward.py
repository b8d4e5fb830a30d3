"""A full-sequence GPT-2 pass (scoring and training) without the Hugging Face forward's per-call machinery.

The policy stage makes thousands of passes per run over small batches (2,400 mini-batch updates in the algorithm
study, each a policy pass and, for PPO and A2C, a critic pass), and on a CPU a tiny GPT-2's matmuls there take
about as long as ``GPT2LMHeadModel.forward``'s Python around them: argument decorators, output recorders and
dataclasses, and a ``Module.__call__`` dispatch for each of ~30 submodules. ``forward`` runs the same blocks with
the modules' own ``forward`` methods, weights and dropout modules, in the same order as transformers' GPT-2 with
the ``sdpa`` attention (``Conv1D``'s ``addmm``, ``scaled_dot_product_attention`` with the module's scaling), and
takes its attention mask from transformers' own ``create_causal_mask`` (packed position ids → the block-diagonal
mask; a 4-D mask as given), so outputs and gradients are the same numbers as the model's forward
(``tests/test_gpt2_forward.py`` checks both, bit for bit, for the LM and the sequence-classification model).

It applies only where that holds (``supports``): a bare ``GPT2LMHeadModel`` or ``GPT2ForSequenceClassification``
(not wrapped for several processes, whose wrapper's forward synchronises gradients), ``sdpa`` attention, no
cross-attention, no device map, no gradient checkpointing in training, and no hooks or patched ``forward`` on any
of its modules (Accelerate's mixed-precision autocast, PEFT, a user's hooks). Everything else takes the model's
own forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class GPT2Output:
    """What the callers read: the LM head's logits at every position, or the classification head's outputs at
    every position (before the pooling that ``GPT2ForSequenceClassification.forward`` applies)."""

    last_hidden_state: torch.Tensor
    logits: torch.Tensor | None = None  # LM: (B, T, V)
    head_outputs: torch.Tensor | None = None  # sequence classification: (B, T, labels)


_MODULES = "_rewardlab_direct_modules"


def _transformers_recorder(hook: object) -> bool:
    """transformers' own output recorder, installed on the blocks at the first forward: it records only inside
    that forward (for ``output_hidden_states``), so skipping it changes nothing here."""
    return getattr(hook, "__qualname__", "").endswith("output_capturing_hook")


def _intercepted(module: torch.nn.Module) -> bool:
    """Hooks or a patched ``forward`` (Accelerate's autocast or device hooks) that a direct call to
    ``module.forward`` would skip."""
    state = module.__dict__
    if "forward" in state or "_hf_hook" in state:
        return True
    if not (module._forward_hooks or module._forward_pre_hooks):
        return False
    hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
    return any(not _transformers_recorder(hook) for hook in hooks)


def supports(model: torch.nn.Module) -> bool:
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

    if type(model) not in (GPT2LMHeadModel, GPT2ForSequenceClassification):
        return False
    config, transformer = model.config, model.transformer
    if (config._attn_implementation != "sdpa" or config.add_cross_attention
            or getattr(model, "hf_device_map", None) is not None
            or (transformer.gradient_checkpointing and model.training)):
        return False
    from torch.nn.modules import module as module_globals

    if module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks:
        return False
    modules = model.__dict__.get(_MODULES)
    if modules is None:  # the modules of a model do not change between passes; their hooks may
        modules = model.__dict__[_MODULES] = [model, *transformer.modules()]
    return not any(_intercepted(m) for m in modules)


def last_hidden_state(model: torch.nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor,
                      attention_mask: torch.Tensor | None = None,
                      kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
    """The final layer norm's output (B, T, H), as ``model.transformer(...).last_hidden_state`` with no cache.
    ``kv``, when given, receives each layer's keys and values (B, heads, T, head_dim): what the model's forward
    would store in an empty cache (the lean sampler's prompt pass)."""
    from transformers.masking_utils import create_causal_mask

    transformer = model.transformer
    inputs_embeds = transformer.wte.forward(input_ids)
    hidden = inputs_embeds + transformer.wpe.forward(position_ids)
    mask = create_causal_mask(config=transformer.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                              cache=None, position_ids=position_ids)
    hidden = transformer.drop.forward(hidden)
    for block in transformer.h:
        attn, mlp = block.attn, block.mlp
        query, key, value = attn.c_attn.forward(block.ln_1.forward(hidden)).split(attn.split_size, dim=2)
        shape = (*key.shape[:-1], -1, attn.head_dim)
        key, value, query = (t.view(shape).transpose(1, 2) for t in (key, value, query))
        if kv is not None:
            kv.append((key, value))
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask,
                                             dropout_p=attn.attn_dropout.p if attn.training else 0.0,
                                             scale=attn.scaling, is_causal=query.shape[2] > 1 and mask is None)
        out = out.transpose(1, 2).contiguous()
        out = attn.resid_dropout.forward(attn.c_proj.forward(out.reshape(*out.shape[:-2], -1).contiguous()))
        hidden = out + hidden
        feed_forward = mlp.dropout.forward(mlp.c_proj.forward(mlp.act.forward(mlp.c_fc.forward(
            block.ln_2.forward(hidden)))))
        hidden = hidden + feed_forward
    return transformer.ln_f.forward(hidden)


def forward(model: torch.nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor,
            attention_mask: torch.Tensor | None = None) -> GPT2Output:
    """The pass and the model's head at every position. The head is called as a module (``head(hidden)``), so
    a hook on it sees the same input and output as in the model's own forward (``build.head_outputs``)."""
    hidden = last_hidden_state(model, input_ids, position_ids, attention_mask)
    if hasattr(model, "lm_head"):
        return GPT2Output(hidden, logits=model.lm_head(hidden))
    return GPT2Output(hidden, head_outputs=model.score(hidden))
