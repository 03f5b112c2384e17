"""The rules under torch.compile (fullgraph) and torch.func, against eager, for every rule.

A compiled training step must take the eager step: the same gradients (bit for bit where
inductor does not generate code, ``backend="aot_eager"``; to float32 tolerance with
inductor), and over several steps the same sequence of B (brSF's redraws, the sign
rules' rebuilt B, KP's learned B, DFA's direct matrices) and the same weights.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

import biofa
from biofa.layers import feedback_layers, true_gradient
from biofa.models import build

METHODS = sorted(biofa.METHODS)
MODELS = ["lenet_cifar", "resnet20"]
STEPS = 3


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def converted(model: str, method: str, **options):
    torch.manual_seed(0)
    net = build(model, num_classes=10)
    if biofa.METHODS[method].direct:
        options["input_size"] = (3, 32, 32)
    # a weight constraint on the rules that refresh B, so every per-step chore is exercised
    biofa.convert(net, method, init="xavier", constrain_weights=method in ("brsf", "fa"),
                  **options)
    return net


def batch(n: int = 8):
    generator = torch.Generator().manual_seed(1)
    return (torch.randn(n, 3, 32, 32, generator=generator),
            torch.randint(0, 10, (n,), generator=generator))


def train(model, layers_of, steps: int = STEPS):
    """(gradients, B of every layer) at each of ``steps`` SGD steps, from one RNG state;
    ``layers_of`` is the model itself (eager) or the module a compiled one wraps."""
    torch.manual_seed(2)
    x, y = batch()
    optimizer = torch.optim.SGD(layers_of.parameters(), lr=0.1, momentum=0.9,
                                weight_decay=1e-3)
    grads, feedback = [], []
    for _ in range(steps):
        F.cross_entropy(model(x), y).backward()
        grads.append([p.grad.clone() for p in layers_of.parameters()])
        feedback.append([None if (b := layer.feedback_matrix()) is None else b.clone()
                         for _, layer in feedback_layers(layers_of)])
        optimizer.step()
        optimizer.zero_grad()
    # eager does a step's chores (the weight constraint, brSF's redraw) at the next
    # forward pass, compiled right after the step: end on the state the next pass uses
    model(x)
    return grads, feedback


def same(a, b, exact: bool) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return torch.equal(a, b) if exact else torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def assert_compiled_equals_eager(model: str, method: str, compiler: str) -> None:
    eager = converted(model, method)
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin, fullgraph=True, backend=compiler)
    exact = compiler == "aot_eager"
    eager_grads, eager_b = train(eager, eager)
    compiled_grads, compiled_b = train(compiled, twin)
    for step in range(STEPS):
        names = [name for name, _ in eager.named_parameters()]
        for name, a, b in zip(names, eager_grads[step], compiled_grads[step]):
            assert same(a, b, exact), f"step {step}: gradient of {name}"
        for (name, _), a, b in zip(feedback_layers(eager), eager_b[step], compiled_b[step]):
            assert same(a, b, exact), f"step {step}: B of {name}"
    for (name, a), b in zip(eager.state_dict().items(), twin.state_dict().values()):
        assert same(a, b, exact), f"after {STEPS} steps: {name}"
    assert all(layer.traced for _, layer in feedback_layers(twin) if layer._step_chores)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model", MODELS)
def test_a_fullgraph_compiled_step_is_the_eager_step_bit_for_bit(model, method, backend):
    """aot_eager: dynamo and AOTAutograd trace the forward and the rule's backward into
    one graph each, no code generated: every number must equal eager's."""
    assert_compiled_equals_eager(model, method, "aot_eager")


@pytest.mark.parametrize("method", METHODS)
def test_an_inductor_compiled_step_matches_the_eager_step(method):
    """inductor generates the kernels (fused, reordered sums): float32 tolerance."""
    assert_compiled_equals_eager("lenet_cifar", method, "inductor")


def test_brsf_redraws_once_per_step_under_compile_as_in_eager():
    """The redraw a compiled graph cannot do (it depends on the weights' version) happens
    right after each optimiser step: one new |M| per step, none in between."""
    net = converted("lenet_cifar", "brsf")
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    x, y = batch()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    layer = net.fc1
    drawn = [layer.feedback_magnitude.clone()]
    for _ in range(3):
        F.cross_entropy(compiled(x), y).backward()
        F.cross_entropy(compiled(x), y).backward()  # accumulation: the same M
        assert torch.equal(layer.feedback_magnitude, drawn[-1])
        optimizer.step()
        drawn.append(layer.feedback_magnitude.clone())
    assert all(not torch.equal(a, b) for a, b in zip(drawn, drawn[1:]))
    net.eval()  # evaluation never redraws
    optimizer.step()
    assert torch.equal(layer.feedback_magnitude, drawn[-1])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model", MODELS)
