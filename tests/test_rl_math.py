"""RL estimators and objectives against independent references: plain loops and hand-computed values."""

import math

import pytest
import torch

from rewardlab.rl.advantages import (
    baseline_advantages,
    gae,
    masked_mean,
    masked_whiten,
    sequence_returns,
)
from rewardlab.rl.algorithms import Experience
from rewardlab.rl.algorithms.policy_gradient import Reinforce
from rewardlab.rl.kl import kl_estimate
from rewardlab.rl.objectives import clipped_surrogate_tokens, clipped_value_loss, policy_gradient_tokens
from rewardlab.rl.rollout import truncate_after_eos
from rewardlab.rl.shapings.credit import sparse


def close(tensor: torch.Tensor, expected) -> bool:
    return torch.allclose(tensor.float(), torch.tensor(expected, dtype=torch.float), atol=1e-5)


def reference_gae(rewards, values, length, gamma, lam):
    """A plain reverse loop over one sequence of ``length`` valid steps, V(s_{T+1}) = 0."""
    adv = [0.0] * length
    last = 0.0
    for t in reversed(range(length)):
        next_v = values[t + 1] if t + 1 < length else 0.0
        delta = rewards[t] + gamma * next_v - values[t]
        last = delta + gamma * lam * last
        adv[t] = last
    return adv


def test_gae_matches_plain_loop_with_padding():
    torch.manual_seed(0)
    rewards = torch.randn(3, 6)
    values = torch.randn(3, 6)
    lengths = [6, 4, 1]
    mask = torch.tensor([[1] * n + [0] * (6 - n) for n in lengths], dtype=torch.float)
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    for i, n in enumerate(lengths):
        expected = reference_gae(rewards[i].tolist(), values[i].tolist(), n, 0.9, 0.8)
        assert adv[i, :n].tolist() == pytest.approx(expected, abs=1e-5)
        assert adv[i, n:].abs().sum() == 0
        assert ret[i, :n].tolist() == pytest.approx([a + v for a, v in zip(expected, values[i, :n].tolist())],
                                                    abs=1e-5)


def test_gae_hand_computed():
    # r = [0, 1], V = [0.5, 0.25], γ = 1, λ = 0.5:
    # δ1 = 1 − 0.25 = 0.75; δ0 = 0 + 0.25 − 0.5 = −0.25; A0 = −0.25 + 0.5·0.75 = 0.125
    adv, _ = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.25]]), torch.ones(1, 2), 1.0, 0.5)
    assert adv[0].tolist() == pytest.approx([0.125, 0.75])


def test_gae_with_lambda_one_gamma_one_is_reward_to_go_minus_value():
    torch.manual_seed(1)
    rewards, values = torch.randn(2, 5), torch.randn(2, 5)
    mask = torch.ones(2, 5)
    adv, _ = gae(rewards, values, mask, 1.0, 1.0)
    reward_to_go = torch.flip(torch.cumsum(torch.flip(rewards, [1]), 1), [1])
    assert torch.allclose(adv, reward_to_go - values, atol=1e-5)


def test_sparse_reward_with_kl_puts_the_score_on_the_last_valid_token():
    """r_t = −β·KL_t + 1[t = T_end]·score (§2.0), as the policy loop composes it for the sparse shaping."""
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    rewards = sparse(torch.tensor([2.0, -1.0]), mask) - 0.5 * kl * mask
    assert close(rewards, [[-0.05, -0.1, 2.0 - 0.15], [-1.0 - 0.25, 0.0, 0.0]])
    assert sequence_returns(rewards, mask).tolist() == pytest.approx([2.0 - 0.3, -1.25])


def test_kl_estimators_on_known_values():
    logp = torch.tensor([math.log(0.5)])
    ref = torch.tensor([math.log(0.25)])
    # log r = log(0.25/0.5) = −log 2
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_estimate(logp, ref, "k2").item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(0.5 - 1 + math.log(2))


def test_k1_and_k3_are_unbiased_and_k3_nonnegative():
    torch.manual_seed(0)
    q = torch.tensor([0.6, 0.3, 0.1])
    p = torch.tensor([0.2, 0.5, 0.3])
    true_kl = float((q * (q / p).log()).sum())
    samples = torch.multinomial(q, 200_000, replacement=True)
    logq, logp = q.log()[samples], p.log()[samples]
    k1, k3 = kl_estimate(logq, logp, "k1"), kl_estimate(logq, logp, "k3")
    assert k1.mean().item() == pytest.approx(true_kl, abs=0.01)
    assert k3.mean().item() == pytest.approx(true_kl, abs=0.01)
    assert (k3 >= 0).all()
    assert (k1 < 0).any()  # k1 can be negative per sample


