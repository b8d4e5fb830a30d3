"""Per-token KL estimators between the sampling policy and the reference (rlhf-reference.md §2.0).

Schulman, "Approximating KL Divergence" (http://joschu.net/blog/kl-approx.html). With samples y_t ∼ π_θ
and log r_t = log π_ref(y_t|s_t) − log π_θ(y_t|s_t):
  k1 = −log r            unbiased, high variance, can be negative
  k2 = ½ (log r)²        biased, low variance, ≥ 0
  k3 = (r − 1) − log r   unbiased, low variance, ≥ 0
"""

from __future__ import annotations

import torch


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Element-wise k1, k2 or k3 estimate of KL[π_θ ‖ π_ref] from log-probs of tokens sampled from π_θ."""
    log_ratio = ref_logp - logp
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {kind!r}; expected k1, k2 or k3")


class KLController:
    """The KL coefficient β, owned in one place: fixed (``target`` None), or the adaptive controller of
    Ziegler et al. (arXiv 1909.08593; reference §2.6): e = clip(KL_obs/KL_target − 1, −0.2, 0.2),
    β ← β·(1 + e·n_steps/horizon).
    """

    def __init__(self, init: float, target: float | None = None, horizon: float = 10000):
        self.value, self.target, self.horizon = init, target, horizon

    def update(self, observed_kl: float, n_steps: int) -> float:
        if self.target:
            error = min(max(observed_kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = state["value"]
