"""Weight Mirror, DRTP and Direct Kolen-Pollack against their formulas, worked out by hand
in float64; the alignment WM and DKP promise; the registry's plugin paths."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from importlib import metadata
from torch import nn
from torch.nn.grad import conv2d_input, conv2d_weight

import biofa
from biofa.methods._fast import stream_seed
from biofa import functional, methods
from biofa.errors import SignalError
from biofa.metrics import alignment, angle
from biofa.methods import FA, PluginError, Registry, Rule, register

close = torch.testing.assert_close


#: float64 by default, so that the formulas hold to tight tolerances (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("float64")


def mlp(method):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    biofa.convert(net, method)
    return net


def convnet(method):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 2, 3, stride=2),
                        nn.Tanh(), nn.Flatten(), nn.Linear(8, 3))
    biofa.convert(net, method, **({"input_size": (2, 6, 6)} if biofa.METHODS[method].direct
                                  else {}))
    return net


def data(shape, seed=1):
    torch.manual_seed(seed)
    return torch.randn(*shape), torch.randint(0, 3, (shape[0],))


def run(net, x, y, loss_fn=F.cross_entropy):
    """Weight grads, B grads, the input gradient and the error of each layer's input."""
    x = x.clone().requires_grad_()
    errors = {}
    hooks = [m.register_full_backward_hook(lambda m, gin, gout, i=i: errors.__setitem__(i, gout[0]))
             for i, m in enumerate(net) if isinstance(m, nn.Tanh)]
    loss_fn(net(x), y).backward()
    for hook in hooks:
        hook.remove()
    return x.grad, errors, net


def tanh_prime(h):
    return 1 - h * h


# ----------------------------------------------------------------------------- wm


def test_wm_gradients_are_fa_formulas_with_its_b(backend):
    net, (x, y) = mlp("wm"), data((7, 4))
    grad_x, errors, _ = run(net, x, y)
    W1, B1, W2, B2, W3, B3 = (t.detach() for m in (net[0], net[2], net[4])
                              for t in (m.weight, m.feedback_weight))
    h1 = torch.tanh(x @ W1.T + net[0].bias)
    h2 = torch.tanh(h1 @ W2.T + net[2].bias)
    e = (F.softmax(h2 @ W3.T + net[4].bias, 1) - F.one_hot(y, 3)) / 7
    d2 = (e @ B3) * tanh_prime(h2)
    d1 = (d2 @ B2) * tanh_prime(h1)
    close(errors[3], e @ B3)
    close(errors[1], d2 @ B2)
    close(net[4].weight.grad, e.T @ h2)
    close(net[2].weight.grad, d2.T @ h1)
    close(net[0].weight.grad, d1.T @ x)
    close(grad_x, d1 @ B1)


def test_wm_conv_error_goes_through_b(backend):
    net, (x, y) = convnet("wm"), data((4, 2, 6, 6))
    grad_x, errors, _ = run(net, x, y)
    c1, c2 = net[0], net[2]
    h1 = torch.tanh(F.conv2d(x, c1.weight, c1.bias, padding=1))
    d1 = errors[1] * tanh_prime(h1)
    close(c1.weight.grad, conv2d_weight(x, c1.weight.shape, d1, padding=1))
    close(grad_x, conv2d_input(x.shape, c1.feedback_weight, d1, padding=1))
    h2 = torch.tanh(F.conv2d(h1, c2.weight, c2.bias, stride=2))
    d2 = errors[3] * tanh_prime(h2)
    close(errors[1], conv2d_input(h1.shape, c2.feedback_weight, d2, stride=2))


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_wm_mirror_step_is_the_formula(kind):
    torch.manual_seed(0)
    layer = (biofa.Linear(5, 4, method="wm") if kind == "linear"
             else biofa.Conv2d(4, 6, 3, dilation=2, groups=2, method="wm"))
    rule, W = layer.rule, layer.weight.detach()
    before = layer.feedback_weight.clone()
    seed, draws = layer.feedback_draws.tolist()  # the layer's own stream
    torch.manual_seed(3)  # not drawn from
    rule.refresh(layer)
    assert layer.feedback_draws.tolist() == [seed, draws + 1]
    generator = torch.Generator().manual_seed(stream_seed(seed, draws))
    n, std = rule.mirror_batch, rule.noise_std
    if kind == "linear":
        noise = torch.randn(n, 5, generator=generator) * std
        correlation = (noise @ W.T).T @ noise / n
    else:  # one 5x5 receptive field (3 taps, dilation 2) per noise image; two groups
        noise = torch.randn(n, 4, 5, 5, generator=generator) * std
        taps = noise[:, :, ::2, ::2]  # (n, 4, 3, 3): what the kernel sees
        correlation = torch.cat([
            torch.einsum("nc,nk->ck", taps[:, 2 * g:2 * g + 2].flatten(1) @ W[3 * g:3 * g + 3]
                         .flatten(1).T, taps[:, 2 * g:2 * g + 2].flatten(1)) for g in range(2)]
        ).view(W.shape) / n
    expected = (1 - rule.mirror_lr * rule.mirror_decay) * before + rule.mirror_lr * correlation
    close(layer.feedback_weight, expected)


