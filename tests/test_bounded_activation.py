"""DRTP and DKP learn digits on LeNet with tanh, and not on the ReLU LeNet.

DRTP's hidden signal is a fixed projection of the target that never shrinks as the error
does, and DKP's learned B_l grows unchecked, so with ReLU the hidden layers are driven
without bound; tanh saturates. That is why the extensions study trains every rule on
``lenet_mnist_tanh`` (config/extensions.yaml). Deterministic: the same numbers every run;
the margins are wide (chance is 90 % error, tanh reaches 2-20 % here).
"""

import pytest
import torch
import torch.nn.functional as F

import biofa
from biofa.models import build
from biofa.study import data


def validation_error(method: str, model: str, epochs: int, tmp_path) -> float:
    """% validation error of ``method`` on ``model`` after ``epochs`` of SGD on digits."""
    loaders = data.loaders("digits", tmp_path, batch_size=32, seed=0)
    torch.manual_seed(0)
    net = build(model)
    biofa.convert(net, method, init="xavier", input_size=(1, 32, 32), constrain_weights=True)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9)
    for _ in range(epochs):
        for x, y in loaders["train"]:
            optimizer.zero_grad()
            F.cross_entropy(net(x), y).backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        wrong = sum(int((net(x).argmax(1) != y).sum()) for x, y in loaders["val"])
    return 100 * wrong / len(loaders["val"].dataset)


@pytest.mark.parametrize("method, epochs, tanh_below", [("drtp", 10, 30), ("dkp", 5, 10)])
def test_direct_rules_need_a_bounded_activation(method, epochs, tanh_below, tmp_path):
    with_tanh = validation_error(method, "lenet_mnist_tanh", epochs, tmp_path)
    with_relu = validation_error(method, "lenet_mnist", epochs, tmp_path)
    assert with_tanh < tanh_below, with_tanh
    assert with_relu > 80, with_relu  # chance: 90 %
