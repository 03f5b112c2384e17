"""``biofa.convert`` of a model in any floating dtype, then a training step in that dtype.

A model cast with ``.double()`` (gradient checks) or ``.to(torch.bfloat16)`` (memory) must
convert and learn like a float32 one: the forward output keeps the model's dtype and every
gradient, the feedback path's included, arrives in that dtype. Every rule, both backends
(the compiled C++ functions and the Python ones) where the rule uses them.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import biofa
from biofa import functional, models

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
BACKENDS = ["compiled", "python"]
CUSTOM_BACKWARD = [m for m in biofa.METHODS if m != "bp"]  # bp runs plain autograd


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    """The feedback functions' backend for one test; restored afterwards."""
    if request.param == "compiled":
        if functional.compiled() is None:
            pytest.skip("the compiled feedback functions did not build on this machine")
        monkeypatch.setattr(functional, "_backend", functional.compiled())
    else:
        monkeypatch.setattr(functional, "_backend", functional._Python)
    return request.param


def lenet(method, dtype):
    torch.manual_seed(0)
    model = models.build("lenet_mnist", num_classes=10).to(dtype)
    options = {"input_size": (1, 32, 32)} if biofa.METHODS[method].direct else {}
    report = biofa.convert(model, method, **options)
    assert len(report.converted) == 5
    return model


def params_of(model):
    return {name: p for name, p in model.named_parameters()}


def train_step(model, dtype):
    x = torch.rand(4, 1, 32, 32, dtype=dtype, requires_grad=True)
    y = torch.tensor([0, 3, 7, 9])
    out = model(x)
    assert out.dtype == dtype and out.shape == (4, 10)
    loss = F.cross_entropy(out.float(), y)  # the loss in float32, as autocast would
    loss.backward()
    return x


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("method", sorted(biofa.METHODS))
def test_every_rule_converts_and_trains_in_the_models_dtype(method, dtype, backend, request):
    if backend == "python" and method not in CUSTOM_BACKWARD:
        pytest.skip("bp never calls the feedback functions")
    model = lenet(method, dtype)
    for name, buffer in model.named_buffers():
        if buffer.is_floating_point():
            assert buffer.dtype == dtype, name  # B, brSF's M, DFA's projections
    x = train_step(model, dtype)
    assert x.grad is not None and x.grad.dtype == dtype
    assert torch.isfinite(x.grad.float()).all()
    for name, p in params_of(model).items():
        assert p.dtype == dtype, name
        assert p.grad is not None, name
        assert p.grad.dtype == dtype, name
        assert torch.isfinite(p.grad.float()).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())
    # and an optimiser step, then a second forward (refreshes B for the sign rules)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    opt.step()
    opt.zero_grad()
    train_step(model, dtype)
    assert all(p.grad.dtype == dtype for p in model.parameters())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dfa_probe_keeps_parameters_and_mode(dtype):
    """The dry run that finds DFA's shapes changes nothing: dtype, values, train mode."""
    torch.manual_seed(0)
    model = models.build("lenet_mnist").to(dtype).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    biofa.convert(model, "dfa", input_size=(1, 32, 32))
    assert model.training
    after = model.state_dict()
    for key, value in before.items():
        assert after[key].dtype == dtype and torch.equal(after[key], value), key


def test_dfa_probe_takes_its_dtype_from_the_first_floating_parameter():
    """Not from the first parameter, which may be an integer counter."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(),
                          nn.Linear(2 * 4 * 4, 3)).double()
    model.register_parameter("steps", nn.Parameter(torch.zeros((), dtype=torch.long),
                                                   requires_grad=False))
    assert next(model.parameters()).dtype == torch.long
    biofa.convert(model, "dfa", input_size=(1, 6, 6))
    out = model(torch.rand(2, 1, 6, 6, dtype=torch.float64))
    assert out.dtype == torch.float64


@pytest.mark.parametrize("method", ["fa", "kp", "usf", "frsf", "brsf"])
def test_float64_feedback_gradient_of_a_linear_layer_is_the_formula(method, backend):
    """grad_x = grad_y @ B and grad_W = grad_yᵀ x, exactly, in float64."""
    torch.manual_seed(0)
    layer = nn.Linear(5, 3).double()
    net = nn.Sequential(layer)
    biofa.convert(net, method)
    converted = net[0]
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    grad_y = torch.randn(4, 3, dtype=torch.float64)
    y = net(x)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, x.detach() @ converted.weight.detach().t() + converted.bias.detach(),
                               rtol=0, atol=1e-12)
    B = converted.feedback_matrix()  # the B of this forward pass (brSF drew its M in it)
    assert B.dtype == torch.float64 and B.shape == converted.weight.shape
    y.backward(grad_y)
    torch.testing.assert_close(x.grad, grad_y @ B, rtol=0, atol=1e-12)
    torch.testing.assert_close(converted.weight.grad, grad_y.t() @ x.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(converted.bias.grad, grad_y.sum(0), rtol=0, atol=1e-12)
    if method == "kp":  # B learns from W's own gradient
        torch.testing.assert_close(converted.feedback_weight.grad, converted.weight.grad)
    if method == "fa":
        assert not torch.allclose(B, converted.weight.detach())  # really not backprop


def test_float64_dfa_hidden_error_is_the_output_error_through_b(backend):
    """DFA in float64: the hidden layer's input gets e @ B_l, e the output error."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 3)).double()
    biofa.convert(net, "dfa")
    x = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    e = torch.randn(2, 3, dtype=torch.float64)
    net.eval()  # outside training the first layer's input is handed over too
    out = net(x)
    assert out.dtype == torch.float64
    out.backward(e)
    B0 = net[0].feedback_weight
    assert B0.dtype == torch.float64 and B0.shape == (3, 5)
    torch.testing.assert_close(x.grad, e @ B0, rtol=0, atol=1e-12)
    h = x.detach() @ net[0].weight.detach().t() + net[0].bias.detach()
    torch.testing.assert_close(net[1].weight.grad, e.t() @ h, rtol=0, atol=1e-12)
    B1 = net[1].feedback_weight  # the error the hidden layer's output receives
    torch.testing.assert_close(net[0].weight.grad, (e @ B1).t() @ x.detach(), rtol=0, atol=1e-12)
