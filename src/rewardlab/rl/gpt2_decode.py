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

import math

import torch
import torch.nn.functional as F
from transformers import DynamicCache, PreTrainedModel


class GPT2Decoder:
    """Decode steps for ``model`` after a prefill of ``prompt_width`` positions, for at most ``max_new_tokens``
    (``prefill`` runs that pass too, the same way)."""

    @staticmethod
    def supports(model: PreTrainedModel) -> bool:
        from transformers import GPT2LMHeadModel

        config = model.config
        return (type(model) is GPT2LMHeadModel and config._attn_implementation == "sdpa"
                and not config.add_cross_attention and getattr(model, "hf_device_map", None) is None
                and not model.training)

    def __init__(self, model: PreTrainedModel, layers: list[tuple[torch.Tensor, torch.Tensor]],
                 prompt_mask: torch.Tensor, max_new_tokens: int, copies: torch.Tensor | None = None,
                 buffer: CacheBuffer | None = None):
        """``layers``: each layer's prompt keys and values (b, H, P, D); ``copies``: the row of them each of the B
        rows of ``prompt_mask`` (B, P) continues (default: row i continues row i); ``buffer``: where the cache
        lives (default: a new tensor)."""
        self.model, self.transformer = model, model.transformer
        rows, prompt_width = prompt_mask.shape
        width = prompt_width + max_new_tokens
        _, heads, _, dim = layers[0][0].shape
        shape = (2 * len(layers), rows, heads, width, dim)  # layer l's keys at 2l, its values at 2l + 1
        self.cache = (buffer or CacheBuffer()).take(shape, layers[0][0])
        for l, (layer_keys, layer_values) in enumerate(layers):
            if copies is None:
                self.cache[2 * l, :, :, :prompt_width] = layer_keys
                self.cache[2 * l + 1, :, :, :prompt_width] = layer_values
            else:
                self.cache[2 * l, :, :, :prompt_width] = layer_keys[copies]
                self.cache[2 * l + 1, :, :, :prompt_width] = layer_values[copies]
        self.length = prompt_width
        self.mask = torch.ones((rows, width), dtype=torch.bool, device=prompt_mask.device)
        self.mask[:, :prompt_width] = prompt_mask.bool()
        self.padded = not bool(self.mask[:, :prompt_width].all())

    @property
    def keys(self) -> list[torch.Tensor]:
        """Each layer's keys (b, H, width, D); positions from ``length`` on are not written yet."""
        return list(self.cache[0::2].unbind(0))

    @property
    def values(self) -> list[torch.Tensor]:
        return list(self.cache[1::2].unbind(0))

    @classmethod
    def from_cache(cls, model: PreTrainedModel, cache: DynamicCache, prompt_mask: torch.Tensor,
                   max_new_tokens: int) -> GPT2Decoder:
        """After the model's own prefill into ``cache`` (one cache row per row of ``prompt_mask``)."""
        return cls(model, [(layer.keys, layer.values) for layer in cache.layers], prompt_mask, max_new_tokens)

    @classmethod
    def prefill(cls, model: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                positions: torch.Tensor, copies: torch.Tensor, max_new_tokens: int,
                buffer: CacheBuffer | None = None) -> tuple[GPT2Decoder, torch.Tensor]:
        """The prompt pass without the HF forward: the distinct prompts ``prompt_ids`` (b, P) through
        ``gpt2_forward.last_hidden_state`` (the model's own operations), their keys and values copied once into the
        buffers of the rows that continue them (``copies``: B indices), and the logits (B, V) of each row's first
        response token, as the model's forward with a cache and ``logits_to_keep=1`` gives them
        (``lm_head(hidden[:, -1:])``)."""
        from rewardlab.models.gpt2_forward import last_hidden_state

        layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        hidden = last_hidden_state(model, prompt_ids, positions, prompt_mask, kv=layers)
        head = model.lm_head
        logits = F.linear(hidden[:, -1:], head.weight, head.bias)[:, -1]
        return cls(model, layers, prompt_mask[copies], max_new_tokens, copies=copies, buffer=buffer), logits[copies]

    def select(self, keep: torch.Tensor) -> None:
        """Keep only rows ``keep`` (ascending) of the cache: each kept row's written positions move up to its new
        place, in place (a row only ever moves to a lower index, and rows are moved in ascending order, so no row
        is overwritten before it has moved)."""
        written = self.length
        for new, old in enumerate(keep.tolist()):
            if new != old:
                self.cache[:, new, :, :written].copy_(self.cache[:, old, :, :written])
        self.cache = self.cache[:, : len(keep)]
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
        for l, block in enumerate(transformer.h):
            keys, values = self.cache[2 * l], self.cache[2 * l + 1]
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


class CacheBuffer:
    """Memory for the key/value cache that outlives one decoder, so that the next rollout's decoder reuses it: on
    a CPU a fresh tensor of a few MiB costs a page fault per 4 KiB on first touch, about a tenth of a rollout of
    the tiny GPT. Only caches up to ``MAX_BYTES`` are kept (bigger ones are allocated each time, as their
    matmuls dwarf that cost); one decoder at a time may use a buffer."""

    MAX_BYTES = 64 * 2**20

    def __init__(self) -> None:
        self.flat: torch.Tensor | None = None

    def take(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        numel = math.prod(shape)
        if like.device.type != "cpu" or numel * like.element_size() > self.MAX_BYTES:
            return like.new_empty(shape)
        if self.flat is None or self.flat.numel() < numel or self.flat.dtype != like.dtype:
            self.flat = like.new_empty(numel)
        return self.flat[:numel].view(shape)


def _layer_norm(module: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)
