"""Best-of-n: the unbiased estimator against brute-force enumeration, KL_bon, and the Gao fit."""

import itertools
import math

import numpy as np
import pytest

from rewardlab.evaluate import bon as B


def brute_force(proxy, gold, n):
    """Average over every n-subset of the gold of its highest-proxy member."""
    values = []
    for subset in itertools.combinations(range(len(proxy)), n):
        best = max(subset, key=lambda i: proxy[i])
        values.append(gold[best])
    return sum(values) / len(values)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_unbiased_estimator_equals_enumeration(n):
    rng = np.random.default_rng(n)
    proxy = rng.normal(size=7).tolist()
    gold = rng.normal(size=7).tolist()
    assert B.best_of_n_expectation(proxy, gold, n) == pytest.approx(brute_force(proxy, gold, n))


def test_weights_sum_to_one_and_edges():
    for n in range(1, 9):
        assert B.bon_weights(n, 8).sum() == pytest.approx(1.0)
    proxy, gold = [0.1, 0.5, 0.3], [10.0, 20.0, 30.0]
    assert B.best_of_n_expectation(proxy, gold, 1) == pytest.approx(20.0)  # the mean
    assert B.best_of_n_expectation(proxy, gold, 3) == pytest.approx(20.0)  # the proxy's argmax


def test_kl_bon():
    assert B.kl_bon(1) == 0.0
    assert B.kl_bon(4) == pytest.approx(math.log(4) - 0.75)


def test_gao_fit_recovers_coefficients():
    d = np.linspace(0.1, 2.5, 12)
    alpha, beta, r2 = B.gao_fit_bon(d, d * (1.3 - 0.4 * d))
    assert (alpha, beta, r2) == pytest.approx((1.3, 0.4, 1.0), abs=1e-9)


def test_gao_rl_fit_recovers_coefficients():
    d = np.linspace(0.05, 3.0, 20)
    alpha, beta, r2 = B.gao_fit_rl(np.concatenate([[0.0], d]), np.concatenate([[0.0], d * (0.9 - 0.3 * np.log(d))]))
    assert (alpha, beta, r2) == pytest.approx((0.9, 0.3, 1.0), abs=1e-9)


def brute_force_kl(proxy, n):
    """KL(π_bon ‖ π̂) by enumerating every n-tuple of pool indices (i.i.d. draws), ties broken uniformly."""
    pool = len(proxy)
    responses = sorted(set(proxy))  # equal score = one response (the RM is deterministic)
    p_hat = {r: proxy.count(r) / pool for r in responses}
    p_bon = dict.fromkeys(responses, 0.0)
    for tup in itertools.product(range(pool), repeat=n):
        best = max(proxy[i] for i in tup)
        p_bon[best] += pool**-n
    return sum(q * math.log(q / p_hat[r]) for r, q in p_bon.items() if q > 0)


@pytest.mark.parametrize("proxy", [[0.3, 0.1, 0.3, 0.9, 0.1, 0.1], [1.0, 2.0, 3.0, 4.0, 5.0], [0.5] * 4])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_exact_bon_kl_equals_enumeration_with_ties(proxy, n):
    assert B.kl_bon_exact(proxy, n) == pytest.approx(brute_force_kl(proxy, n), abs=1e-12)


def test_exact_bon_kl_is_below_the_analytic_bound_and_reaches_it_for_many_distinct_samples():
    rng = np.random.default_rng(0)
    distinct = rng.normal(size=20_000).tolist()
    for n in (2, 4, 16):
        assert B.kl_bon_exact(distinct, n) == pytest.approx(B.kl_bon(n), abs=2e-3)
    repeated = [0.0] * 30 + [1.0] * 20 + [2.0] * 14  # a small vocabulary: few distinct responses
    for n in (2, 4, 16, 64):
        assert 0.0 <= B.kl_bon_exact(repeated, n) < B.kl_bon(n)
    assert B.kl_bon_exact([3.0] * 8, 8) == 0.0  # one response: best-of-n changes nothing
