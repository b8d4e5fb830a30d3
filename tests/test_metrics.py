"""Evaluation metrics against hand computation."""

import math

import numpy as np
import pytest

from rewardlab.evaluate import metrics as M


def test_spearman_hand_computed_with_ties():
    # x ranks: [1, 2.5, 2.5, 4]; y ranks: [1, 2, 3, 4]
    x, y = [1.0, 2.0, 2.0, 5.0], [10.0, 20.0, 30.0, 40.0]
    rx = np.array([1, 2.5, 2.5, 4])
    ry = np.array([1, 2, 3, 4])
    expected = np.corrcoef(rx, ry)[0, 1]
    assert M.spearman(x, y) == pytest.approx(expected)
    assert M.spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert math.isnan(M.spearman([1, 1, 1], [1, 2, 3]))


def test_pairwise_accuracy_counts_ties_half():
    assert M.pairwise_accuracy(np.array([1.0, -1.0, 0.0, 2.0])) == pytest.approx(2.5 / 4)


def test_ece_hand_computed():
    # Two bins on [0.5, 1]: Δ = 0 → conf 0.5 (bin 0); Δ = ln 9 → conf 0.9 (bin 1).
    delta = np.array([0.0, 0.0, math.log(9), math.log(9)])
    correct = np.array([True, False, True, True])
    # bin 0: conf 0.5, acc 0.5 → 0 ; bin 1: conf 0.9, acc 1.0 → 0.1 ; weights ½ each
    assert M.expected_calibration_error(delta, correct, bins=2) == pytest.approx(0.05)


def test_brier_against_true_probability():
    delta = np.array([0.0, math.log(3)])  # σ = 0.5, 0.75
    assert M.brier_against(delta, np.array([0.5, 0.25])) == pytest.approx((0 + 0.25) / 2)


def test_win_rate_and_distinct_and_repetition():
    assert M.win_rate([1, 2, 3, 0], [0, 2, 4, -1]) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert M.distinct_n([[1, 2, 3], [1, 2, 4]], 2) == pytest.approx(3 / 4)
    assert M.repetition_rate([[1, 1, 2], [1, 2, 1], [3, 3]]) == pytest.approx(2 / 3)
