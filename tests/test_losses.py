"""Reward-model losses: hand-computed values, gradients, and the identities between them (§1)."""

import itertools
import math

import pytest
import torch
import yaml

from rewardlab import losses
from rewardlab.losses import LOSSES, listwise, pairwise, regression

C = torch.tensor([1.0, 0.0, -0.5, 2.0], dtype=torch.float64)
R = torch.tensor([0.0, 2.0, -0.5, 0.5], dtype=torch.float64)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def bt_by_hand(c, r) -> float:
    return sum(softplus(-(a - b)) for a, b in zip(c.tolist(), r.tolist())) / len(c)


def test_the_schema_takes_loss_names_and_hyperparameters_from_the_registry():
    from rewardlab.config import load_schema

    reward = load_schema()["properties"]["reward"]["properties"]
    assert reward["losses"]["items"]["enum"] == LOSSES.names()
    assert len(LOSSES) >= 14
    assert losses.get("triplet_aux").exploratory
    keys = {p.key: p.default for _, spec in LOSSES.items() for p in spec.params.values()}
    assert {k: v["default"] for k, v in reward["loss_params"]["properties"].items()} == keys
    assert keys["hinge_margin"] == 1.0 and keys["label_smoothing"] == 0.1
    shapes = {name: spec.label_shape for name, spec in LOSSES.items()}
    assert shapes["bt"] == "pairs" and shapes["plackett_luce"] == "rankings" and shapes["mse_rating"] == "ratings"


def test_bradley_terry_hand_computed():
    assert pairwise.bradley_terry(C, R).item() == pytest.approx(bt_by_hand(C, R))


def test_bt_margin_hand_computed():
    m = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0], dtype=torch.float64)
    expected = sum(softplus(-(a - b - mm)) for a, b, mm in zip(C.tolist(), R.tolist(), m.tolist())) / 4
    assert pairwise.bradley_terry_margin(C, R, m).item() == pytest.approx(expected)
    assert pairwise.bradley_terry_margin(C, R, torch.zeros(4, dtype=torch.float64)).item() == pytest.approx(
        bt_by_hand(C, R))


def test_hinge_is_zero_beyond_the_margin_and_linear_inside():
    assert pairwise.hinge(torch.tensor([3.0]), torch.tensor([1.0]), margin=1.0).item() == 0.0
    assert pairwise.hinge(torch.tensor([1.0]), torch.tensor([1.0]), margin=1.0).item() == 1.0
    # Δ = [1, −2, 0, 1.5] with m = 1 → [0, 3, 1, 0]
    assert pairwise.hinge(C, R, margin=1.0).item() == pytest.approx(1.0)


def test_focal_hand_computed_and_gamma_zero_is_bt():
    delta = (C - R).tolist()
    expected = 0.0
    for d in delta:
        p = 1 / (1 + math.exp(-d))
        expected += (1 - 2 * max(0.0, p - 0.5)) ** 2 * softplus(-d)
    assert pairwise.focal(C, R, gamma=2.0).item() == pytest.approx(expected / 4)
    assert pairwise.focal(C, R, gamma=0.0).item() == pytest.approx(bt_by_hand(C, R))


def test_focal_log_barrier_hand_computed():
    c, r = torch.tensor([1.0], dtype=torch.float64), torch.tensor([-2.0], dtype=torch.float64)
    barrier = (-math.log(4) - math.log(6)) + (-math.log(7) - math.log(3))
    expected = pairwise.focal(c, r, gamma=2.0).item() + 0.01 * barrier
    assert pairwise.focal(c, r, gamma=2.0, barrier_weight=0.01).item() == pytest.approx(expected)


def test_label_smoothing_and_robust_bt():
    assert pairwise.label_smoothing(C, R, epsilon=0.0).item() == pytest.approx(bt_by_hand(C, R))
    assert pairwise.robust_bt(C, R, epsilon=0.0).item() == pytest.approx(bt_by_hand(C, R))
    eps = 0.2
    smooth = sum((1 - eps) * softplus(-d) + eps * softplus(d) for d in (C - R).tolist()) / 4
    robust = sum(((1 - eps) * softplus(-d) - eps * softplus(d)) / (1 - 2 * eps) for d in (C - R).tolist()) / 4
    assert pairwise.label_smoothing(C, R, epsilon=eps).item() == pytest.approx(smooth)
    assert pairwise.robust_bt(C, R, epsilon=eps).item() == pytest.approx(robust)


def test_label_smoothing_optimum_is_one_minus_epsilon():
    delta = torch.tensor([0.0], requires_grad=True)
    opt = torch.optim.LBFGS([delta], lr=0.5, max_iter=200)

    def closure():
        opt.zero_grad()
        loss = pairwise.label_smoothing(delta, torch.zeros(1), epsilon=0.1)
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.sigmoid(delta).item() == pytest.approx(0.9, abs=1e-3)


def test_centering_adds_eta_times_squared_sum():
    eta = 0.05
    expected = bt_by_hand(C, R) + eta * ((C + R) ** 2).mean().item()
    assert pairwise.bt_centered(C, R, coefficient=eta).item() == pytest.approx(expected)


