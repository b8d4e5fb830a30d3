"""Reward-model losses against hand-computed values."""

import math

import pytest
import torch

from rewardlab import losses


def test_bradley_terry_hand_computed():
    chosen = torch.tensor([1.0, 0.0])
    rejected = torch.tensor([0.0, 2.0])
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(2.0))) / 2
    assert losses.get("bt").fn(chosen, rejected).item() == pytest.approx(expected)


def test_bradley_terry_gradcheck():
    chosen = torch.randn(5, dtype=torch.float64, requires_grad=True)
    rejected = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(losses.get("bt").fn, (chosen, rejected))


def test_unknown_loss_names_the_known_ones():
    with pytest.raises(KeyError, match="bt"):
        losses.get("nope")
