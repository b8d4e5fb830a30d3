"""The lean sampler (rewardlab.rl.sampler) against HF ``generate``, the reference implementation: the same
tokens from the same random state (sampling at two temperatures, greedy), the exact distribution by a
chi-square test against probabilities computed by teacher forcing, and the work it saves (finished rows leave
the batch)."""

import pytest
import torch
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel

from rewardlab import config as C
from rewardlab.rl.gpt2_decode import GPT2Decoder
from rewardlab.rl.rollout import sample
from rewardlab.rl.sampler import decode
from rewardlab.tensors import pad_left, position_ids_from_mask
from tests.distribution import two_token_pvalues

EOS, PAD = 11, 0
CPU = torch.device("cpu")
PROMPTS = [[3, 4, 5], [6], [7, 8], [9, 10, 1, 2, 3, 4]]


@pytest.fixture(scope="module")
def lm() -> GPT2LMHeadModel:
    """A random 2-layer GPT-2 over 12 tokens (EOS = 11): rows end at many different lengths."""
    torch.manual_seed(1)
    config = GPT2Config(vocab_size=12, n_layer=2, n_head=2, n_embd=32, n_positions=64, eos_token_id=EOS,
                        bos_token_id=EOS, pad_token_id=PAD, initializer_range=0.2)
    return GPT2LMHeadModel(config).eval()


def draw(model, prompts, backend: str, seed: int, **options):
    torch.manual_seed(seed)
    return sample(model, prompts, max_new_tokens=options.pop("max_new_tokens", 16), eos_id=EOS, pad_id=PAD,
                  device=CPU, backend=backend, **{"temperature": 1.0, **options})


@pytest.mark.parametrize("options", [{}, {"temperature": 0.7}, {"greedy": True}], ids=["t1", "t0.7", "greedy"])
def test_lean_sampler_draws_the_same_tokens_as_generate_from_the_same_seed(lm, options):
    rows = [p for p in PROMPTS for _ in range(6)]
    ended_early = 0
    for seed in range(15):
        lean, reference = draw(lm, rows, "lean", seed, **options), draw(lm, rows, "hf", seed, **options)
        assert torch.equal(lean.input_ids, reference.input_ids), seed
        assert torch.equal(lean.attention_mask, reference.attention_mask)
        assert torch.equal(lean.response_mask, reference.response_mask)
        assert torch.equal(lean.has_eos, reference.has_eos)
        assert lean.prompt_width == reference.prompt_width
        lengths = lean.lengths
        ended_early += int((lengths < lengths.max()).sum())
    if not options.get("greedy"):  # the comparison covered rows that left the batch before others
        assert ended_early > 100
    # the random stream is left where generate leaves it: the next draw is the same too
    torch.manual_seed(99)
    draw(lm, rows, "lean", 99, **options)
    after_lean = torch.rand(3)
    torch.manual_seed(99)
    draw(lm, rows, "hf", 99, **options)
    assert torch.equal(after_lean, torch.rand(3))


