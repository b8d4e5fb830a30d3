"""Decoding strategies at evaluation (rewardlab.evaluate.decoding) on tiny models, against independent checks:
greedy is the argmax, top-k and top-p never leave their support, beam search finds the best beam of a
hand-built bigram model, reranking keeps the reward model's best, and the decoders' log-probabilities."""

import math

import pytest
import torch
from transformers import GenerationMixin, GPT2Config, GPT2LMHeadModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from rewardlab import config as C
from rewardlab.evaluate import metrics as M
from rewardlab.evaluate.decoding import Decoding, best_of, decode, decoder_logprobs, parse_decodings
from rewardlab.rl.rollout import generate, rows_to_lists

EOS, PAD = 11, 0
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_lm() -> GPT2LMHeadModel:
    """A random GPT-2 with peaked next-token distributions (large initial weights), 12 tokens, EOS = 11."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=12, n_layer=1, n_head=2, n_embd=16, n_positions=32, eos_token_id=EOS,
                        bos_token_id=EOS, initializer_range=0.4)
    return GPT2LMHeadModel(config).eval()


PROMPTS = [[3, 4, 5], [6], [7, 8], [9, 10, 1, 2]]


def run(model, prompts, decoding, **extra):
    return decode(model, prompts, decoding, max_new_tokens=6, eos_id=EOS, pad_id=PAD, device=CPU, **extra)


@torch.no_grad()
def next_token_logits(model, prefix: list[int]) -> torch.Tensor:
    """The model's logits for the token after ``prefix``, computed alone (no padding, no cache)."""
    return model(input_ids=torch.tensor([prefix])).logits[0, -1]


def each_step(prompts, rollout):
    """(prefix, token) for every response token of every row, the prefix without padding."""
    for prompt, response in zip(prompts, rows_to_lists(rollout)):
        for t, token in enumerate(response):
            yield prompt + response[:t], token


def test_greedy_takes_the_argmax_at_every_step(tiny_lm):
    rollout = run(tiny_lm, PROMPTS, Decoding("greedy"))
    steps = list(each_step(PROMPTS, rollout))
    assert len(steps) >= len(PROMPTS)
    for prefix, token in steps:
        assert token == int(next_token_logits(tiny_lm, prefix).argmax())


def test_top_k_never_samples_outside_the_k_best(tiny_lm):
    torch.manual_seed(1)
    rows = [p for p in PROMPTS for _ in range(16)]
    rollout = run(tiny_lm, rows, Decoding("top_k", k=3))
    tokens_seen = set()
    for prefix, token in each_step(rows, rollout):
        best = set(torch.topk(next_token_logits(tiny_lm, prefix), 3).indices.tolist())
        assert token in best
        tokens_seen.add(token)
    assert len(tokens_seen) > 3  # it samples: different prefixes, different top-3 sets


def test_top_p_never_samples_outside_the_nucleus(tiny_lm):
    torch.manual_seed(2)
    rows = [p for p in PROMPTS for _ in range(16)]
    rollout = run(tiny_lm, rows, Decoding("top_p", p=0.5))
    for prefix, token in each_step(rows, rollout):
        probs = torch.softmax(next_token_logits(tiny_lm, prefix), -1)
        # The nucleus, by hand: a token is in it when the tokens more likely than it hold less than p.
        assert probs[probs > probs[token]].sum() < 0.5


def test_decoder_logprobs_are_the_truncated_renormalised_distribution():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]))
    ids = torch.tensor([[1]])
    assert decoder_logprobs(logits, ids, Decoding("sample")).item() == pytest.approx(math.log(0.3))
    assert decoder_logprobs(logits, ids, Decoding("top_k", k=2)).item() == pytest.approx(math.log(0.3 / 0.8))
    # top-p 0.7: {0.5, 0.3} is the smallest set whose mass reaches 0.7
    assert decoder_logprobs(logits, ids, Decoding("top_p", p=0.7)).item() == pytest.approx(math.log(0.3 / 0.8))
    assert decoder_logprobs(logits, ids, Decoding("top_p", p=0.4)).item() == -math.inf  # only 0.5 is kept
    assert decoder_logprobs(logits, ids, Decoding("top_p", p=0.9)).item() == pytest.approx(math.log(0.3 / 0.95))


class BigramConfig(PretrainedConfig):
    model_type = "rewardlab_test_bigram"

    def __init__(self, vocab_size: int = 5, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.num_hidden_layers = vocab_size, 0


class BigramLM(PreTrainedModel, GenerationMixin):
    """Next-token log-probabilities from a table indexed by the last token: a hand-built language model."""

    config_class = BigramConfig

    def __init__(self, config, table: torch.Tensor):
        super().__init__(config)
        self.table = torch.nn.Parameter(table)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None,
                **kwargs):
        return CausalLMOutputWithPast(logits=self.table[input_ids])


