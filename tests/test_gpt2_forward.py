"""The direct GPT-2 pass (rewardlab.models.gpt2_forward) against the model's own forward: the same logits, head
outputs and gradients bit for bit (packed, shared-prompt and dropout-in-training passes), the cases where it
steps aside (hooks, Accelerate's patched forward, gradient checkpointing, another architecture), the layout
cache of rewardlab.models.packing, and runtime.clipped_step against Accelerate's clip and step."""

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

from rewardlab.models import gpt2_forward, packing
from rewardlab.models.build import head_outputs
from rewardlab.runtime import clipped_step

PAD = 0


def config(dropout: float = 0.0) -> GPT2Config:
    return GPT2Config(vocab_size=30, n_layer=2, n_head=2, n_embd=32, n_positions=64, pad_token_id=PAD,
                      bos_token_id=1, eos_token_id=2, activation_function="gelu_pytorch_tanh", resid_pdrop=dropout,
                      embd_pdrop=dropout, attn_pdrop=dropout, attn_implementation="sdpa")


def rollout_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Six rows: left-padded prompts in columns 0-3 (rows 0, 3, 4 share one), right-padded responses."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 30, (6, 12), generator=generator)
    ids[3:5, :4] = ids[0, :4]
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    mask[2, 7:] = 0
    mask[5, 9:] = 0
    return ids.masked_fill(mask == 0, PAD), mask


def hf_pass(model, *args, **kwargs):
    """``packing.forward`` through the model's own forward (the direct pass switched off)."""
    supports = gpt2_forward.supports
    gpt2_forward.supports = lambda model: False
    try:
        return packing.forward(model, *args, **kwargs)
    finally:
        gpt2_forward.supports = supports


def gradients(model: torch.nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("prompt_width", [None, 4])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_direct_lm_pass_equals_the_models_forward_bit_for_bit(prompt_width, dropout):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config(dropout)).train()
    ids, mask = rollout_batch()
    torch.manual_seed(7)  # the same dropout draws in both passes
    out, layout = packing.forward(model, ids, mask, capacity=16, prompt_width=prompt_width)
    assert isinstance(out, gpt2_forward.GPT2Output)
    assert (layout.attention_mask is not None) == (prompt_width is not None)  # shared prompts, or plain packing
    torch.manual_seed(7)
    reference, reference_layout = hf_pass(model, ids, mask, capacity=16, prompt_width=prompt_width)
    assert reference_layout is layout  # the layout cache: one layout for the passes over one batch
    assert torch.equal(out.logits, reference.logits)
    assert all(torch.equal(a, b) for a, b in zip(gradients(model, out.logits.square().sum()),
                                                 gradients(model, reference.logits.square().sum())))


def test_direct_reward_pass_gives_head_outputs_and_gradients_of_the_models_forward():
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(config()).train()
    ids, mask = rollout_batch()
    assert gpt2_forward.supports(model)
    hidden, outputs = head_outputs(model, ids, mask, prompt_width=4)
    supports = gpt2_forward.supports
    gpt2_forward.supports = lambda model: False
    try:
        hf_hidden, hf_outputs = head_outputs(model, ids, mask, prompt_width=4)
    finally:
        gpt2_forward.supports = supports
    assert torch.equal(hidden, hf_hidden) and torch.equal(outputs, hf_outputs)
    assert all(torch.equal(a, b) for a, b in zip(gradients(model, outputs.sum()), gradients(model, hf_outputs.sum())))


def test_direct_pass_steps_aside_where_it_would_skip_something():
    model = GPT2LMHeadModel(config())
    assert gpt2_forward.supports(model)
    handle = model.transformer.h[0].mlp.register_forward_hook(lambda module, args, output: None)
    assert not gpt2_forward.supports(model)  # a user's hook runs only in the model's own forward
    handle.remove()
    assert gpt2_forward.supports(model)
    model.forward = model.forward  # what Accelerate's autocast does: an instance-level forward
    assert not gpt2_forward.supports(model)
    checkpointed = GPT2LMHeadModel(config())
    checkpointed.activation_checkpointing_enable()
    assert not gpt2_forward.supports(checkpointed.train())  # the blocks' checkpointing lives in their __call__
    eager = GPT2LMHeadModel(GPT2Config(**{**config().to_dict(), "attn_implementation": "eager"}))
    assert not gpt2_forward.supports(eager)
    assert not gpt2_forward.supports(torch.nn.Linear(2, 2))


def test_layout_cache_follows_the_tensors_not_their_values():
    ids, mask = rollout_batch()
    model = GPT2LMHeadModel(config())
    _, first = packing.forward(model, ids, mask, capacity=16)
    _, again = packing.forward(model, ids, mask, capacity=16)
    assert again is first
    _, copied = packing.forward(model, ids.clone(), mask.clone(), capacity=16)
    assert copied is not first and torch.equal(copied.input_ids, first.input_ids)
    ids[0, 5] = 9  # changed in place: the layout is built again from the new tokens
    _, edited = packing.forward(model, ids, mask, capacity=16)
    assert edited is not first and 9 in edited.input_ids


def test_clipped_step_matches_accelerates_clip_and_step():
    from accelerate import Accelerator

    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    models = [GPT2LMHeadModel(config()) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    prepared = []
    for model in models:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
        prepared.append(accelerator.prepare(model, optimizer))
    ids, mask = rollout_batch()
    for _ in range(3):
        norms = []
        for index, (model, optimizer) in enumerate(prepared):
            loss = model(input_ids=ids, attention_mask=mask).logits.square().mean() * 100
            accelerator.backward(loss)
            if index == 0:
                norms.append(float(accelerator.clip_grad_norm_(model.parameters(), 0.5)))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            else:
                norms.append(clipped_step(accelerator, optimizer, list(model.parameters()), 0.5))
        assert norms[0] == norms[1] and norms[0] > 0.5  # clipped, with the same norm
        assert all(p.grad is None for p in prepared[1][0].parameters())
    for a, b in zip(prepared[0][0].parameters(), prepared[1][0].parameters()):
        assert torch.equal(a, b)


def test_a_copied_model_checks_its_own_modules():
    model = GPT2LMHeadModel(config()).eval()
    ids, mask = rollout_batch()
    out, _ = packing.forward(model, ids, mask, capacity=16, prompt_width=4)  # lists the model's modules once
    twin = copy.deepcopy(model)
    handle = twin.transformer.h[1].attn.register_forward_pre_hook(lambda module, args: None)
    assert gpt2_forward.supports(model) and not gpt2_forward.supports(twin)
    handle.remove()
    out_twin, _ = packing.forward(twin, ids, mask, capacity=16, prompt_width=4)
    assert torch.equal(out.logits, out_twin.logits)
