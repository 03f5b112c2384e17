"""Every rule's gradients against its formula, worked out by hand in float64."""

import copy
import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import biofa
from biofa import functional
from biofa.layers import Conv2d, Linear

TOL = dict(rtol=1e-5, atol=1e-5)
W_SHAPED = ["bp", "fa", "usf", "brsf", "frsf", "kp"]


#: float64 by default, so that the formulas hold to tight tolerances (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("float64")


@pytest.fixture(autouse=True)
def _on_both_backends(backend):
    """Every formula holds for both backends (``backend``, tests/conftest.py)."""
    return backend


def test_the_compiled_backend_builds_where_it_is_required(backend):
    """Where it does not build, every test of it skips; CI sets BIOFA_REQUIRE_NATIVE=1 on
    machines with a C++ compiler so that a broken build fails instead of hiding."""
    if backend == "python":
        pytest.skip("about the compiled backend")
    if os.environ.get("BIOFA_REQUIRE_NATIVE") != "1":
        pytest.skip("BIOFA_REQUIRE_NATIVE is not 1")
    assert functional.compiled() is not None


@pytest.mark.parametrize("method", ["fa", "dfa", "usf", "frsf", "kp"])
@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("clip", [None, 0.05])
def test_backends_agree_bit_for_bit(method, kind, clip, backend, monkeypatch):
    if backend == "python":
        pytest.skip("compares the compiled backend with the Python one")
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    if kind == "linear":
        net, x = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3, bias=False)), (4, 6)
    else:
        net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.Tanh(),
                            nn.Conv2d(3, 3, 3, stride=2), nn.Flatten())
        x = (4, 2, 6, 6)
    biofa.convert(net, method, gradient_clip=clip, **({"input_size": x[1:]} if method == "dfa" else {}))
    inputs = torch.randn(*x)
    grads = []
    for chosen in (functional.backend(), functional._Python):
        monkeypatch.setattr(functional, "_backend", chosen)
        model, data = copy.deepcopy(net), inputs.clone().requires_grad_()
        model(data).pow(2).sum().backward()
        grads.append([data.grad] + [p.grad for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def expected_feedback(layer):
    """The B each rule must use, rebuilt from its definition."""
    W = layer.weight.detach()
    if layer.method == "bp":
        return W
    if layer.method in ("fa", "kp"):
        return layer.feedback_weight.detach()
    if layer.method == "usf":
        fan_in = W[0].numel()
        fan_out = W.shape[0] * W[0, 0].numel() if W.dim() > 2 else W.shape[0]
        return torch.sign(W) * math.sqrt(2.0 / (fan_in + fan_out))  # xavier std
    if layer.method in ("frsf", "brsf"):
        return layer.feedback_magnitude.abs() * torch.sign(W)
    raise AssertionError(layer.method)


@pytest.mark.parametrize("method", W_SHAPED)
def test_linear_gradients_follow_the_formula(method):
    torch.manual_seed(0)
    layer = Linear(7, 5, method=method, init="xavier")
    layer.bias.data.normal_()
    x = torch.randn(4, 3, 7, requires_grad=True)       # N-D input: (batch, tokens, features)
    G = torch.randn(4, 3, 5)                           # dL/dy
    y = layer(x)
    B = expected_feedback(layer)                       # after forward: brsf drew its M there
    (y * G).sum().backward()

    X2, G2 = x.detach().reshape(-1, 7), G.reshape(-1, 5)
    torch.testing.assert_close(y, x @ layer.weight.T + layer.bias, **TOL)
    torch.testing.assert_close(layer.weight.grad, G2.T @ X2, **TOL)
    torch.testing.assert_close(layer.bias.grad, G2.sum(0), **TOL)
    torch.testing.assert_close(x.grad, G @ B, **TOL)
    if method == "kp":
        torch.testing.assert_close(layer.feedback_weight.grad, G2.T @ X2, **TOL)
        assert layer.feedback_weight.grad.data_ptr() != layer.weight.grad.data_ptr()
    if method != "bp":
        assert not torch.allclose(x.grad, G @ layer.weight.detach())


def conv_by_hand(x, W, G, B, stride, padding, dilation):
    """Weight and input gradients of a convolution written as a matrix product (unfold)."""
    N, _, H, Wd = x.shape
    k = W.shape[2:]
    cols = F.unfold(x, k, dilation=dilation, padding=padding, stride=stride)  # N, C*kh*kw, P
    G2 = G.reshape(N, W.shape[0], -1)                                         # N, O, P
    grad_W = torch.einsum("nop,nkp->ok", G2, cols).reshape(W.shape)
    grad_cols = torch.einsum("ok,nop->nkp", B.reshape(B.shape[0], -1), G2)
    grad_x = F.fold(grad_cols, (H, Wd), k, dilation=dilation, padding=padding, stride=stride)
    return grad_W, grad_x


@pytest.mark.parametrize("method", W_SHAPED)
def test_conv_gradients_follow_the_formula(method):
    torch.manual_seed(1)
    stride, padding, dilation = (2, 1), (1, 2), (1, 2)
    layer = Conv2d(3, 4, (3, 3), stride, padding, dilation, method=method, init="xavier")
    x = torch.randn(2, 3, 9, 10, requires_grad=True)
    y = layer(x)
    B = expected_feedback(layer)
    G = torch.randn_like(y)
    (y * G).sum().backward()

    grad_W, grad_x = conv_by_hand(x.detach(), layer.weight.detach(), G, B, stride, padding, dilation)
    torch.testing.assert_close(layer.weight.grad, grad_W, **TOL)
    torch.testing.assert_close(layer.bias.grad, G.sum((0, 2, 3)), **TOL)
    torch.testing.assert_close(x.grad, grad_x, **TOL)
    if method == "kp":
        torch.testing.assert_close(layer.feedback_weight.grad, grad_W, **TOL)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_dfa_gradients_follow_the_formula(kind):
    """Two layers: the hidden one gets (e B_1) * relu'(a_1), the input gets e B_0."""
    torch.manual_seed(2)
    if kind == "linear":
        net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        x = torch.randn(5, 6, requires_grad=True)
        biofa.convert(net, "dfa", init="xavier")
    else:
        net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 3))
        x = torch.randn(5, 2, 4, 4, requires_grad=True)
        biofa.convert(net, "dfa", input_size=(2, 4, 4), init="xavier")
    first, last = net[0], net[-1]
    first.bias.data.normal_()
    y = net(x)
    e = torch.randn_like(y)
    (y * e).sum().backward()

    a1 = first(x.detach()) if kind == "linear" else F.conv2d(x.detach(), first.weight, first.bias, padding=1)
    h1 = torch.relu(a1)
    B1, B0 = last.feedback_weight, first.feedback_weight
    assert B1.shape == (3, h1[0].numel()) and B0.shape == (3, x[0].numel())
    torch.testing.assert_close(last.weight.grad, e.T @ h1.reshape(5, -1), **TOL)
    delta1 = (e @ B1).reshape(h1.shape) * (a1 > 0)
    if kind == "linear":
        torch.testing.assert_close(first.weight.grad, delta1.T @ x.detach(), **TOL)
    else:
        grad_W, _ = conv_by_hand(x.detach(), first.weight.detach(), delta1, first.weight, 1, 1, 1)
        torch.testing.assert_close(first.weight.grad, grad_W, **TOL)
    torch.testing.assert_close(x.grad, (e @ B0).reshape(x.shape), **TOL)


