"""Padding-free passes (rewardlab.models.packing): the layout, the values and gradients against the padded pass on a
tiny GPT-2 (causal LM and reward head), shared prompts (each prompt run once for its rows) likewise, and the
fall-backs for a model that lets packed sequences see each other."""

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from rewardlab.models.build import head_outputs
from rewardlab.models.packing import forward, pack, packs_sequences, share_prompts, shares_prompts
from rewardlab.rl.rollout import Rollout, logprobs_and_entropy
from rewardlab.tensors import position_ids_from_mask

PAD = 0


def config() -> GPT2Config:
    return GPT2Config(vocab_size=20, n_layer=2, n_head=2, n_embd=32, n_positions=64, pad_token_id=PAD, bos_token_id=1,
                      eos_token_id=2, activation_function="gelu_pytorch_tanh", resid_pdrop=0.0, embd_pdrop=0.0,
                      attn_pdrop=0.0)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Six rows, left-padded prompts (columns 0-3) then right-padded responses, lengths 3 to 11."""
    generator = torch.Generator().manual_seed(0)
    spans = [(0, 11), (2, 9), (3, 7), (1, 5), (3, 10), (3, 6)]  # [first, last) real column of each row
    ids = torch.randint(1, 20, (len(spans), 11), generator=generator)
    mask = torch.zeros_like(ids)
    for row, (start, end) in enumerate(spans):
        mask[row, start:end] = 1
    return ids.masked_fill(mask == 0, PAD), mask


def test_pack_places_every_real_token_once_and_unpacks_to_the_padded_layout():
    ids, mask = batch()
    packing = pack(ids, mask, capacity=16)
    assert packing.input_ids.shape[1] == 16
    real = packing.flat_index[mask.bool()]
    assert len(set(real.tolist())) == int(mask.sum())  # each real token has its own packed slot
    assert (packing.flat_index[~mask.bool()] == -1).all()
    assert torch.equal(packing.unpack(packing.input_ids), ids)  # token ids come back where they were
    positions = packing.unpack(packing.position_ids)
    assert torch.equal(positions * mask, position_ids_from_mask(mask) * mask)  # each row counts from 0
    # a row longer than the capacity gets a bin of its own length
    assert pack(ids, mask, capacity=4).input_ids.shape[1] == 11


def test_packed_pass_equals_the_padded_pass_values_and_gradients():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config())
    assert packs_sequences(model)
    ids, mask = batch()
    padded = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    out, packing = forward(model, ids, mask, capacity=16)
    assert packing is not None and packing.input_ids.numel() < ids.numel()
    unpacked = packing.unpack(out.logits)
    real = mask.bool()
    torch.testing.assert_close(unpacked[real], padded[real], atol=1e-5, rtol=1e-4)
    assert (unpacked[~real] == 0).all()
    # gradients of a loss over the real tokens
    (padded[real].logsumexp(-1).sum()).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    (packing.unpack(forward(model, ids, mask, capacity=16)[0].logits)[real].logsumexp(-1).sum()).backward()
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-4)


def test_rollout_log_probs_and_reward_head_match_the_padded_pass():
    torch.manual_seed(1)
    ids, mask = batch()
    width = 4  # prompt columns
    rollout = Rollout(ids, mask, width, mask[:, width:], torch.zeros(len(ids), dtype=torch.bool))
    policy = GPT2LMHeadModel(config())
    logp, entropy = logprobs_and_entropy(policy, rollout, temperature=0.7)
    logits = policy(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    reference = torch.log_softmax(logits[:, width - 1 : -1].float() / 0.7, -1)
    expected = reference.gather(-1, ids[:, width:, None]).squeeze(-1)
    response = rollout.response_mask.bool()
    torch.testing.assert_close(logp[response], expected[response], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(entropy[response], -(reference.exp() * reference).sum(-1)[response], atol=1e-5,
                               rtol=1e-4)
    reward = GPT2ForSequenceClassification(config().__class__(**{**config().to_dict(), "num_labels": 1}))
    hidden, outputs = head_outputs(reward, ids, mask)
    captured = {}
    handle = reward.score.register_forward_hook(lambda m, a, o: captured.update(out=o))
    reward(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    handle.remove()
    torch.testing.assert_close(outputs[mask.bool()], captured["out"][mask.bool()], atol=1e-5, rtol=1e-4)
    assert hidden.shape == (*ids.shape, 32)


class SeesEverything(torch.nn.Module):
    """A causal LM whose every position sees the whole row (position ids ignored): packing would mix rows."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(20, 20)

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, output_hidden_states=False):
        hidden = self.embed(input_ids).cumsum(1)
        return CausalLMOutputWithPast(logits=hidden, hidden_states=(hidden,))


