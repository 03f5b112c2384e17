"""Alignment metrics: known angles, and measurements that leave the model untouched."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import biofa
from biofa.metrics import alignment, angle, gradient_alignment, weight_alignment


def convnet(method):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3),
                        nn.Flatten(), nn.Linear(4 * 36, 8), nn.ReLU(), nn.Linear(8, 3))
    biofa.convert(net, method, **({"input_size": (1, 8, 8)} if method == "dfa" else {}))
    return net


def batch():
    torch.manual_seed(1)
    return torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))


def test_angle_of_known_vectors():
    assert angle(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])) == pytest.approx(45.0)
    assert angle(torch.tensor([1.0, 0.0]), torch.tensor([-2.0, 0.0])) == pytest.approx(180.0)
    assert math.isnan(angle(torch.zeros(3), torch.ones(3)))


def test_bp_is_perfectly_aligned():
    net = convnet("bp")
    for row in alignment(net, *batch()):
        assert row["weight_angle"] == pytest.approx(0.0, abs=1e-3)
        assert row["norm_ratio"] == pytest.approx(1.0)
        assert row["gradient_angle"] == pytest.approx(0.0, abs=1e-3)


def test_usf_weight_angle_matches_the_formula():
    net = convnet("usf")
    W = net[5].weight.detach().double()
    expected = math.degrees(math.acos(W.abs().sum() / (W.norm() * math.sqrt(W.numel()))))
    assert weight_alignment(net[5])[0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("method", ["fa", "dfa", "brsf"])
def test_gradient_alignment_is_exact_at_the_output_and_not_below(method):
    net = convnet(method)
    angles = gradient_alignment(net, *batch())
    assert list(angles) == ["0", "5", "7"]
    assert angles["7"] == pytest.approx(0.0, abs=1e-3)  # the output layer gets the true error
    assert angles["0"] > 5.0 and angles["5"] > 5.0
    if method == "dfa":
        assert all(math.isnan(row["weight_angle"]) for row in alignment(net))


def test_measuring_leaves_no_trace():
    net = convnet("brsf")
    x, y = batch()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    F.cross_entropy(net(x), y).backward()
    opt.step()  # the next training forward would redraw brsf's magnitudes
    state = {k: v.clone() for k, v in net.state_dict().items()}
    grads = {k: p.grad.clone() for k, p in net.named_parameters()}
    rng = torch.get_rng_state()
    gradient_alignment(net, x, y)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert all(torch.equal(p.grad, grads[k]) for k, p in net.named_parameters())
    net(x)  # training goes on exactly as it would have: now the redraw happens
    assert not torch.equal(net[0].feedback_magnitude, state["0.feedback_magnitude"])
