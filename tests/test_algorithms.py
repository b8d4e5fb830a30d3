"""The policy-gradient family, reward shaping and offline objectives against independent references."""

import math

import pytest
import torch

from rewardlab.rl import advantages as A
from rewardlab.rl import offline
from rewardlab.rl.algorithms import ALGORITHMS, Experience, build
from rewardlab.rl.kl import KLController
from rewardlab.rl.shapings import credit as shaping

CFG = {"epochs": 2, "clip": 0.2, "gamma": 1.0, "lam": 0.95, "whiten_advantages": True, "baseline_decay": 0.9,
       "grpo_scale_rewards": True}


def close(t, expected, atol=1e-5):
    return torch.allclose(t.float(), torch.tensor(expected, dtype=torch.float), atol=atol)


def test_rloo_advantage_is_scaled_centred_return():
    returns = torch.tensor([1.0, 2.0, 6.0, 0.0, 4.0])
    group = torch.tensor([0, 0, 0, 1, 1])
    advantages = A.rloo_advantages(returns, group)
    # Leave-one-out by hand: group 0 mean 3 → A_i = k/(k−1)·(R_i − mean) = 1.5·(−2, −1, 3)
    assert close(advantages, [-3.0, -1.5, 4.5, -4.0, 4.0])


def test_grpo_normalisation_and_zero_variance_guard():
    scores = torch.tensor([1.0, 3.0, 2.0, 2.0, 2.0])
    group = torch.tensor([0, 0, 1, 1, 1])
    advantages, zero = A.grpo_advantages(scores, group)
    # group 0: mean 2, population std 1 → (−1, 1)/(1 + 1e-4); group 1 all equal → 0, not 0/ε
    assert close(advantages, [-1 / 1.0001, 1 / 1.0001, 0.0, 0.0, 0.0])
    assert zero.tolist() == [False, False, True, True, True]
    dr, _ = A.grpo_advantages(scores, group, scale=False)
    assert close(dr, [-1.0, 1.0, 0.0, 0.0, 0.0])


