"""Best-of-n over-optimisation (Gao, Schulman & Hilton, arXiv 2210.10760; rlhf-reference.md §3.1).

One pool of N samples per prompt gives the whole best-of-n curve for every n ≤ N through the unbiased
estimator (Coste et al. ``bon_sampling.py::unbiased_sampler``): with the samples sorted by proxy score,
  E[value of best-of-n] = Σ_{i=n}^{N} C(i−1, n−1)/C(N, n) · value_(i).
The distance axis is d = √KL(π_bon ‖ π̂), computed exactly for best-of-n drawn from the pool's empirical
distribution π̂ with ties (``kl_bon_exact``; Beirami et al., arXiv 2401.01879), and gold reward (relative to
n = 1) is fitted by R(d) = d·(α − β·d). The analytic log n − (n−1)/n, an upper bound that overstates the
KL when the pool repeats responses (frequent in a small vocabulary), is kept beside it as ``kl_analytic``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def bon_weights(n: int, big_n: int) -> np.ndarray:
    """w_i = C(i−1, n−1)/C(N, n) for i = 1..N (zero for i < n): the probability that the best of a random
    n-subset is the i-th smallest. The weights sum to 1.
    """
    total = math.comb(big_n, n)
    return np.array([math.comb(i - 1, n - 1) / total for i in range(1, big_n + 1)], dtype=np.float64)


def best_of_n_expectation(proxy: Sequence[float], value: Sequence[float], n: int) -> float:
    """E[value of the sample with the highest proxy among n drawn without replacement from the pool]."""
    order = np.argsort(np.asarray(proxy, dtype=np.float64), kind="mergesort")
    sorted_value = np.asarray(value, dtype=np.float64)[order]
    return float(bon_weights(n, len(sorted_value)) @ sorted_value)


def kl_bon(n: int) -> float:
    """Analytic KL(π_bon ‖ π) = log n − (n−1)/n: exact only for a continuous reward, an upper bound otherwise
    (pitfall §6.10; Beirami et al., arXiv 2401.01879)."""
    return math.log(n) - (n - 1) / n


def kl_bon_exact(proxy: Sequence[float], n: int) -> float:
    """KL(π_bon ‖ π̂) for the best of n i.i.d. draws from the pool's empirical distribution π̂, ties broken
    uniformly at random. Group the pool by score level ℓ with mass m_ℓ and cumulative mass F_ℓ (F⁻_ℓ = F_ℓ − m_ℓ):
    the best draw lands in ℓ with probability F_ℓⁿ − F⁻_ℓⁿ, spread over ℓ's responses as π̂ spreads them, so
        KL = Σ_ℓ (F_ℓⁿ − F⁻_ℓⁿ) · log[(F_ℓⁿ − F⁻_ℓⁿ) / m_ℓ].
    Repeated responses (equal scores) lower it below the analytic log n − (n−1)/n, which it approaches as
    the pool's scores become distinct and many."""
    _, counts = np.unique(np.asarray(proxy, dtype=np.float64), return_counts=True)
    mass = counts / counts.sum()
    upper = np.minimum(np.cumsum(mass), 1.0)
    level = upper**n - (upper - mass).clip(min=0.0) ** n
    keep = level > 0
    return float(np.sum(level[keep] * np.log(level[keep] / mass[keep])))


def curve(proxy: Sequence[Sequence[float]], gold: Sequence[Sequence[float]], ns: Sequence[int]) -> list[dict]:
    """Mean over prompts of the best-of-n proxy and gold for each n, with the KL from the pool (mean over
    prompts of each prompt's exact KL) and d = √KL; ``kl_analytic`` is the bound."""
    rows = []
    for n in ns:
        kl = float(np.mean([kl_bon_exact(p, n) for p in proxy]))
        rows.append({
            "n": n,
            "kl": kl,
            "sqrt_kl": math.sqrt(kl),
            "kl_analytic": kl_bon(n),
            "proxy": float(np.mean([best_of_n_expectation(p, p, n) for p in proxy])),
            "gold": float(np.mean([best_of_n_expectation(p, g, n) for p, g in zip(proxy, gold)])),
        })
    return rows


def gao_fit_bon(d: Sequence[float], reward: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares fit of R(d) = d·(α − β·d) = α·d − β·d²; returns (α, β, R²)."""
    d = np.asarray(d, dtype=np.float64)
    r = np.asarray(reward, dtype=np.float64)
    design = np.stack([d, -(d**2)], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design, r, rcond=None)
    residual = r - design @ np.array([alpha, beta])
    total = ((r - r.mean()) ** 2).sum()
    r2 = 1.0 - (residual**2).sum() / total if total > 0 else float("nan")
    return float(alpha), float(beta), float(r2)


def gao_fit_rl(d: Sequence[float], reward: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares fit of the RL form R(d) = d·(α − β·log d) = α·d − β·d·log d (Gao et al. Eq. 2);
    points with d ≤ 0 are dropped. Returns (α, β, R²), NaN when fewer than three points remain.
    """
    d = np.asarray(d, dtype=np.float64)
    r = np.asarray(reward, dtype=np.float64)
    keep = d > 1e-6
    d, r = d[keep], r[keep]
    if len(d) < 3:
        return float("nan"), float("nan"), float("nan")
    design = np.stack([d, -d * np.log(d)], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design, r, rcond=None)
    residual = r - design @ np.array([alpha, beta])
    total = ((r - r.mean()) ** 2).sum()
    r2 = 1.0 - (residual**2).sum() / total if total > 0 else float("nan")
    return float(alpha), float(beta), float(r2)
