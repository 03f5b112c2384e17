"""How the rules behave over training: redraws, fixed magnitudes, Kolen-Pollack, options."""

import copy
import math
import os

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import biofa
from biofa.layers import Conv2d, Linear
from biofa.metrics import weight_alignment


def mlp(method, **options):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    biofa.convert(net, method, **options)
    return net


def sgd_step(net, opt, x, y):
    opt.zero_grad()
    F.cross_entropy(net(x), y).backward()
    opt.step()


def test_brsf_redraws_once_per_optimiser_step_and_never_in_eval():
    net = mlp("brsf")
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    layer = net[0]
    magnitudes = []
    for _ in range(3):
        sgd_step(net, opt, x, y)
        magnitudes.append(layer.feedback_magnitude.clone())
    assert all(not torch.equal(a, b) for a, b in zip(magnitudes, magnitudes[1:]))
    # several forward/backward passes without a step (gradient accumulation): one M
    before = layer.feedback_magnitude.clone()
    for _ in range(3):
        F.cross_entropy(net(x), y).backward()
    assert not torch.equal(layer.feedback_magnitude, before)  # the first pass after the step redrew
    drawn = layer.feedback_magnitude.clone()
    F.cross_entropy(net(x), y).backward()
    assert torch.equal(layer.feedback_magnitude, drawn)
    # evaluation never redraws, even after a step and with gradients enabled (attacks)
    opt.step()
    net.eval()
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(net(xr), y).backward()
    with torch.no_grad():
        net(x)
    assert torch.equal(layer.feedback_magnitude, drawn)
    assert (layer.feedback_magnitude >= 0).all()


@pytest.mark.parametrize("method", ["usf", "frsf", "brsf"])
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_a_graph_built_before_b_was_rebuilt_refuses_to_backpropagate(method, compiled,
                                                                      monkeypatch):
    """B is rebuilt in place after a step; a graph still holding the old B must fail loudly
    (autograd's version check) instead of silently sending errors through the new one."""
    from biofa import functional

    if compiled and functional.compiled() is None:
        pytest.skip("the compiled feedback functions did not build on this machine")
    if not compiled:
        monkeypatch.setattr(functional, "_backend", functional._Python)
    net = mlp(method)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    stale = F.cross_entropy(net(x), y)
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.weight.neg_()  # every sign flips: B must change
    F.cross_entropy(net(x), y).backward()  # the new graph rebuilt B (brsf: and redrew M)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        stale.backward()


@pytest.mark.parametrize("optimizer", [
    lambda params: torch.optim.SGD(params, lr=0.5, momentum=0.9, fused=True),
    lambda params: torch.optim.Adam(params, lr=0.5, fused=True),
    lambda params: torch.optim.SGD(params, lr=0.5, foreach=True),
], ids=["sgd-fused", "adam-fused", "sgd-foreach"])
def test_every_optimiser_step_rebuilds_b_redraws_m_and_constrains_w(optimizer):
    """Fused optimisers write the weights without bumping their version counters; the
    layers must see their steps all the same."""
    torch.manual_seed(0)
    nets = {method: mlp(method) for method in ("usf", "brsf")}
    nets["fa"] = mlp("fa", constrain_weights=True)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    for method, net in nets.items():
        layer = net[0]
        opt = optimizer(net.parameters())
        norm = layer.weight.detach().norm().item()
        drawn = []
        for _ in range(3):
            before = layer.weight.detach().clone()
            sgd_step(net, opt, x, y)
            assert not torch.equal(layer.weight.detach(), before)  # the step changed W
            net(x)  # the next training forward pass sees the step
            if method == "fa":
                assert layer.weight.detach().norm().item() == pytest.approx(norm, rel=1e-5)
                continue
            weight = layer.weight.detach()
            magnitude = (layer.feedback_magnitude if method == "brsf"
                         else 1 / math.sqrt(3 * 6))  # uSF: torch's default init std, fan-in 6
            torch.testing.assert_close(layer.feedback_matrix(), magnitude * torch.sign(weight))
            if method == "brsf":
                drawn.append(layer.feedback_magnitude.clone())
        assert all(not torch.equal(a, b) for a, b in zip(drawn, drawn[1:]))


def test_the_fused_step_hook_is_registered_by_the_first_layer_not_by_import():
    """``import biofa`` leaves every optimiser of the process alone; making a layer, or
    unpickling one in a fresh interpreter, registers the hook that counts fused steps."""
    import pickle
    import subprocess
    import sys

    script = """
import pickle, sys
import torch
from torch.optim.optimizer import _global_optimizer_post_hooks as hooks
import biofa
assert len(hooks) == 0, "import biofa registered an optimiser hook"
if sys.argv[1] == "make":
    biofa.Linear(2, 2, method="usf")
    biofa.Linear(2, 2, method="fa")
else:
    pickle.loads(bytes.fromhex(sys.argv[1]))
assert len(hooks) == 1, len(hooks)
"""
    pickled = pickle.dumps(Linear(3, 2, method="usf")).hex()
    for how in ("make", pickled):
        done = subprocess.run([sys.executable, "-c", script, how], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "BIOFA_NATIVE": "0"})
        assert done.returncode == 0, done.stderr


