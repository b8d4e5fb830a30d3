"""The lean sampler: a decode loop with a key/value cache that stops computing rows once they have ended.

HF ``generate`` keeps every row of the batch in every decoding step until the last row ends: with responses of
8 tokens on average and a longest one of 20, most of its work goes to rows that are already finished. This
loop drops a row from the batch (and from the cache) as soon as it samples EOS.

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

import torch
from transformers import DynamicCache, PreTrainedModel

from rewardlab.rl.gpt2_decode import GPT2Decoder
from rewardlab.tensors import position_ids_from_mask


def _forward_keywords(model: PreTrainedModel) -> tuple[str, bool]:
    """The name of the forward's cache argument (``cache`` since transformers 5.2x, ``past_key_values``
    before) and whether it takes ``logits_to_keep`` (logits at the last position only)."""
    parameters = inspect.signature(model.forward).parameters
    return ("cache" if "cache" in parameters else "past_key_values"), "logits_to_keep" in parameters


@torch.no_grad()
def decode(policy: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, max_new_tokens: int,
           temperature: float, eos_id: int, pad_id: int, greedy: bool = False,
           direct_steps: bool = True) -> torch.Tensor:
    """Responses (B, S) for left-padded prompts, S the number of decoding steps taken (at most
    ``max_new_tokens``; fewer when every row has ended). A row that ended holds ``pad_id`` after its EOS.

    The prompt goes through the model's forward; each decoding step after it through ``GPT2Decoder`` when the
    model supports it and ``direct_steps`` is on (the same numbers without the forward's per-call overhead),
    through the model's forward otherwise."""
    cache_keyword, keeps_logits = _forward_keywords(policy)
    last_only = {"logits_to_keep": 1} if keeps_logits else {}
    rows = prompt_ids.shape[0]
    device = prompt_ids.device
    was_training = policy.training
    policy.eval()
    cache = DynamicCache(config=policy.config)
    positions = position_ids_from_mask(prompt_mask)
    out = policy(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True,
                 **{cache_keyword: cache}, **last_only)
    direct = GPT2Decoder(policy, cache, prompt_mask, max_new_tokens) if direct_steps and GPT2Decoder.supports(
        policy) else None
    logits = out.logits[:, -1]
    responses = torch.full((rows, max(max_new_tokens, 1)), pad_id, dtype=torch.long, device=device)
    active = torch.arange(rows, device=device)  # the rows still being decoded, in batch order
    attention, next_position = prompt_mask, positions[:, -1] + 1
    steps = 0
    for step in range(max_new_tokens):
        if greedy:
            tokens = logits.float().argmax(-1)
        else:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
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
        going = tokens != eos_id
        if steps == max_new_tokens or not bool(going.any()):
            break
        if not bool(going.all()):
            keep = going.nonzero().squeeze(1)
            if direct is not None:
                direct.select(keep)
            else:
                cache.batch_select_indices(keep)
            active, tokens, attention, next_position = active[keep], tokens[keep], attention[keep], next_position[keep]
        if direct is not None:
            logits = direct.step(tokens, next_position)
        else:
            attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=1)
            logits = policy(input_ids=tokens[:, None], attention_mask=attention, position_ids=next_position[:, None],
                            use_cache=True, **{cache_keyword: cache}).logits[:, -1]
        next_position = next_position + 1
    policy.train(was_training)
    return responses[:, :steps]