def test_reward_to_go_and_reinforce_pp():
    rewards = torch.tensor([[0.1, -0.2, 1.0], [0.5, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    rtg = A.reward_to_go(rewards, mask)
    assert close(rtg, [[0.9, 0.8, 1.0], [0.5, 0.0, 0.0]])
    algo = build("reinforce_pp", CFG)
    adv, _ = algo.advantages(Experience(rewards=rewards, score=torch.tensor([1.0, 0.5]), mask=mask,
                                        group=torch.tensor([0, 1])))
    valid = adv[mask.bool()]
    assert valid.mean().item() == pytest.approx(0.0, abs=1e-6)  # global batch whitening
    baseline = build("reinforce_pp_baseline", CFG)
    adv_b, returns_b = baseline.advantages(Experience(rewards=rewards, score=torch.tensor([1.0, 0.5]), mask=mask,
                                                      group=torch.tensor([0, 0])))
    # The group-mean score (0.75) is subtracted at each sequence's last token before the reward-to-go.
    assert close(returns_b, [[0.15, 0.05, 0.25], [-0.25, 0.0, 0.0]])


def test_a2c_advantage_is_reward_to_go_minus_the_critic():
    rewards = torch.tensor([[0.0, -0.1, 1.0], [0.5, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    values = torch.tensor([[0.2, 0.5, 0.7], [0.1, 0.0, 0.0]])
    algo = build("a2c", CFG | {"whiten_advantages": False})
    assert algo.uses_critic and not algo.clipped and not algo.clips_value and algo.update_epochs == 1
    advantages, returns = algo.advantages(Experience(rewards=rewards, score=torch.tensor([0.9, 0.5]), mask=mask,
                                                     group=torch.tensor([0, 1]), values=values))
    # G_t by hand: (0.9, 0.9, 1.0) and (0.5); A_t = G_t − V(s_t)
    assert close(returns, [[0.9, 0.9, 1.0], [0.5, 0.0, 0.0]])
    assert close(advantages, [[0.7, 0.4, 0.3], [0.4, 0.0, 0.0]])
    whitened, _ = build("a2c", CFG).advantages(Experience(rewards=rewards, score=torch.tensor([0.9, 0.5]),
                                                          mask=mask, group=torch.tensor([0, 1]), values=values))
    # whitened over valid tokens with the mean put back (shift_mean=False): the critic is the only centring
    raw = torch.tensor([0.7, 0.4, 0.3, 0.4])
    expected = (raw - raw.mean()) / raw.std(unbiased=False) + raw.mean()
    assert close(whitened[mask.bool()], expected.tolist(), atol=1e-4)


def test_loss_aggregations():
    per_token = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    assert A.aggregate_loss(per_token, mask, "token_mean", 4).item() == pytest.approx(8 / 5)
    assert A.aggregate_loss(per_token, mask, "seq_mean", 4).item() == pytest.approx((1 + 4) / 2)
    assert A.aggregate_loss(per_token, mask, "constant", 4).item() == pytest.approx(8 / 8)


@pytest.mark.parametrize("name", ["prefix_difference", "uniform", "abc"])
def test_dense_shapings_sum_to_the_sparse_reward(name):
    torch.manual_seed(0)
    score = torch.randn(3)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    if name == "prefix_difference":
        prefix = torch.randn(3, 5)  # R(x), R(x, y≤1), …; the full response's score sits at its length
        lengths = mask.sum(-1).long()
        prefix[torch.arange(3), lengths] = score + prefix[:, 0]
        rewards = shaping.prefix_difference(prefix, mask)
        # Σ_t r_t = R(x, y) − R(x): the sparse reward up to the constant R(x) (potential-based shaping)
        assert torch.allclose(rewards.sum(-1), score, atol=1e-5)
    elif name == "uniform":
        assert torch.allclose(shaping.uniform(score, mask).sum(-1), score, atol=1e-6)
    else:
        weights = torch.rand(3, 4)
        assert torch.allclose(shaping.attention_credit(score, weights, mask, beta=0.8).sum(-1), score, atol=1e-6)
    assert torch.allclose(shaping.sparse(score, mask).sum(-1), score)


def test_abc_weights_follow_attention():
    score = torch.tensor([2.0])
    mask = torch.ones(1, 3)
    rewards = shaping.attention_credit(score, torch.tensor([[1.0, 0.0, 3.0]]), mask, beta=1.0)
    assert close(rewards, [[0.5, 0.0, 1.5]])


def test_final_token_attention_picks_last_non_pad_row():
    attn = torch.zeros(1, 2, 4, 4)
    attn[0, :, 2] = torch.tensor([0.1, 0.2, 0.7, 0.0])  # row of position 2, the last non-pad token
    mask = torch.tensor([[1, 1, 1, 0]])
    assert close(shaping.final_token_attention(attn, mask, prompt_width=1), [[0.2, 0.7, 0.0]])


def test_offline_losses_hand_computed():
    h = torch.tensor([1.0, -2.0])
    beta = 0.5
    expected_dpo = (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(1.0))) / 2
    assert offline.dpo_loss(h, beta).item() == pytest.approx(expected_dpo)
    assert offline.ipo_loss(h, 0.5).item() == pytest.approx(((1 - 1) ** 2 + (-2 - 1) ** 2) / 2)
    eps = 0.1
    expected_cdpo = sum((1 - eps) * math.log1p(math.exp(-beta * x)) + eps * math.log1p(math.exp(beta * x))
                        for x in h.tolist()) / 2
    assert offline.cdpo_loss(h, beta, eps).item() == pytest.approx(expected_cdpo)
    assert offline.cdpo_loss(h, beta, 0.0).item() == pytest.approx(expected_dpo)


def test_kl_controller_adaptive_and_fixed():
    ctl = KLController(0.1, target=6.0, horizon=10000)
    assert ctl.update(12.0, 1000) == pytest.approx(0.1 * (1 + 0.2 * 0.1))  # error clipped at 0.2
    assert ctl.update(6.0, 1000) == pytest.approx(0.1 * 1.02)
    fixed = KLController(0.05)
    assert fixed.update(100.0, 1000) == 0.05 and fixed.value == 0.05
    restored = KLController(0.1, target=6.0)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_two_token_bandit_every_algorithm_raises_the_rewarded_token(name):
    """A one-step bandit over two tokens: token 0 earns 1, token 1 earns 0."""
    torch.manual_seed(0)
    logits = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.SGD([logits], lr=0.5)
    algo = build(name, CFG)
    group_size, prompts = 4, 8
    for _ in range(30):
        with torch.no_grad():
            probs = torch.softmax(logits, -1)
            tokens = torch.multinomial(probs, prompts * group_size, replacement=True)
            old_logp = torch.log(probs[tokens])[:, None]
            score = (tokens == 0).float()
            mask = torch.ones(len(tokens), 1)
            group = torch.arange(prompts).repeat_interleave(group_size)
            greedy = (probs.argmax() == 0).float().expand(len(tokens))
            exp = Experience(rewards=score[:, None].clone(), score=score, mask=mask, group=group,
                             values=torch.zeros(len(tokens), 1), baseline_score=greedy)
            advantages, _ = algo.advantages(exp)
        for _ in range(algo.update_epochs):
            logp = torch.log_softmax(logits, -1)[tokens][:, None]
            per_token, _ = algo.policy_loss_tokens(logp, old_logp, advantages)
            loss = A.aggregate_loss(per_token, mask, "token_mean", 1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert torch.softmax(logits, -1)[0].item() > 0.8


def bandit_length_after_training(shape) -> float:
    """Sequences of up to 3 tokens: at positions 1 and 2 the policy stops (EOS) with probability σ(l_t), at 3
    it must stop. Every sequence earns the same score R = 1, so no length is better than another. Train with
    reward-to-go, whitened over tokens (REINFORCE++ / GAE with λ = γ = 1 and V = 0), on the shaping's credit;
    return the expected length of the final policy."""
    torch.manual_seed(0)
    stop_logits = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.SGD([stop_logits], lr=1.0)
    batch = 256
    for _ in range(150):
        with torch.no_grad():
            p_stop = torch.sigmoid(stop_logits)
            u = torch.rand(batch, 2)
            length = torch.where(u[:, 0] < p_stop[0], 1, torch.where(u[:, 1] < p_stop[1], 2, 3))
            mask = (torch.arange(3)[None, :] < length[:, None]).float()
            rewards = shape(torch.ones(batch), mask)
            advantages = A.masked_whiten(A.reward_to_go(rewards, mask), mask)
        # log-prob of the action taken at each position: continue before the end, stop at it (forced at 3)
        log_stop, log_go = torch.nn.functional.logsigmoid(stop_logits), torch.nn.functional.logsigmoid(-stop_logits)
        positions = torch.arange(3)[None, :].expand(batch, 3)
        stopped_here = positions == (length[:, None] - 1)
        logp = torch.zeros(batch, 3)
        for t in range(2):
            logp[:, t] = torch.where(stopped_here[:, t], log_stop[t], log_go[t])
        loss = A.masked_mean(-advantages * logp, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    p = torch.sigmoid(stop_logits).detach()
    return float(p[0] * 1 + (1 - p[0]) * p[1] * 2 + (1 - p[0]) * (1 - p[1]) * 3)


def test_non_causal_uniform_credit_rewards_length_under_reward_to_go():
    """A finding, not a bug (README "Algorithms and reward shaping"): uniform credit r_t = R/T depends on T, a
    choice made later, so with reward-to-go the tokens before a late stop collect more return than the stop
    itself and the policy learns to be long although every length scores the same. ABC's attention weights
    are renormalised over the response in the same way. Sparse credit leaves the length where it was."""
    initial = 1 * 0.5 + 2 * 0.25 + 3 * 0.25
    assert bandit_length_after_training(shaping.sparse) == pytest.approx(initial, abs=1e-6)
    # The stop at position 2 earns G = ½ where continuing earns ⅔ (the first token earns R = 1 either way):
    # seen 1.75 → 1.98 in 150 steps, and rising.
    assert bandit_length_after_training(shaping.uniform) > initial + 0.15


def test_the_algorithm_study_gives_every_online_algorithm_equal_samples_and_optimizer_steps():
    from pathlib import Path

    from rewardlab import config as C
    from rewardlab.dag import online_algorithms
    from rewardlab.train.policy import policy_options

    root = Path(__file__).resolve().parents[1]
    cfg = C.load(root / "config/config.yaml", root / "config/experiments/algorithms.yaml")
    budgets = {}
    for name in online_algorithms(cfg):
        algo = build(name, policy_options(cfg, name))
        budgets[name] = (algo.samples_per_step(), algo.optimizer_steps_per_step())
    assert len(budgets) == 8 and len(set(budgets.values())) == 1, budgets