def test_classification_hand_computed():
    expected = sum(softplus(-a) + softplus(b) for a, b in zip(C.tolist(), R.tolist())) / 4
    assert pairwise.classification(C, R).item() == pytest.approx(expected)


def test_triplet_aux_hand_computed():
    h_x = torch.zeros(2, 2, dtype=torch.float64)
    h_c = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=torch.float64)  # distances 5, 1
    h_r = torch.tensor([[0.0, 1.0], [0.0, 3.0]], dtype=torch.float64)  # distances 1, 3
    c, r = C[:2], R[:2]
    # triplet: max(0, 5 − 1 + 1) = 5 ; max(0, 1 − 3 + 1) = 0 → mean 2.5
    expected = bt_by_hand(c, r) + 0.1 * 2.5
    assert pairwise.triplet_aux(c, r, h_c, h_r, h_x, margin=1.0, weight=0.1).item() == pytest.approx(expected)


def test_k2_listwise_losses_equal_bt():
    scores = torch.stack([C, R], dim=1)  # response 0 is chosen
    order = torch.tensor([[0, 1]] * 4)
    bt = bt_by_hand(C, R)
    assert listwise.plackett_luce(scores, order).item() == pytest.approx(bt)
    assert listwise.kwise_allpairs(scores, order).item() == pytest.approx(bt)
    assert listwise.best_of_k(scores, order).item() == pytest.approx(bt)
    # Order matters: reversing it gives BT with the roles swapped.
    assert listwise.plackett_luce(scores, torch.tensor([[1, 0]] * 4)).item() == pytest.approx(bt_by_hand(R, C))


def test_plackett_luce_hand_computed_k3():
    scores = torch.tensor([[1.0, 3.0, 2.0]], dtype=torch.float64)
    order = torch.tensor([[1, 2, 0]])  # ranked scores 3, 2, 1
    expected = -((3 - math.log(math.exp(3) + math.exp(2) + math.exp(1))) + (2 - math.log(math.exp(2) + math.exp(1))))
    assert listwise.plackett_luce(scores, order).item() == pytest.approx(expected)
    pairs = [(3, 2), (3, 1), (2, 1)]
    assert listwise.kwise_allpairs(scores, order).item() == pytest.approx(sum(softplus(-(a - b)) for a, b in pairs) / 3)
    assert listwise.best_of_k(scores, order).item() == pytest.approx(
        -(3 - math.log(math.exp(1) + math.exp(3) + math.exp(2))))


def test_regression_losses_hand_computed():
    assert regression.mse_rating(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])).item() == pytest.approx(2.5)
    v = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert regression.mse_multiattr(v, a).item() == pytest.approx((5 + 2) / 2)


@pytest.mark.parametrize("name", LOSSES.names())
def test_gradcheck_every_loss(name):
    spec = losses.get(name)
    params = losses.hyperparameters(spec, {"hinge_margin": 1.0, "focal_gamma": 2.0, "focal_barrier_weight": 0.01,
                                           "label_smoothing": 0.1, "robust_epsilon": 0.1, "center_coefficient": 0.01,
                                           "triplet_margin": 1.0, "triplet_weight": 0.1})
    torch.manual_seed(0)

    def t(*shape):
        return (torch.randn(*shape, dtype=torch.float64) * 0.7).requires_grad_(True)

    if spec.label_shape == "pairs":
        inputs = [t(5), t(5)]
        if "margin" in spec.batch_inputs:
            inputs.append(torch.rand(5, dtype=torch.float64))
        if "h_prompt" in spec.batch_inputs:
            inputs += [t(5, 3), t(5, 3), t(5, 3)]
        fn = spec.fn
    elif spec.label_shape == "rankings":
        order = torch.stack([torch.randperm(4) for _ in range(3)])
        inputs = [t(3, 4)]

        def fn(scores, **kw):
            return spec.fn(scores, order, **kw)
    else:
        inputs = [t(4, spec.head_dim) if spec.head_dim > 1 else t(4), torch.rand(4, *(
            [spec.head_dim] if spec.head_dim > 1 else []), dtype=torch.float64)]
        fn = spec.fn
    assert torch.autograd.gradcheck(lambda *x: fn(*x, **params), tuple(inputs))


def test_call_maps_batches_by_shape():
    spec = losses.get("bt_margin")
    batch = {"chosen": C, "rejected": R, "margin": torch.zeros(4, dtype=torch.float64)}
    assert losses.call(spec, batch, {}).item() == pytest.approx(bt_by_hand(C, R))


def test_unknown_loss_names_the_known_ones():
    with pytest.raises(KeyError, match="bt_margin"):
        losses.get("nope")


def test_loss_study_config_covers_eight_losses_three_seeds():
    from pathlib import Path

    study = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/experiments/loss-study.yaml").read_text())
    assert len(study["reward"]["losses"]) >= 8 and len(study["seeds"]) >= 3
    assert set(itertools.chain(study["reward"]["losses"])) <= set(LOSSES)