@torch.no_grad()
def test_direct_gpt2_steps_give_the_models_logits_and_tokens(lm):
    """GPT2Decoder (the sampler's decode steps without the HF forward) against the model's forward: the same
    logits bit for bit, through row removals, and the same tokens as decoding through the forward."""
    assert GPT2Decoder.supports(lm)
    ids, mask = pad_left(PROMPTS, PAD)
    cache = DynamicCache(config=lm.config)
    positions = position_ids_from_mask(mask)
    lm(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
    decoder = GPT2Decoder.from_cache(lm, cache, mask, max_new_tokens=4)
    tokens, attention, position = torch.tensor([1, 2, 3, 4]), mask, positions[:, -1] + 1
    for step, keep in enumerate([None, torch.tensor([0, 2, 3]), torch.tensor([1, 2])]):
        if keep is not None:
            decoder.select(keep)
            cache.batch_select_indices(keep)
            tokens, attention, position = tokens[keep], attention[keep], position[keep]
        attention = torch.cat([attention, attention.new_ones((len(tokens), 1))], 1)
        expected = lm(input_ids=tokens[:, None], attention_mask=attention, position_ids=position[:, None],
                      cache=cache, use_cache=True).logits[:, -1]
        assert torch.equal(decoder.step(tokens, position), expected), step
        tokens, position = (tokens + 1) % 11, position + 1
    rows = [p for p in PROMPTS for _ in range(6)]
    ids, mask = pad_left(rows, PAD)
    for seed in range(5):
        drawn = []
        for direct in (True, False):
            torch.manual_seed(seed)
            drawn.append(decode(lm, ids, mask, max_new_tokens=16, temperature=1.0, eos_id=EOS, pad_id=PAD,
                                direct_steps=direct))
        assert torch.equal(*drawn), seed


@torch.no_grad()
def test_direct_prompt_pass_gives_the_models_logits_keys_and_values(lm):
    """GPT2Decoder.prefill (distinct prompts once, copied to the rows that share them) against the model's forward
    with a cache and logits_to_keep=1, then its cache copied the same way: the same numbers bit for bit."""
    ids, mask = pad_left(PROMPTS, PAD)
    positions = position_ids_from_mask(mask)
    copies = torch.tensor([0, 0, 1, 3, 3, 3, 2])
    cache = DynamicCache(config=lm.config)
    out = lm(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
             logits_to_keep=1)
    cache.batch_select_indices(copies)
    decoder, logits = GPT2Decoder.prefill(lm, ids, mask, positions, copies, max_new_tokens=3)
    assert torch.equal(logits, out.logits[:, -1][copies])
    width = ids.shape[1]
    for layer, keys, values in zip(cache.layers, decoder.keys, decoder.values, strict=True):
        assert torch.equal(keys[:, :, :width], layer.keys) and torch.equal(values[:, :, :width], layer.values)
    assert torch.equal(decoder.mask[:, :width], mask[copies].bool()) and decoder.padded
    reference = GPT2Decoder.from_cache(lm, cache, mask[copies], max_new_tokens=3)
    tokens, position = torch.arange(1, 8), positions[copies, -1] + 1
    assert torch.equal(decoder.step(tokens, position), reference.step(tokens, position))


def test_direct_gpt2_steps_apply_only_where_they_equal_the_forward():
    config = GPT2Config(vocab_size=12, n_layer=1, n_head=2, n_embd=8, eos_token_id=EOS, pad_token_id=PAD)
    assert GPT2Decoder.supports(GPT2LMHeadModel(config).eval())
    assert not GPT2Decoder.supports(GPT2LMHeadModel(config).train())
    crossed = GPT2Config(**{**config.to_dict(), "add_cross_attention": True})
    assert not GPT2Decoder.supports(GPT2LMHeadModel(crossed).eval())
    eager = GPT2Config(**config.to_dict())
    eager._attn_implementation = "eager"
    assert not GPT2Decoder.supports(GPT2LMHeadModel(eager).eval())


@torch.no_grad()
def test_lean_sampler_samples_softmax_over_temperature(lm):
    """Two-token responses from one prompt, 6,000 draws, against p(y1) p(y2 | y1) from full forward passes."""
    prompt, temperature, draws = [3, 4, 5], 0.8, 6000
    torch.manual_seed(7)
    rollout = sample(lm, [prompt] * draws, max_new_tokens=2, temperature=temperature, eos_id=EOS, pad_id=PAD,
                     device=CPU, backend="lean")
    fit, other_temperature = two_token_pvalues(lm, prompt, rollout, temperature, EOS)
    assert fit > 1e-3
    assert other_temperature < 1e-6  # and the test has power: the distribution at T 1.5 is rejected


@pytest.mark.parametrize("compact_below", [1.0, 0.75])
def test_lean_sampler_stops_computing_rows_that_ended(lm, compact_below):
    """The prompt pass runs each distinct prompt once; decoding passes see fewer rows as rows end (at once, or once
    fewer than ``compact_below`` of the batch's rows are going); generate keeps them all to the last step."""
    rows = [p for p in PROMPTS for _ in range(8)]
    ids, mask = pad_left(rows, PAD)
    seen: dict[str, list[int]] = {"lean": [], "hf": []}
    projection = lm.transformer.h[0].attn.c_attn
    original = projection.forward
    for backend in seen:
        def counted(x, backend=backend):  # each pass, the model's or GPT2Decoder's, calls the layer's forward
            seen[backend].append(x.shape[0])
            return original(x)

        projection.forward = counted
        torch.manual_seed(3)
        try:
            if backend == "lean":
                responses = decode(lm, ids, mask, max_new_tokens=16, temperature=1.0, eos_id=EOS, pad_id=PAD,
                                   compact_below=compact_below)
            else:
                rollout = draw(lm, rows, backend, 3)
        finally:
            del projection.forward
    assert torch.equal(responses, rollout.response_ids[:, : responses.shape[1]])
    steps = rollout.response_ids.shape[1]
    assert seen["hf"] == [len(rows)] * steps
    prefill, decoding = seen["lean"][0], seen["lean"][1:]
    assert prefill == len(PROMPTS) and len(decoding) == steps - 1
    assert decoding == sorted(decoding, reverse=True) and decoding[-1] < len(rows)
    # each step's batch holds the rows still going (those not ended before it), and few others
    going = [int((rollout.lengths > t).sum()) for t in range(1, steps)]
    if compact_below == 1.0:
        assert decoding == going
    else:
        assert all(g <= n and g >= compact_below * n for g, n in zip(going, decoding))
        assert decoding != going  # some ended rows stayed a step or more: fewer cache copies
    assert sum(seen["lean"]) < 0.8 * sum(seen["hf"])


def test_rollout_backend_is_a_checked_config_key():
    assert C.validate({})["rollout_backend"] == "lean"
    assert C.validate({"rollout_backend": "hf"})["rollout_backend"] == "hf"
    with pytest.raises(C.ConfigError, match="rollout_backend"):
        C.validate({"rollout_backend": "vllm-typo"})
    with pytest.raises(ValueError, match="unknown rollout backend"):
        sample(None, [[1]], max_new_tokens=1, temperature=1.0, eos_id=EOS, pad_id=PAD, device=CPU, backend="x")