def test_beam_search_returns_the_highest_scoring_beam_where_greedy_does_not():
    """Tokens: 0 pad, 1 prompt, 2 A, 3 B, 4 EOS. After the prompt A has 0.6, B 0.4; after A the mass splits
    evenly over A, B, EOS; after B, EOS is certain. Greedy walks into A A A (0.6·0.34·0.34 = 0.069); the best
    sequence is B EOS (0.4), which a beam of width 2 keeps."""
    log = math.log
    table = torch.full((5, 5), -30.0)
    table[1, 2], table[1, 3] = log(0.6), log(0.4)
    table[2, 2], table[2, 3], table[2, 4] = log(0.34), log(0.33), log(0.33)
    table[3, 4] = table[4, 4] = 0.0
    model = BigramLM(BigramConfig(vocab_size=5, eos_token_id=4, pad_token_id=0), table).eval()

    def decoded(decoding):
        rollout = decode(model, [[1]], decoding, max_new_tokens=3, eos_id=4, pad_id=0, device=CPU)
        return rows_to_lists(rollout)[0]

    beam = decoded(Decoding("beam", width=2, length_penalty=0.0))
    assert decoded(Decoding("greedy")) == [2, 2, 2]
    assert beam == [3, 4]

    def score(sequence):  # Σ log π: the beam score with length_penalty 0
        previous, total = 1, 0.0
        for token in sequence:
            total, previous = total + table[previous, token].item(), token
        return total

    # Every sequence the decoder could return: up to 3 tokens, EOS only at the end.
    candidates = [[a, b, c] for a in (2, 3) for b in (2, 3) for c in (2, 3, 4)]
    candidates += [[a, b, 4] for a in (2, 3) for b in (2, 3)] + [[a, 4] for a in (2, 3)] + [[4]]
    assert score(beam) == pytest.approx(max(score(c) for c in candidates))


def test_best_of_picks_each_blocks_highest_score():
    scores = torch.tensor([0.1, 0.9, 0.3, 2.0, -1.0, 0.5])
    assert best_of(scores, 3).tolist() == [1, 3]
    assert best_of(scores, 2).tolist() == [1, 3, 5]


def test_rerank_keeps_the_reward_models_best_of_n_samples(tiny_lm):
    def reward(rollout):  # a stand-in reward model: how often token 5 occurs, minus a tenth of the length
        ids = rollout.response_ids * rollout.response_mask
        return (ids == 5).sum(-1).float() - 0.1 * rollout.lengths.float()

    n = 6
    torch.manual_seed(3)
    candidates = generate(tiny_lm, [p for p in PROMPTS for _ in range(n)], max_new_tokens=6, eos_id=EOS,
                          pad_id=PAD, device=CPU, do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
    scores = reward(candidates).reshape(len(PROMPTS), n)
    torch.manual_seed(3)
    chosen = run(tiny_lm, PROMPTS, Decoding("rerank", n=n), score=reward)
    assert reward(chosen).tolist() == pytest.approx(scores.max(-1).values.tolist())
    assert rows_to_lists(chosen) == [rows_to_lists(candidates)[i] for i in best_of(scores.flatten(), n).tolist()]
    with pytest.raises(ValueError, match="score"):
        run(tiny_lm, PROMPTS, Decoding("rerank", n=n))


def test_decoding_labels_and_config():
    decodings = parse_decodings(["sample", "greedy", "top_k", {"mode": "top_p", "p": 0.95}, "beam",
                                 {"mode": "beam", "width": 2, "length_penalty": 0}, "rerank"], 1.0)
    assert [d.label for d in decodings] == ["sample", "greedy", "top_k10", "top_p0.95", "beam4", "beam2_lp0",
                                            "rerank8"]
    assert parse_decodings(["sample", "greedy"], 0.7)[0].label == "sample_t0.7"
    assert parse_decodings(["greedy"], 0.7)[0].label == "greedy"  # a temperature does not change argmax
    with pytest.raises(C.ConfigError, match=r"evaluate\.decoding\.1: the same decoding \(top_k10\)"):
        C.validate({"evaluate": {"decoding": ["top_k", {"mode": "top_k", "k": 10}]}})
    with pytest.raises(C.ConfigError, match="evaluate.decoding"):
        C.validate({"evaluate": {"decoding": ["nucleus"]}})
    with pytest.raises(C.ConfigError, match="evaluate.decoding"):
        C.validate({"evaluate": {"decoding": [{"mode": "beam", "widht": 3}]}})


def test_self_bleu_and_perplexity_by_hand():
    a, b = "the cat sat on the mat", "the cat sat on a mat"
    # n-gram precisions of a against b (and of b against a): 5/6, 3/5, 2/4, 1/3; equal lengths, no brevity penalty
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert M.self_bleu([[a, b]]) == pytest.approx(expected, abs=1e-6)
    assert M.self_bleu([[a, a, a], [b]]) == pytest.approx(100.0)  # a prompt alone has nothing to compare with
    assert math.isnan(M.self_bleu([[a], [b]]))
    assert M.perplexity([math.log(0.5), math.log(0.25)]) == pytest.approx(2 * math.sqrt(2))