def test_torch_func_grad_gives_the_rules_gradient(model, method, backend):
    """``torch.func.grad`` of a ``functional_call`` loss: the rule's gradients, bit for bit
    the eager backward's, and not backprop's (for every rule but bp)."""
    net = converted(model, method)
    x, y = batch()
    F.cross_entropy(net(x), y).backward()
    eager = {name: p.grad.clone() for name, p in net.named_parameters()}
    net.zero_grad()
    with true_gradient(net):
        F.cross_entropy(net(x), y).backward()
    backprop = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}

    params = {name: p.detach() for name, p in net.named_parameters()}
    # batch norm updates its running statistics in place: they are inputs, not captured
    buffers = {name: b.clone() for name, b in net.named_buffers()}

    def loss(p, b):
        return F.cross_entropy(torch.func.functional_call(net, {**p, **b}, (x,)), y)

    grads = torch.func.grad(loss)(params, buffers)
    assert grads.keys() == eager.keys()
    assert all(torch.equal(grads[name], eager[name]) for name in eager)
    differs = [name for name in backprop if not torch.allclose(grads[name], backprop[name])]
    assert (differs == []) == (method == "bp")


@pytest.mark.parametrize("method", METHODS)
def test_vmap_gives_per_sample_input_gradients(method):
    """``vmap(grad(...))`` over a batch: each image's input gradient under the rule (what an
    attack uses), equal to the gradient of that image alone."""
    net = converted("lenet_cifar", method).eval()
    x, y = batch(4)

    def loss(image, label):
        return F.cross_entropy(net(image.unsqueeze(0)), label.unsqueeze(0))

    per_sample = torch.func.vmap(torch.func.grad(loss))(x, y)
    for i in range(len(x)):
        image = x[i].clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(loss(image, y[i]), image)
        torch.testing.assert_close(per_sample[i], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("feedback, learn, clip", [
    ("random", False, None), ("random", True, 0.5), ("none", False, None)])
def test_the_operators_pass_torch_library_opcheck(feedback, learn, clip):
    """torch.library.opcheck: schema, fake (meta) implementation, registered autograd
    formula and AOT dispatch of both operators, as torch.compile relies on them."""
    torch.manual_seed(0)
    x = torch.randn(4, 6, requires_grad=True)
    weight, bias = torch.randn(5, 6, requires_grad=True), torch.randn(5, requires_grad=True)
    matrix = None if feedback == "none" else torch.randn(5, 6, requires_grad=learn)
    torch.library.opcheck(torch.ops.biofa.feedback_linear.default,
                          (x, weight, bias, matrix, learn, clip))
    images = torch.randn(2, 3, 7, 7, requires_grad=True)
    kernel, conv_bias = torch.randn(4, 3, 3, 3, requires_grad=True), torch.randn(4, requires_grad=True)
    conv_matrix = None if feedback == "none" else torch.randn(4, 3, 3, 3, requires_grad=learn)
    torch.library.opcheck(torch.ops.biofa.feedback_conv2d.default,
                          (images, kernel, conv_bias, conv_matrix, learn, clip, [2, 2], [1, 1],
                           [1, 1], 1))


def test_the_operators_send_the_error_through_b():
    """The operators' backward by hand: dL/dx = e B (not e W), dL/dW = e^T x, dL/dB = dL/dW
    when B learns; the error clamped first."""
    torch.manual_seed(0)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    matrix = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    error = torch.randn(4, 5, dtype=torch.float64)
    out = torch.ops.biofa.feedback_linear(x, weight, None, matrix, True, 0.3)
    torch.testing.assert_close(out, x @ weight.T)
    out.backward(error)
    clamped = error.clamp(-0.3, 0.3)
    torch.testing.assert_close(x.grad, clamped @ matrix.detach())
    torch.testing.assert_close(weight.grad, clamped.T @ x.detach())
    torch.testing.assert_close(matrix.grad, weight.grad)
