"""One decoding step of a GPT-2 causal LM without the Hugging Face forward's per-call machinery.

At the sizes rewardlab trains on a CPU (4 layers, 256 wide, 32 rows) a decoding step's matmuls take well under a
millisecond, while ``GPT2LMHeadModel.forward`` spends several more in Python: argument handling, the causal-mask
builder, the cache object, output dataclasses. ``GPT2Decoder`` runs the same blocks with the module's own weights
and the same tensor operations in the same order (``Conv1D``'s ``addmm``, ``scaled_dot_product_attention`` with
the module's scaling and a boolean padding mask, or none when nothing is padded, as transformers' SDPA path
passes), so the logits are the same numbers as the model's forward, and the sampler draws the same tokens
(``tests/test_sampler.py`` checks both). Keys and values live in buffers allocated once for the whole response.

It applies only where that holds: a ``GPT2LMHeadModel`` with the ``sdpa`` attention implementation, no
cross-attention and no device map; ``GPT2Decoder.supports`` says so, and the sampler falls back to the model's
own forward for everything else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache, PreTrainedModel


class GPT2Decoder:
    """Decode steps for ``model`` after a prefill of ``prompt_width`` positions, for at most ``max_new_tokens``."""

    @staticmethod
    def supports(model: PreTrainedModel) -> bool:
        from transformers import GPT2LMHeadModel

        config = model.config
        return (type(model) is GPT2LMHeadModel and config._attn_implementation == "sdpa"
                and not config.add_cross_attention and getattr(model, "hf_device_map", None) is None
                and not model.training)

    def __init__(self, model: PreTrainedModel, cache: DynamicCache, prompt_mask: torch.Tensor, max_new_tokens: int):
        self.model, self.transformer = model, model.transformer
        prompt_width = prompt_mask.shape[1]
        width = prompt_width + max_new_tokens
        self.keys, self.values = [], []
        for layer in cache.layers:  # (B, H, P, D) from the model's own prefill
            rows, heads, _, dim = layer.keys.shape
            keys = layer.keys.new_empty((rows, heads, width, dim))
            values = layer.values.new_empty((rows, heads, width, dim))
            keys[:, :, :prompt_width], values[:, :, :prompt_width] = layer.keys, layer.values
            self.keys.append(keys)
            self.values.append(values)
        self.length = prompt_width
        self.mask = torch.ones((prompt_mask.shape[0], width), dtype=torch.bool, device=prompt_mask.device)
        self.mask[:, :prompt_width] = prompt_mask.bool()
        self.padded = not bool(self.mask[:, :prompt_width].all())

    def select(self, keep: torch.Tensor) -> None:
        """Keep only rows ``keep`` (in that order) of the cache."""
        self.keys = [k[keep] for k in self.keys]
        self.values = [v[keep] for v in self.values]
        self.mask = self.mask[keep]
        self.padded = not bool(self.mask[:, : self.length].all())

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits (b, V) of the next token after ``tokens`` (b,) at ``positions`` (b,); appends their keys/values.
        The modules' own functions are called directly (no ``Module.__call__`` dispatch), with their weights."""
        transformer, t = self.transformer, self.length
        hidden = F.embedding(tokens[:, None], transformer.wte.weight) + F.embedding(positions[:, None],
                                                                                   transformer.wpe.weight)
        rows = hidden.shape[0]
        mask = self.mask[:, None, None, : t + 1] if self.padded else None
        for block, keys, values in zip(transformer.h, self.keys, self.values):
            attn, mlp = block.attn, block.mlp
            qkv = attn.c_attn.forward(_layer_norm(block.ln_1, hidden))
            query, key, value = qkv.split(attn.split_size, dim=2)
            keys[:, :, t] = key.view(rows, -1, attn.head_dim)
            values[:, :, t] = value.view(rows, -1, attn.head_dim)
            query = query.view(rows, 1, -1, attn.head_dim).transpose(1, 2)
            out = F.scaled_dot_product_attention(query, keys[:, :, : t + 1], values[:, :, : t + 1], attn_mask=mask,
                                                 dropout_p=0.0, scale=attn.scaling)
            hidden = attn.c_proj.forward(out.transpose(1, 2).reshape(rows, 1, -1).contiguous()) + hidden
            hidden = hidden + mlp.c_proj.forward(mlp.act(mlp.c_fc.forward(_layer_norm(block.ln_2, hidden))))
        self.length = t + 1
        head = self.model.lm_head
        return F.linear(_layer_norm(transformer.ln_f, hidden), head.weight, head.bias)[:, -1]


def _layer_norm(module: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)
