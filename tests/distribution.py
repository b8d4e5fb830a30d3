"""A chi-square test that a sampler draws two-token responses from softmax(logits / T): the observed responses
of one prompt against p(y1) p(y2 | y1) from full forward passes of the model (tests of the rollout backends)."""

from __future__ import annotations

import torch
from scipy import stats


@torch.no_grad()
def two_token_pvalues(lm, prompt: list[int], rollout, temperature: float, eos_id: int,
                      other_temperature: float = 1.5) -> tuple[float, float]:
    """(p-value of the responses against the model at ``temperature``, p-value of their first tokens against the
    model at ``other_temperature``): the first should be large, the second tiny (the test has power)."""
    device = next(lm.parameters()).device
    vocab = lm.config.vocab_size

    def probabilities(ids: list[int], t: float) -> torch.Tensor:
        return torch.softmax(lm(input_ids=torch.tensor([ids], device=device)).logits[0, -1].float() / t, -1).cpu()

    first = probabilities(prompt, temperature)
    expected, observed = {}, {}
    for y1 in range(vocab):
        if y1 == eos_id:
            expected[(y1,)] = first[y1].item()
            continue
        second = probabilities(prompt + [y1], temperature)
        for y2 in range(vocab):
            expected[(y1, y2)] = (first[y1] * second[y2]).item()
    for row, mask in zip(rollout.response_ids.tolist(), rollout.response_mask.tolist()):
        key = tuple(t for t, m in zip(row, mask) if m)
        observed[key] = observed.get(key, 0) + 1
    assert set(observed) <= set(expected), set(observed) - set(expected)
    draws = sum(observed.values())
    # cells with fewer than 5 expected draws are pooled into one
    keys = sorted(expected, key=expected.get, reverse=True)
    big = [k for k in keys if expected[k] * draws >= 5]
    small = [k for k in keys if expected[k] * draws < 5]
    f_exp = [expected[k] * draws for k in big] + [sum(expected[k] for k in small) * draws]
    f_obs = [observed.get(k, 0) for k in big] + [sum(observed.get(k, 0) for k in small)]
    fit = stats.chisquare(f_obs, [e * draws / sum(f_exp) for e in f_exp])  # float32 sums to exactly draws
    hot = probabilities(prompt, other_temperature).double()
    marginal_obs = [sum(v for k, v in observed.items() if k[0] == y) for y in range(vocab)]
    other = stats.chisquare(marginal_obs, (hot / hot.sum() * draws).tolist())
    return float(fit.pvalue), float(other.pvalue)