def test_dfa_input_gradient_in_eval_keeps_no_state():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))
    biofa.convert(net, "dfa", input_size=(1, 8, 8))
    hub = net[0].rule.hub
    F.cross_entropy(net(torch.randn(6, 1, 8, 8)), torch.randint(0, 5, (6,))).backward()
    assert hub.entries == []
    net.eval()
    x = torch.rand(3, 1, 8, 8)

    def input_grad():
        xr = x.clone().requires_grad_(True)
        F.cross_entropy(net(xr), torch.tensor([0, 1, 2])).backward()
        return xr.grad

    g1, g2 = input_grad(), input_grad()
    assert hub.entries == []
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)
    xr = x.clone().requires_grad_(True)
    logits = net(xr)
    e = torch.autograd.grad(F.cross_entropy(logits, torch.tensor([0, 1, 2])), logits, retain_graph=True)[0]
    torch.testing.assert_close(g1, (e @ net[0].feedback_weight).reshape(x.shape), **TOL)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_bp_is_plain_autograd_bit_for_bit(kind):
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(4)
    ref = nn.Linear(9, 4) if kind == "linear" else nn.Conv2d(3, 5, 3, padding=1)
    ours = Linear.from_module(ref, "bp") if kind == "linear" else Conv2d.from_module(ref, "bp")
    ref_w = ref.weight.detach().clone().requires_grad_(True)
    x = torch.randn(4, 9) if kind == "linear" else torch.randn(2, 3, 6, 6)
    y = ours(x)
    y_ref = (F.linear(x, ref_w, ref.bias.detach()) if kind == "linear"
             else F.conv2d(x, ref_w, ref.bias.detach(), padding=1))
    assert torch.equal(y, y_ref)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    assert torch.equal(ours.weight.grad, ref_w.grad)


