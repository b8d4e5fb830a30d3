"""The summary's statistics against hand computation: t intervals, paired tests against the baseline, gold at
equal KL, the peak of the Gao RL fit."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rewardlab.evaluate import stats
from rewardlab.evaluate.summary import gold_at_kl, policy_baseline, rl_fits, rm_baseline

T_975 = {2: 4.302652729911275, 4: 2.7764451051977987}  # Student t quantiles (tables)


def runs(group: str, values: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"run": [f"{group}-s{i}" for i in range(len(values))], "group": group,
                         "seed": range(len(values)), "accuracy_gold": values})


def test_t_interval_by_hand():
    values = [0.80, 0.82, 0.85, 0.81, 0.87]
    out = stats.seed_intervals(runs("bt-eps0.0", values), ["accuracy_gold"]).iloc[0]
    s = np.std(values, ddof=1)
    assert out["seeds"] == 5 and out["accuracy_gold"] == pytest.approx(np.mean(values))
    assert out["accuracy_gold_ci95"] == pytest.approx(T_975[4] * s / math.sqrt(5))
    single = stats.seed_intervals(runs("bt-eps0.0", [0.8]), ["accuracy_gold"]).iloc[0]
    assert math.isnan(single["accuracy_gold_ci95"])  # no interval from one seed


def test_paired_t_test_against_the_baseline_by_hand():
    base, other = [0.80, 0.82, 0.85], [0.83, 0.86, 0.88]
    frame = pd.concat([runs("bt-eps0.0", base), runs("hinge-eps0.0", other)])
    tests = stats.paired_pvalues(frame, ["accuracy_gold"], rm_baseline("bt")).set_index("group")
    diff = np.subtract(other, base)  # 0.03, 0.04, 0.03
    t = diff.mean() / (diff.std(ddof=1) / math.sqrt(3))
    assert t > T_975[2]  # so p < 0.05 by the table
    assert tests.loc["hinge-eps0.0", "accuracy_gold_p"] < 0.05
    assert tests.loc["hinge-eps0.0", "baseline"] == "bt-eps0.0"
    assert math.isnan(tests.loc["bt-eps0.0", "accuracy_gold_p"])  # the baseline itself
    assert stats.cell(0.856, 0.01, 0.01) == "0.856 ± 0.010 *" and stats.cell(0.856, 0.01, 0.2) == "0.856 ± 0.010"


def test_baseline_groups():
    assert rm_baseline("bt")("hinge-eps0.25") == "bt-eps0.25"
    assert policy_baseline("sft")("ppo-sparse-bt-eps0.0") == "sft-bt-eps0.0"
    assert policy_baseline("ppo-sparse")("dpo-offline-bt-eps0.0") == "ppo-sparse-bt-eps0.0"
    # A bare shaping: each online algorithm against itself with that shaping; offline, sft and bon have none.
    sparse = policy_baseline("sparse")
    assert sparse("reinforce_pp-abc_beta05-bt-eps0.0") == "reinforce_pp-sparse-bt-eps0.0"
    assert sparse("ppo-uniform-bt-eps0.25") == "ppo-sparse-bt-eps0.25"
    assert sparse("dpo-offline-bt-eps0.0") is None and sparse("sft-bt-eps0.0") is None
    assert sparse("bon64-bt-eps0.0") is None


def test_gold_at_kl_interpolates_in_sqrt_kl_and_is_missing_out_of_reach():
    kl = np.array([0.0, 1.0, 4.0, 9.0])
    gold = np.array([0.0, 1.0, 3.0, 2.0])
    # 2 nats: √2 lies between √1 = 1 and √4 = 2, at w = √2 − 1 of the way.
    assert gold_at_kl(kl, gold, 2) == pytest.approx(1.0 + (math.sqrt(2) - 1) * 2.0)
    assert gold_at_kl(kl, gold, 9) == pytest.approx(2.0)
    assert math.isnan(gold_at_kl(kl, gold, 10))


def test_rl_fit_peak_by_hand():
    alpha, beta = 2.0, 1.0
    d = np.linspace(0.1, 6, 60)
    history = pd.DataFrame({"kl": d**2, "reward_gold": 0.5 + d * (alpha - beta * np.log(d))})
    history.loc[0, "reward_gold"] = 0.5  # the gain is measured from step 1
    row = rl_fits({"ppo-sparse-bt-eps0.0-s0": history}).iloc[0]
    assert row["rl_alpha"] == pytest.approx(alpha, rel=0.05) and row["rl_beta"] == pytest.approx(beta, rel=0.05)
    peak_d = math.exp(alpha / beta - 1)  # dR/dd = α − β log d − β = 0
    peak_gold = peak_d * (alpha - beta * math.log(peak_d))
    assert row["rl_kl_peak"] == pytest.approx(peak_d**2, rel=0.15)
    assert row["rl_gold_peak"] == pytest.approx(0.5 + peak_gold, rel=0.05)


def test_a_peak_beyond_the_runs_kl_is_missing_not_extrapolated():
    d = np.linspace(0.1, 2.0, 40)  # the curve above peaks at d* = e ≈ 2.72, beyond this run's reach
    history = pd.DataFrame({"kl": d**2, "reward_gold": d * (2.0 - np.log(d))})
    row = rl_fits({"ppo-sparse-bt-eps0.0-s0": history}).iloc[0]
    assert math.isnan(row["rl_gold_peak"]) and math.isnan(row["rl_kl_peak"])
    assert row["rl_beta"] > 0