def test_wm_b_mirrors_w_during_training():
    """angle(W, B) starts near 90 degrees in every layer and falls below 15 in 60 steps."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 20),
                        nn.ReLU(), nn.Linear(20, 3))
    biofa.convert(net, "wm", init="xavier")
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    x, y = data((32, 2, 6, 6))
    before = [row["weight_angle"] for row in alignment(net)]
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    net(x)  # the refresh after the last step
    after = [row["weight_angle"] for row in alignment(net)]
    print("wm angle(W, B) before", before, "after", after)
    assert all(a > 75 for a in before) and all(a < 15 for a in after)
    # the default decay (= noise variance) pulls B to W itself, not just its direction
    assert all(0.8 < row["norm_ratio"] < 1.25 for row in alignment(net))


def test_wm_never_mirrors_in_eval_or_frozen():
    net, (x, y) = mlp("wm"), data((7, 4))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    F.cross_entropy(net(x), y).backward()
    opt.step()
    b = net[0].feedback_weight.clone()
    net.eval()
    net(x)
    with biofa.frozen_feedback(net.train()):
        net(x)
    assert torch.equal(net[0].feedback_weight, b)
    net(x)
    assert not torch.equal(net[0].feedback_weight, b)


# ----------------------------------------------------------------------------- drtp


def test_drtp_hidden_layers_get_the_projected_target(backend):
    net, (x, y) = mlp("drtp"), data((7, 4))
    grad_x, errors, _ = run(net, x, y)
    W1, W2, W3 = (net[i].weight.detach() for i in (0, 2, 4))
    B1, B2, B3 = (net[i].feedback_weight for i in (0, 2, 4))
    assert B1.shape == (3, 4) and B2.shape == (3, 6) and B3.shape == (3, 5)
    h1 = torch.tanh(x @ W1.T + net[0].bias)
    h2 = torch.tanh(h1 @ W2.T + net[2].bias)
    e = (F.softmax(h2 @ W3.T + net[4].bias, 1) - F.one_hot(y, 3)) / 7
    target = -F.one_hot(y, 3).double() / 7  # -y*/N: the error's sign at the target
    close(errors[3], target @ B3)
    close(errors[1], target @ B2)
    close(net[4].weight.grad, e.T @ h2)  # the output layer learns from the true error
    close(net[2].weight.grad, ((target @ B3) * tanh_prime(h2)).T @ h1)
    close(net[0].weight.grad, ((target @ B2) * tanh_prime(h1)).T @ x)
    close(grad_x, target @ B1)


def test_drtp_conv_layer_gets_the_projected_target(backend):
    net, (x, y) = convnet("drtp"), data((4, 2, 6, 6))
    grad_x, errors, _ = run(net, x, y)
    target = -F.one_hot(y, 3).double() / 4
    c1, c2 = net[0], net[2]
    h1 = torch.tanh(F.conv2d(x, c1.weight, c1.bias, padding=1))
    close(errors[1], (target @ c2.feedback_weight).view(h1.shape))
    d1 = errors[1] * tanh_prime(h1)
    close(c1.weight.grad, conv2d_weight(x, c1.weight.shape, d1, padding=1))
    close(grad_x, (target @ c1.feedback_weight).view(x.shape))


def test_drtp_hidden_signal_depends_on_the_target_not_on_the_error():
    x, y = data((7, 4))
    grads = []
    for scale in (1.0, 3.0):  # another output error (a sharper softmax), same targets
        net = mlp("drtp")
        F.cross_entropy(scale * net(x), y).backward()
        grads.append([m.weight.grad for m in (net[0], net[2], net[4])])
    close(grads[0][0], grads[1][0], rtol=0, atol=0)
    close(grads[0][1], grads[1][1], rtol=0, atol=0)
    assert not torch.allclose(grads[0][2], grads[1][2])
    net = mlp("drtp")
    F.cross_entropy(net(x), (y + 1) % 3).backward()  # other targets: another signal
    assert not torch.allclose(net[0].weight.grad, grads[0][0])


def test_drtp_refuses_an_error_that_names_no_target():
    net, (x, y) = mlp("drtp"), data((7, 4))
    with pytest.raises(SignalError, match="more than one negative component"):
        F.mse_loss(net(x), F.one_hot(y, 3).double()).backward()


def test_drtp_checks_on_the_host_outside_training(monkeypatch):
    """In eval mode (an attack) drtp refuses on the host, where training on a GPU only
    checks in the graph: the flag reaches the signal, and on a device that is not the
    CPU (meta: shapes, no values) only the host check reads the tensor."""
    from biofa.methods import dfa

    seen = []
    target = dfa.SIGNALS["target"]
    monkeypatch.setitem(dfa.SIGNALS, "target",
                        lambda error, on_host: seen.append(on_host) or target(error, on_host))
    x, y = data((5, 4))
    net = mlp("drtp")
    F.cross_entropy(net(x), y).backward()
    net.eval()
    F.cross_entropy(net(x.clone().requires_grad_()), y).backward()
    assert seen == [False, True]
    with pytest.raises(SignalError):  # eval mode: refused on the host
        F.mse_loss(net(x), F.one_hot(y, 3).double()).backward()

    on_device = torch.empty(4, 3, device="meta")
    assert dfa._target_signal(on_device, check_on_host=False).shape == (4, 3)  # no sync
    with pytest.raises(RuntimeError, match="meta"):  # the host check reads the values
        dfa._target_signal(on_device, check_on_host=True)


def test_drtp_reads_the_target_of_a_saturated_row():
    """p rounded to 1 at the target (the row is 0 there, positive elsewhere): still the target."""
    net, (x, y) = mlp("drtp"), data((3, 4))
    logits = net(x)
    boost = 40.0 * F.one_hot(y, 3).double()  # p_target = 1 - 1e-17 -> 1 in float64
    F.cross_entropy(logits.float().double() + boost, y).backward()
    again = mlp("drtp")
    F.cross_entropy(again(x), y).backward()
    close(net[0].weight.grad, again[0].weight.grad)


# ----------------------------------------------------------------------------- dkp


def test_dkp_gradients_and_its_b_gradients(backend):
    net, (x, y) = mlp("dkp"), data((7, 4))
    grad_x, errors, _ = run(net, x, y)
    W1, W2, W3 = (net[i].weight.detach() for i in (0, 2, 4))
    B1, B2, B3 = (net[i].feedback_weight.detach() for i in (0, 2, 4))
    h1 = torch.tanh(x @ W1.T + net[0].bias)
    h2 = torch.tanh(h1 @ W2.T + net[2].bias)
    e = (F.softmax(h2 @ W3.T + net[4].bias, 1) - F.one_hot(y, 3)) / 7
    close(errors[3], e @ B3)
    close(errors[1], e @ B2)
    close(net[2].weight.grad, ((e @ B3) * tanh_prime(h2)).T @ h1)
    close(net[0].weight.grad, ((e @ B2) * tanh_prime(h1)).T @ x)
    close(grad_x, e @ B1)
    # B_l learns from the output error times the layer's input; for the output layer
    # that is W's own gradient (Kolen-Pollack)
    close(net[4].feedback_weight.grad, e.T @ h2)
    close(net[4].feedback_weight.grad, net[4].weight.grad)
    close(net[2].feedback_weight.grad, e.T @ h1)
    close(net[0].feedback_weight.grad, e.T @ x)


def test_dkp_conv_b_gradient(backend):
    net, (x, y) = convnet("dkp"), data((4, 2, 6, 6))
    F.cross_entropy(net(x), y).backward()  # x needs no grad: B_0 still learns
    c1, c2 = net[0], net[2]
    h1 = torch.tanh(F.conv2d(x, c1.weight, c1.bias, padding=1))
    h2 = torch.tanh(F.conv2d(h1, c2.weight, c2.bias, stride=2))
    e = (F.softmax(net[5](h2.flatten(1)), 1) - F.one_hot(y, 3)) / 4
    close(c1.feedback_weight.grad, e.T @ x.flatten(1))
    close(c2.feedback_weight.grad, e.T @ h1.flatten(1))
    d1 = (e @ c2.feedback_weight.detach()).view(h1.shape) * tanh_prime(h1)
    close(c1.weight.grad, conv2d_weight(x, c1.weight.shape, d1, padding=1))


def test_dkp_output_b_approaches_w_by_the_kolen_pollack_factor():
    net, (x, y) = mlp("dkp"), data((7, 4))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=0.5)
    gap = (net[4].weight - net[4].feedback_weight).detach()
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        gap = gap * (1 - 0.1 * 0.5)
        close(net[4].weight - net[4].feedback_weight, gap)


def test_dkp_b_aligns_with_the_path_it_stands_for():
    """B_l stands for the network from layer l's input to the output: its angle with the
    mean Jacobian of that path falls in every layer (on a toy task, 200 SGD steps)."""
    torch.manual_seed(0)
    X = torch.randn(512, 20)
    Y = (X @ torch.randn(20, 10)).argmax(1)
    net = nn.Sequential(nn.Linear(20, 30), nn.Tanh(), nn.Linear(30, 30), nn.Tanh(),
                        nn.Linear(30, 10))
    biofa.convert(net, "dkp")
    opt = torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=1e-3)

    def angles():
        result = []
        for start in (0, 2, 4):
            x = net[:start](X[:128]).detach() if start else X[:128]
            with biofa.true_gradient(net):
                jacobian = torch.autograd.functional.jacobian(
                    lambda inputs: net[start:](inputs).sum(0), x).sum(1)
            result.append(angle(net[start].feedback_weight, jacobian))
        return result

    before = angles()
    for _ in range(200):
        i = torch.randint(0, 512, (64,))
        opt.zero_grad()
        F.cross_entropy(net(X[i]), Y[i]).backward()
        opt.step()
    after = angles()
    print("dkp angle(B_l, mean Jacobian) before", before, "after", after)
    assert all(a > 75 for a in before) and all(a < 45 for a in after)


# ----------------------------------------------------------------------------- all three

NEW = ["wm", "drtp", "dkp"]


@pytest.mark.parametrize("method", NEW)
def test_eval_mode_input_gradient_exists_and_is_finite(method):
    torch.manual_seed(0)
    model = biofa.models.build("lenet_mnist", num_classes=10)
    biofa.convert(model, method, **({"input_size": (1, 32, 32)} if biofa.METHODS[method].direct
                                    else {}))
    model.eval()
    x = torch.rand(3, 1, 32, 32, requires_grad=True)
    grad, = torch.autograd.grad(F.cross_entropy(model(x), torch.tensor([1, 2, 3])), x)
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()
    rows = alignment(model, x.detach(), torch.tensor([1, 2, 3]))
    assert all(math.isfinite(row["gradient_angle"]) for row in rows)
    assert all(math.isnan(row["weight_angle"]) == biofa.METHODS[method].direct for row in rows)


@pytest.mark.parametrize("method", NEW)
def test_true_gradient_is_backprop(method):
    net, (x, y) = convnet(method), data((4, 2, 6, 6))
    plain = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 2, 3, stride=2),
                          nn.Tanh(), nn.Flatten(), nn.Linear(8, 3))
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if "feedback" not in k})
    xs = [x.clone().requires_grad_() for _ in range(2)]
    with biofa.true_gradient(net):
        F.cross_entropy(net(xs[0]), y).backward()
    F.cross_entropy(plain(xs[1]), y).backward()
    close(xs[0].grad, xs[1].grad)
    for a, b in zip([net[i].weight.grad for i in (0, 2, 5)],
                    [plain[i].weight.grad for i in (0, 2, 5)]):
        close(a, b)


@pytest.mark.parametrize("method", NEW)
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_backends_agree_bit_for_bit(method, kind, backend, monkeypatch):
    if backend == "python":
        pytest.skip("compares the compiled backend with the Python one")
    torch.set_default_dtype(torch.float32)
    net, (x, y) = (mlp(method), data((5, 4))) if kind == "linear" else \
        (convnet(method), data((4, 2, 6, 6)))
    grads = []
    for chosen in (functional.backend(), functional._Python):
        monkeypatch.setattr(functional, "_backend", chosen)
        model, inputs = copy.deepcopy(net), x.clone().requires_grad_()
        torch.manual_seed(2)  # a copied wm layer mirrors at its first training pass
        F.cross_entropy(model(inputs), y).backward()
        grads.append([inputs.grad] + [p.grad for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_fixed_buffers_and_learned_feedback():
    assert biofa.METHODS["drtp"].fixed_buffers == ("feedback_weight",)
    assert biofa.METHODS["wm"].fixed_buffers == biofa.METHODS["dkp"].fixed_buffers == ()
    net = mlp("dkp")
    assert {n for n, _ in net.named_parameters() if "feedback" in n} == {
        "0.feedback_weight", "2.feedback_weight", "4.feedback_weight"}
    assert not any("feedback" in n for n, _ in mlp("wm").named_parameters())
    assert biofa.layers.fixed_state(mlp("drtp")) == {"0.feedback_weight", "2.feedback_weight",
                                                      "4.feedback_weight"}


# ----------------------------------------------------------------------------- registry


class Halves(FA):
    """FA with half of W as B: a rule from outside biofa."""

    name = "halves"
    paper = "a test"

    def feedback(self, layer):
        return layer.weight / 2


def test_register_adds_a_rule_that_convert_uses(monkeypatch):
    monkeypatch.setattr(biofa.METHODS, "_rules", dict(biofa.METHODS._rules))
    assert register(Halves) is Halves
    assert "halves" in biofa.METHODS and list(biofa.METHODS)[-1] == "halves"
    net = nn.Sequential(nn.Linear(3, 2))
    biofa.convert(net, "halves")
    x = torch.randn(4, 3, requires_grad=True)
    net(x).sum().backward()
    close(x.grad, torch.ones(4, 2) @ net[0].weight.detach() / 2)
    assert register(Halves) is Halves  # the same class again: nothing to do
    with pytest.raises(PluginError, match="'halves' exists already .*test_new_rules.Halves"):
        register(type("Halves", (Halves,), {}))
    with pytest.raises(PluginError, match="'fa' exists already .*biofa.methods.fa.FA"):
        register(type("MyFA", (FA,), {}))
    with pytest.raises(PluginError, match="not a subclass of biofa.methods.Rule"):
        register(object)
    with pytest.raises(PluginError, match="must be a non-empty identifier"):
        register(type("Nameless", (Rule,), {}))


def entry_point(name, value):
    return metadata.EntryPoint(name=name, value=value, group=methods.ENTRY_POINT_GROUP)


def test_entry_points_are_listed_cheaply_and_loaded_when_asked(monkeypatch, tmp_path):
    (tmp_path / "plugin_rules.py").write_text(
        "from biofa.methods import FA\n\nclass Mine(FA):\n    name = 'mine'\n    paper = 'x'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    listed = [entry_point("mine", "plugin_rules:Mine"), entry_point("broken", "no_such_module:X")]
    monkeypatch.setattr(metadata, "entry_points", lambda group: listed)
    registry = Registry([methods.BP])
    assert list(registry) == ["bp", "mine", "broken"]  # names only: nothing imported yet
    assert isinstance(registry._rules["mine"], metadata.EntryPoint)
    assert registry["mine"].__name__ == "Mine"
    with pytest.raises(PluginError, match=r"entry point 'broken = no_such_module:X' failed to "
                                          r"load: ModuleNotFoundError"):
        registry["broken"]

    registry.register(registry["mine"])  # its module may register it as well

    listed[:] = [entry_point("other", "plugin_rules:Mine")]
    with pytest.raises(PluginError, match="class's name is 'mine'"):
        Registry([methods.BP])["other"]
    listed[:] = [entry_point("bp", "plugin_rules:Mine")]
    with pytest.raises(PluginError, match="'bp = plugin_rules:Mine'.*exists already"):
        list(Registry([methods.BP]))


def test_the_plugins_variable_imports_modules_that_register(monkeypatch, tmp_path):
    (tmp_path / "env_rules.py").write_text(
        "import biofa.methods\n\n@biofa.methods.register\nclass Env(biofa.methods.FA):\n"
        "    name = 'env'\n    paper = 'x'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(biofa.METHODS, "_rules", dict(biofa.METHODS._rules))
    monkeypatch.setattr(biofa.METHODS, "_scanned", False)
    monkeypatch.setenv(methods.PLUGINS_VARIABLE, "env_rules")
    assert "env" in biofa.METHODS and biofa.METHODS["env"].__name__ == "Env"
    monkeypatch.setenv(methods.PLUGINS_VARIABLE, " nowhere_module ")
    monkeypatch.setattr(biofa.METHODS, "_scanned", False)
    with pytest.raises(PluginError, match="BIOFA_PLUGINS: module 'nowhere_module' failed"):
        list(biofa.METHODS)