CONV_VARIANTS = [
    dict(kernel_size=3, padding=1, groups=2),
    dict(kernel_size=3, padding=2, dilation=2, bias=False),
    dict(kernel_size=(2, 3), padding="same"),
    dict(kernel_size=3, padding="valid", stride=2),
    dict(kernel_size=3, padding=1, padding_mode="reflect"),
    dict(kernel_size=3, padding=(1, 2), padding_mode="replicate"),
    dict(kernel_size=3, padding=1, padding_mode="circular"),
]


@pytest.mark.parametrize("options", CONV_VARIANTS, ids=str)
def test_fa_with_b_equal_to_w_is_backprop_for_every_conv_variant(options):
    """FA's backward through B=W must reproduce torch's own Conv2d on every configuration."""
    torch.manual_seed(5)
    ref = nn.Conv2d(4, 6, **options)
    fa = Conv2d.from_module(ref, "fa")
    fa.feedback_weight.copy_(ref.weight.detach())
    plain = nn.Conv2d(4, 6, **options)
    plain.load_state_dict(ref.state_dict())
    for x in (torch.randn(2, 4, 7, 8), torch.randn(4, 7, 8)):  # batched and unbatched
        x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        y1, y2 = fa(x1), plain(x2)
        torch.testing.assert_close(y1, y2, **TOL)
        G = torch.randn_like(y1)
        (y1 * G).sum().backward()
        (y2 * G).sum().backward()
        torch.testing.assert_close(x1.grad, x2.grad, **TOL)
        torch.testing.assert_close(fa.weight.grad, plain.weight.grad, **TOL)
        fa.weight.grad = plain.weight.grad = None


def test_linear_without_bias():
    layer = Linear(4, 3, bias=False, method="fa")
    x = torch.randn(2, 4, requires_grad=True)
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(2, 3) @ layer.feedback_weight, **TOL)


def test_gradient_clip_clamps_the_incoming_error():
    layer = Linear(3, 2, method="fa", gradient_clip=0.5)
    x = torch.randn(4, 3, requires_grad=True)
    G = torch.tensor([[3.0, -0.2]] * 4)
    (layer(x) * G).sum().backward()
    clipped = G.clamp(-0.5, 0.5)
    torch.testing.assert_close(layer.weight.grad, clipped.T @ x.detach(), **TOL)
    torch.testing.assert_close(x.grad, clipped @ layer.feedback_weight, **TOL)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_the_backward_node_behaves_like_torchs_own(kind):
    """Saved-tensor hooks see what is saved, a partial ``autograd.grad`` computes and
    accumulates nothing else, and a freed graph refuses a second backward pass."""
    torch.manual_seed(0)
    if kind == "linear":
        layer, x = Linear(4, 3, method="kp"), torch.randn(2, 4, requires_grad=True)
    else:
        layer, x = Conv2d(2, 3, 3, method="kp"), torch.randn(2, 2, 5, 5, requires_grad=True)
    packed = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t, lambda t: t):
        out = layer(x)
    assert len(packed) == 2 and packed[0] is x and packed[1] is layer.feedback_weight
    (grad_x,) = torch.autograd.grad(out.sum(), x)
    assert layer.weight.grad is None and layer.feedback_weight.grad is None
    if kind == "linear":
        torch.testing.assert_close(grad_x, torch.ones(2, 3) @ layer.feedback_weight, **TOL)
    out = layer(x)
    out.sum().backward()
    torch.testing.assert_close(layer.weight.grad, layer.feedback_weight.grad, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        out.sum().backward()


def test_a_job_does_not_wait_for_a_build_another_process_runs(tmp_path, monkeypatch, caplog):
    """BIOFA_NATIVE=ready (the workflow's jobs): while torch's build lock of the extension is
    held, load() returns at once and the Python functions run; the default would wait."""
    import logging
    import time

    from biofa import _native

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("BIOFA_NATIVE", "ready")
    import subprocess
    import sys

    lock = _native._build_lock()
    assert lock == _native.build_directory() / "lock" and lock.parent.parent == tmp_path / _native.NAME
    lock.write_text("")  # the file alone (torch leaves it behind after a build) is no build
    assert not _native._held(lock)
    holder = subprocess.Popen(  # a process holding the lock as torch's build does
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1]); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(lock)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _native._held(lock)
        start = time.perf_counter()
        with caplog.at_level(logging.WARNING, logger="biofa"):
            assert _native.load() is None
        assert time.perf_counter() - start < 5
    finally:
        holder.kill()
        holder.wait()
    assert "another process is building" in caplog.text and str(lock) in caplog.text
    assert not _native._held(lock)  # released when the holder died