def test_frsf_keeps_its_magnitudes_and_follows_the_sign_of_w():
    net = mlp("frsf")
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    layer = net[0]
    fixed = layer.feedback_magnitude.clone()
    for _ in range(20):
        sgd_step(net, opt, x, y)
    assert torch.equal(layer.feedback_magnitude, fixed)
    torch.testing.assert_close(layer.feedback_matrix(), fixed * torch.sign(layer.weight.detach()))


def test_usf_scale_is_the_init_std():
    layer = Linear(30, 20, method="usf", init="xavier")
    B = layer.feedback_matrix()
    assert torch.allclose(B.abs(), torch.full_like(B, math.sqrt(2 / 50)))
    layer = Conv2d(4, 8, 3, method="usf", init="kaiming")
    assert torch.allclose(layer.feedback_matrix().abs().max(), torch.tensor(math.sqrt(2 / 36)))


@pytest.mark.parametrize("init, std", [("xavier", math.sqrt(2 / (300 + 200))),
                                       ("kaiming", math.sqrt(2 / 300)),
                                       (None, 1 / math.sqrt(3 * 300))])
def test_init_draws_w_and_b_from_the_named_distribution(init, std):
    torch.manual_seed(0)
    layer = Linear(300, 200, method="fa", init=init)
    assert layer.feedback_weight.std().item() == pytest.approx(std, rel=0.03)
    if init is not None:
        assert layer.weight.std().item() == pytest.approx(std, rel=0.03)
        assert torch.count_nonzero(layer.bias) == 0
    assert not torch.equal(layer.weight, layer.feedback_weight)


def test_kolen_pollack_aligns_b_with_w():
    """Regression with weight decay: W - B shrinks by (1 - lr*wd) per step, the angle falls."""
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(10, 20), nn.Tanh(), nn.Linear(20, 5))
    student = nn.Sequential(nn.Linear(10, 20), nn.Tanh(), nn.Linear(20, 5))
    biofa.convert(student, "kp")
    opt = torch.optim.SGD(student.parameters(), lr=0.1, weight_decay=0.05)
    angles = [weight_alignment(student[2])[0]]
    difference = (student[2].weight - student[2].feedback_weight).detach().clone()
    steps = 400
    for _ in range(steps):
        x = torch.randn(32, 10)
        opt.zero_grad()
        F.mse_loss(student(x), teacher(x).detach()).backward()
        opt.step()
    angles.append(weight_alignment(student[2])[0])
    assert angles[0] > 80 and angles[1] < 0.4 * angles[0]
    torch.testing.assert_close(student[2].weight - student[2].feedback_weight,
                               difference * (1 - 0.1 * 0.05) ** steps, rtol=1e-4, atol=1e-6)


def test_fa_keeps_b_fixed_and_out_of_the_optimiser():
    net = mlp("fa")
    assert all(not name.endswith("feedback_weight") for name, _ in net.named_parameters())
    B = net[0].feedback_weight.clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sgd_step(net, opt, torch.randn(4, 6), torch.randint(0, 3, (4,)))
    assert torch.equal(net[0].feedback_weight, B)


def test_constrain_weights_rescales_the_same_parameter():
    net = mlp("fa", constrain_weights=True)
    weight = net[0].weight
    norm = weight.detach().norm().item()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    for _ in range(3):
        sgd_step(net, opt, x, y)
        net(x)
        assert net[0].weight is weight
        assert weight.detach().norm().item() == pytest.approx(norm, rel=1e-5)
    assert opt.param_groups[0]["params"][0] is weight


def test_unknown_method_and_options_are_named():
    with pytest.raises(ValueError, match="unknown method 'fb'.*bp, brsf, dfa, dkp, drtp, fa, frsf, kp, usf, wm"):
        biofa.convert(nn.Linear(2, 2), "fb")
    with pytest.raises(ValueError, match="'lr'.*valid options: init, gradient_clip, constrain_weights"):
        biofa.convert(nn.Sequential(nn.Linear(2, 2)), "fa", lr=0.1)
    with pytest.raises(ValueError, match="direct rules only: dfa, drtp, dkp"):
        biofa.convert(nn.Sequential(nn.Linear(2, 2)), "fa", num_classes=2)
    with pytest.raises(ValueError, match="unknown init 'glorot'.*xavier"):
        Linear(2, 2, method="fa", init="glorot")
    with pytest.raises(ValueError, match="gradient_clip"):
        Linear(2, 2, method="fa", gradient_clip=-1)
    with pytest.raises(ValueError, match="input_size"):
        biofa.convert(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2)), "dfa")
    with pytest.raises(ValueError, match="num_classes=4 but the output layer .0. gives 2 values"):
        biofa.convert(nn.Sequential(nn.Linear(3, 2)), "dfa", num_classes=4)