def test_clipped_surrogate_hand_computed():
    # ratios e^{0.5} ≈ 1.6487 (A = +1 → clipped at 1.2) and e^{−0.5} ≈ 0.6065 (A = −2 → clipped at 0.8)
    logp = torch.tensor([[0.5, -0.5]])
    old = torch.zeros(1, 2)
    adv = torch.tensor([[1.0, -2.0]])
    tokens, clipped = clipped_surrogate_tokens(logp, old, adv, clip=0.2)
    loss, clipfrac = tokens.mean(), clipped.mean()
    # token 0: max(−1.6487, −1.2) = −1.2 ; token 1: max(2·0.6065, 2·0.8) = 1.6
    assert loss.item() == pytest.approx((-1.2 + 1.6) / 2)
    assert clipfrac.item() == pytest.approx(1.0)
    loss_small, clipfrac_small = clipped_surrogate_tokens(torch.tensor([[0.05]]), torch.zeros(1, 1),
                                                          torch.tensor([[1.0]]), clip=0.2)
    assert loss_small.item() == pytest.approx(-math.exp(0.05))
    assert clipfrac_small.item() == 0.0


def test_clipped_value_loss_hand_computed():
    values = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.0, 0.0]])
    returns = torch.tensor([[2.0, 1.0]])
    loss, _ = clipped_value_loss(values, old, returns, torch.ones(1, 2), clip=0.2)
    # token 0: V = 1, V_clip = 0.2 → max((1−2)², (0.2−2)²) = 3.24 ; token 1: max(1, 1) = 1
    assert loss.item() == pytest.approx(0.5 * (3.24 + 1.0) / 2)


def test_policy_gradient_gradient_is_advantage_times_score_function():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    adv = torch.tensor([[3.0, -1.0]])
    loss = masked_mean(policy_gradient_tokens(logp, logp.detach(), adv), torch.ones(1, 2))
    loss.backward()
    assert close(logp.grad, [[-1.5, 0.5]])


def test_reinforce_moving_average_baseline():
    algo = Reinforce({"baseline_decay": 0.5, "whiten_advantages": False, "epochs": 4})
    mask = torch.ones(2, 2)

    def experience(rewards):
        return Experience(rewards=torch.tensor(rewards), score=torch.zeros(2), mask=mask, group=torch.arange(2))

    adv, _ = algo.advantages(experience([[0.0, 1.0], [0.0, 3.0]]))
    assert close(adv, [[-1.0, -1.0], [1.0, 1.0]])  # b = first batch mean = 2
    adv, _ = algo.advantages(experience([[0.0, 4.0], [0.0, 4.0]]))
    assert close(adv, [[2.0, 2.0], [2.0, 2.0]])  # b = 2 before the update
    assert algo.baseline == pytest.approx(3.0)  # 0.5·2 + 0.5·4
    assert algo.update_epochs == 1  # on-policy: one step per mini-batch
    per_token, clipped = algo.policy_loss_tokens(torch.zeros(2, 2), torch.zeros(2, 2), adv)
    assert clipped is None and per_token.mean().item() == pytest.approx(-2.0)


def test_baseline_advantages_and_whitening():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    adv = baseline_advantages(torch.tensor([1.0, 4.0]), 2.0, mask)
    assert adv.tolist() == [[-1.0, -1.0, 0.0], [2.0, 0.0, 0.0]]
    white = masked_whiten(adv, mask)
    valid = white[mask.bool()]
    assert valid.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert valid.var(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    assert white[~mask.bool()].abs().sum() == 0


def test_truncate_after_eos():
    eos, pad = 2, 0
    responses = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 9, 9, 9]])
    out, mask, has_eos = truncate_after_eos(responses, eos, pad)
    assert out.tolist() == [[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert has_eos.tolist() == [True, False, True]


def test_rollouts_sample_softmax_over_t_whatever_the_models_generation_config(tmp_path):
    """A pretrained model's generation_config.json (repetition penalty, no-repeat n-grams, suppressed tokens,
    top_k) must not reshape the rollout distribution: the objectives use log softmax(logits / T)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from rewardlab.models.build import load_policy
    from rewardlab.rl.rollout import logprobs_and_entropy, sample

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=8, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=1,
                                       eos_token_id=2, pad_token_id=0))
    with torch.no_grad():
        model.transformer.wte.weight.mul_(6.0)  # logits of a few nats, so any processor would show
    model.generation_config.update(do_sample=True, top_k=2, repetition_penalty=3.0, no_repeat_ngram_size=1,
                                   suppress_tokens=[5])
    model.save_pretrained(tmp_path)
    policy = load_policy(tmp_path)
    assert policy.generation_config.repetition_penalty == 3.0 and policy.generation_config.suppress_tokens == [5]
    prompt, temperature, n = [1, 3, 4], 0.7, 6000
    rollout = sample(policy, [prompt] * n, max_new_tokens=1, temperature=temperature, eos_id=2, pad_id=0,
                     device=torch.device("cpu"))
    with torch.no_grad():
        expected = torch.softmax(policy(torch.tensor([prompt])).logits[0, -1] / temperature, -1)
        logp, _ = logprobs_and_entropy(policy, rollout, temperature)
    first = rollout.response_ids[:, 0]
    empirical = torch.bincount(first, minlength=8).float() / n
    assert 0.5 * (empirical - expected).abs().sum().item() < 0.03  # total variation
    assert expected[[3, 4, 5]].sum() > 0.1  # the tokens the config would forbid carry real mass
    assert torch.allclose(logp[:, 0], expected.log()[first], atol=1e-5)
    assert policy.generation_config.repetition_penalty == 3.0  # the model's own config is left as it was
