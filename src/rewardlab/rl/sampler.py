"""The lean sampler: a decode loop with a key/value cache that stops computing rows once they have ended.

HF ``generate`` keeps every row of the batch in every decoding step until the last row ends: with responses of
8 tokens on average and a longest one of 20, most of its work goes to rows that are already finished. This
loop drops rows that have ended from the batch (and from the cache) once a quarter of the batch has ended
(``COMPACT_BELOW``: at a few dozen rows a step's matmuls cost nearly the same for 32 rows as for 28, while each
removal copies the cache), and runs each distinct prompt once (G samples per prompt share its prefill).

It draws from exactly the distribution ``generate`` draws from with neutral settings (rollout.py's
``neutral_generation_config``): softmax(logits / T) at each step with no processor, or the argmax when greedy.
It also draws the **same tokens** from the same random state: ``torch.multinomial`` with one sample draws one
exponential variate per entry of its (rows × vocabulary) input whatever the probabilities are, so the loop
keeps finished rows in the sampling call as point masses (they take no model compute) and consumes the
random stream exactly as ``generate`` does. ``tests/test_sampler.py`` checks token-for-token equality with
``generate`` over many seeds, and the distribution itself by a chi-square test.
"""

from __future__ import annotations

import inspect
import weakref

import torch
from transformers import DynamicCache, PreTrainedModel

from rewardlab.rl.gpt2_decode import CacheBuffer, GPT2Decoder
from rewardlab.tensors import position_ids_from_mask

COMPACT_BELOW = 0.75  # rows that ended leave the batch once fewer than this share of its rows are still going
_CACHE_BUFFERS: weakref.WeakKeyDictionary[PreTrainedModel, CacheBuffer] = weakref.WeakKeyDictionary()  # per policy


def _forward_keywords(model: PreTrainedModel) -> tuple[str, bool]:
    """The name of the forward's cache argument (``cache`` since transformers 5.2x, ``past_key_values``
    before) and whether it takes ``logits_to_keep`` (logits at the last position only)."""
    parameters = inspect.signature(model.forward).parameters
    return ("cache" if "cache" in parameters else "past_key_values"), "logits_to_keep" in parameters


def _unique_rows(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the first row of each distinct prompt, each row's index among them): G samples per prompt prefill once."""
    _, inverse = torch.unique(torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], 1), dim=0,
                              return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(inverse), dtype=torch.long, device=inverse.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(inverse), device=inverse.device), "amin")
    order = first.argsort()  # distinct prompts in order of first appearance
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    return first[order], rank[inverse]


@torch.no_grad()
def decode(policy: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, max_new_tokens: int,
           temperature: float, eos_id: int, pad_id: int, greedy: bool = False, direct_steps: bool = True,
           compact_below: float = COMPACT_BELOW) -> torch.Tensor:
    """Responses (B, S) for left-padded prompts, S the number of decoding steps taken (at most
    ``max_new_tokens``; fewer when every row has ended). A row that ended holds ``pad_id`` after its EOS.

    Each distinct prompt goes through the prompt pass once, its keys and values copied to the rows that share it.
    The prompt pass and each decoding step go through ``GPT2Decoder`` when the model supports it and
    ``direct_steps`` is on (the same numbers without the forward's per-call overhead), through the model's forward
    otherwise. Rows that ended
    leave the batch when fewer than ``compact_below`` of the batch's rows are still going (1.0: at once)."""
    cache_keyword, keeps_logits = _forward_keywords(policy)
    last_only = {"logits_to_keep": 1} if keeps_logits else {}
    rows = prompt_ids.shape[0]
    device = prompt_ids.device
    was_training = policy.training
    policy.eval()
    positions = position_ids_from_mask(prompt_mask)
    distinct, copies = _unique_rows(prompt_ids, prompt_mask)
    direct, cache = None, None
    if direct_steps and GPT2Decoder.supports(policy):
        buffer = _CACHE_BUFFERS.setdefault(policy, CacheBuffer())  # one rollout of this policy at a time uses it
        direct, logits = GPT2Decoder.prefill(policy, prompt_ids[distinct], prompt_mask[distinct], positions[distinct],
                                             copies, max_new_tokens, buffer)
    else:
        cache = DynamicCache(config=policy.config)
        out = policy(input_ids=prompt_ids[distinct], attention_mask=prompt_mask[distinct],
                     position_ids=positions[distinct], use_cache=True, **{cache_keyword: cache}, **last_only)
        logits = out.logits[:, -1][copies]
        cache.batch_select_indices(copies)
    responses = torch.full((rows, max(max_new_tokens, 1)), pad_id, dtype=torch.long, device=device)
    slots = torch.arange(rows, device=device)  # the row each slot of the decoding batch holds
    going = torch.ones(rows, dtype=torch.bool, device=device)  # per slot: its row has not ended
    attention, next_position = prompt_mask, positions[:, -1] + 1
    steps = 0
    for step in range(max_new_tokens):
        everyone = len(slots) == rows and bool(going.all())  # no row has ended: no selection needed
        live = slots if everyone else going.nonzero().squeeze(1)  # slots still going; their rows in batch order
        active, step_logits = (slots, logits.float()) if everyone else (slots[live], logits[live].float())
        if greedy:
            tokens = step_logits.argmax(-1)
        else:
            probs = torch.softmax(step_logits / temperature, dim=-1)
            if len(active) < rows:  # ended rows sample from a point mass: the random stream generate consumes
                everything = torch.zeros((rows, probs.shape[-1]), dtype=probs.dtype, device=device)
                everything[:, pad_id] = 1.0
                everything[active] = probs
                probs = everything
            tokens = torch.multinomial(probs, num_samples=1).squeeze(1)
            if len(active) < rows:
                tokens = tokens[active]
        responses[active, step] = tokens
        steps = step + 1
        ended = tokens == eos_id
        going[live[ended]] = False
        if steps == max_new_tokens or not bool(going.any()):
            break
        if len(live) == len(slots):
            feed = tokens
        else:
            feed = torch.full_like(slots, pad_id)  # ended slots take a pad token; their outputs go unread
            feed[live] = tokens
        if int(going.sum()) < compact_below * len(slots):
            keep = going.nonzero().squeeze(1)
            if direct is not None:
                direct.select(keep)
            else:
                cache.batch_select_indices(keep)
            slots, going, feed, attention, next_position = (t[keep] for t in (slots, going, feed, attention,
                                                                               next_position))
        if direct is not None:
            logits = direct.step(feed, next_position)
        else:
            attention = torch.cat([attention, attention.new_ones((len(slots), 1))], dim=1)
            logits = policy(input_ids=feed[:, None], attention_mask=attention, position_ids=next_position[:, None],
                            use_cache=True, **{cache_keyword: cache}).logits[:, -1]
        next_position = next_position + 1
    policy.train(was_training)
    return responses[:, :steps]