def test_a_model_that_mixes_packed_rows_takes_the_padded_pass():
    model = SeesEverything()
    assert not packs_sequences(model)
    ids, mask = batch()
    out, packing = forward(model, ids, mask)
    assert packing is None and out.logits.shape == (*ids.shape, 20)


def grouped_batch() -> tuple[torch.Tensor, torch.Tensor, int]:
    """A policy-gradient batch: three prompts (4, 2 and 3 tokens, left-padded to 4 columns), each with four
    responses of 0 to 9 tokens (right-padded)."""
    generator = torch.Generator().manual_seed(3)
    width, rows = 4, []
    for length in (4, 2, 3):
        prompt = torch.randint(1, 20, (length,), generator=generator)
        rows += [(prompt, torch.randint(1, 20, (int(n),), generator=generator))
                 for n in torch.randint(0, 10, (4,), generator=generator)]
    ids = torch.full((len(rows), width + 9), PAD)
    mask = torch.zeros_like(ids)
    for r, (prompt, response) in enumerate(rows):
        ids[r, width - len(prompt) : width], mask[r, width - len(prompt) : width] = prompt, 1
        ids[r, width : width + len(response)], mask[r, width : width + len(response)] = response, 1
    return ids, mask, width


def test_share_prompts_runs_each_prompt_once_per_bin_and_unpacks_to_the_padded_layout():
    ids, mask, width = grouped_batch()
    packing = share_prompts(ids, mask, width, capacity=64)
    assert packing.input_ids.shape[0] == 1  # all of it fits one bin: 9 prompt tokens once, not four times
    prompt_tokens, response_tokens = int(mask[:, :width].sum()), int(mask[:, width:].sum())
    slots = packing.flat_index[mask.bool()]
    assert len(set(slots.tolist())) == response_tokens + prompt_tokens // 4
    assert torch.equal(packing.unpack(packing.input_ids), ids)
    assert torch.equal(packing.unpack(packing.position_ids) * mask, position_ids_from_mask(mask) * mask)
    # narrow bins: a prompt is copied into each bin that holds one of its responses
    narrow = share_prompts(ids, mask, width, capacity=8)
    assert narrow.input_ids.shape[0] > 1 and torch.equal(narrow.unpack(narrow.input_ids), ids)
    # no shared prompt: nothing to share
    assert share_prompts(ids[::4], mask[::4], width, capacity=64) is None


@pytest.mark.parametrize("capacity", [8, 64])
def test_shared_prompt_pass_equals_the_padded_pass_values_and_gradients(capacity):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config())
    assert shares_prompts(model)
    ids, mask, width = grouped_batch()
    real = mask.bool()
    padded = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    out, packing = forward(model, ids, mask, capacity=capacity, prompt_width=width)
    assert packing is not None and packing.attention_mask is not None
    unpacked = packing.unpack(out.logits)
    torch.testing.assert_close(unpacked[real], padded[real], atol=1e-5, rtol=1e-4)
    assert (unpacked[~real] == 0).all()
    (padded[real].logsumexp(-1).sum()).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out, packing = forward(model, ids, mask, capacity=capacity, prompt_width=width)
    (packing.unpack(out.logits)[real].logsumexp(-1).sum()).backward()
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-4)


def test_reward_head_on_shared_prompts_matches_the_padded_pass():
    torch.manual_seed(2)
    ids, mask, width = grouped_batch()
    reward = GPT2ForSequenceClassification(config().__class__(**{**config().to_dict(), "num_labels": 1}))
    _, shared = head_outputs(reward, ids, mask, prompt_width=width)
    _, plain = head_outputs(reward, ids, mask)
    torch.testing.assert_close(shared[mask.bool()], plain[mask.bool()], atol=1e-5, rtol=1e-4)


def test_a_model_that_ignores_the_block_mask_does_not_share_prompts():
    model = SeesEverything()
    assert not shares_prompts(model)
    ids, mask, width = grouped_batch()
    out, packing = forward(model, ids, mask, prompt_width=width)
    assert packing is None and out.logits.shape == (*ids.shape, 20)