def test_convert_keeps_the_forward_function_and_reports():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    reference = copy.deepcopy(model).eval()
    report = biofa.convert(model, "usf")
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), reference(x))
    assert len(report.converted) == 21  # 20 convolutions and the fc layer
    assert ("fc", "Linear") in report.converted
    assert any(kind == "BatchNorm2d" for _, kind in report.kept)
    assert "21 layers now learn with 'usf'" in str(report)


@pytest.mark.parametrize("method", sorted(biofa.METHODS))
def test_torchvision_resnet18_trains_one_step(method):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    options = {"input_size": (3, 32, 32)} if biofa.METHODS[method].direct else {}
    biofa.convert(model, method, **options)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert math.isfinite(loss.item())
    assert all(not torch.equal(p, before[name]) for name, p in model.named_parameters()
               if name.endswith("weight") and "bn" not in name)


def test_gpu_free_half_precision_backward_matches_dtype():
    """Under autocast the error and the feedback meet in the same dtype."""
    layer = Linear(8, 4, method="fa")
    x = torch.randn(3, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and layer.weight.grad.dtype == torch.float32
    torch.testing.assert_close(x.grad, torch.ones(3, 4) @ layer.feedback_weight, rtol=2e-2, atol=2e-2)


def test_dfa_projects_from_the_output_layer_even_when_something_follows_it():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    biofa.convert(net, "dfa", input_size=(2, 5, 5))
    assert net[2].feedback_weight.shape == (3 * 25, 4 * 25)
    x = torch.randn(3, 2, 5, 5, requires_grad=True)
    F.cross_entropy(net(x), torch.tensor([0, 1, 2])).backward()
    assert x.grad.shape == x.shape and net[0].weight.grad.abs().sum() > 0


def test_attention_projections_are_left_alone():
    model = nn.Sequential(nn.Linear(4, 8), nn.TransformerEncoderLayer(8, 2, 16, batch_first=True))
    report = biofa.convert(model, "fa")
    names = [name for name, _ in report.converted]
    assert "1.self_attn.out_proj" not in names and "1.linear1" in names
    assert type(model[1].self_attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear


@pytest.mark.parametrize("method", ["fa", "dfa", "usf", "brsf", "frsf", "kp"])
def test_channels_last_and_mixed_precision_keep_the_rule(method):
    """The GPU options (channels_last, autocast) change memory layout and precision only:
    gradients equal the float32 contiguous ones (exactly, and to bfloat16 precision). Tanh,
    not ReLU: a ReLU whose input rounds across zero would change the function itself."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 4, 3), nn.Tanh(),
                        nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    biofa.convert(net, method, **({"input_size": (3, 6, 6)} if method == "dfa" else {}))
    x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 5, (8,))

    def gradients(model, inputs, autocast=False):
        torch.manual_seed(1)  # brsf draws its magnitudes at this first training pass
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(model(inputs), y)
        loss.backward()
        return {name: p.grad for name, p in model.named_parameters()}

    reference = gradients(copy.deepcopy(net), x)
    last = copy.deepcopy(net).to(memory_format=torch.channels_last)
    for name, grad in gradients(last, x.contiguous(memory_format=torch.channels_last)).items():
        torch.testing.assert_close(grad, reference[name], rtol=1e-5, atol=1e-6)
    for name, grad in gradients(copy.deepcopy(net), x, autocast=True).items():
        assert grad.dtype == torch.float32
        scale = reference[name].abs().max()
        torch.testing.assert_close(grad / scale, reference[name] / scale, rtol=0, atol=0.02)


def test_brsf_magnitudes_are_uniform_and_the_same_from_both_backends(monkeypatch):
    from biofa import functional
    from biofa.methods._fast import hashed_uniform

    bound = 0.3
    m = hashed_uniform((400, 250), seed=12345, bound=bound, like=torch.empty(0))
    assert m.min() >= 0 and m.max() < bound
    counts = torch.histc(m, bins=10, min=0, max=bound) / m.numel()
    assert torch.allclose(counts, torch.full((10,), 0.1), atol=0.005)  # 100k draws: +-0.003
    assert abs(torch.corrcoef(torch.stack([m.flatten()[:-1], m.flatten()[1:]]))[0, 1]) < 0.01

    layers, after = [], []
    for chosen in (functional.backend(), functional._Python):
        monkeypatch.setattr(functional, "_backend", chosen)
        torch.manual_seed(0)
        layer = Linear(250, 400, method="brsf", init="xavier")
        torch.manual_seed(1)
        layer(torch.randn(2, 250, requires_grad=True)).sum().backward()
        layers.append(layer)
        after.append(torch.rand(3))  # the seed took the same draws from torch's generator
    assert torch.equal(after[0], after[1])
    assert torch.equal(layers[0].feedback_magnitude, layers[1].feedback_magnitude)
    assert torch.equal(layers[0].feedback_matrix(), layers[1].feedback_matrix())
    xavier_bound = math.sqrt(6 / (250 + 400))
    assert layers[0].feedback_magnitude.max() <= xavier_bound
    assert layers[0].feedback_magnitude.mean().item() == pytest.approx(xavier_bound / 2, rel=0.01)
