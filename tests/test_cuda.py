"""The GPU path: every rule on CUDA, with and without amp + channels_last, and a training run.

Skipped where no CUDA device is present (CI); run them on a GPU machine with ``pytest tests/test_cuda.py``.
"""

import copy
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import biofa
from biofa.study.cli import main
from biofa.methods.base import init_std

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "examples" / "digits_lenet.yaml"
RULES = ["fa", "dfa", "usf", "brsf", "frsf", "kp"]


def small_net(method):
    """Tanh, not ReLU: a ReLU whose input rounds across zero would change the function itself."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3), nn.Tanh(),
                        nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    biofa.convert(net, method, **({"input_size": (3, 8, 8)} if method == "dfa" else {}))
    return net


def gradients(model, x, y, amp=False):
    torch.manual_seed(1)  # brsf draws its magnitudes at this first training pass
    with torch.autocast(x.device.type, enabled=amp):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    return {name: p.grad for name, p in model.named_parameters()}


def assert_close_to_scale(actual, expected, tolerance):
    """Equal up to ``tolerance`` of the largest entry: the precision of the arithmetic used."""
    scale = expected.abs().max()
    torch.testing.assert_close(actual.cpu().float() / scale, expected / scale, rtol=0, atol=tolerance)


@pytest.mark.parametrize("method", RULES)
def test_every_rule_gives_the_cpu_gradients_on_cuda(method):
    """brSF in eval mode, where it keeps the |M| drawn at setup: in training it redraws from
    the device's own generator (next test)."""
    net = small_net(method).train(method != "brsf")
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    cpu = copy.deepcopy(net)
    reference = gradients(cpu, x, y)
    on_gpu = copy.deepcopy(net).cuda()
    for name, grad in gradients(on_gpu, x.cuda(), y.cuda()).items():
        assert grad.device.type == "cuda"
        assert_close_to_scale(grad, reference[name], 2e-3)  # cuDNN may use TF32 for convolutions
    for (name, gpu_layer), (_, cpu_layer) in zip(biofa.feedback_layers(on_gpu),
                                                 biofa.feedback_layers(cpu)):
        if method != "dfa":  # the same B, bit for bit
            assert torch.equal(gpu_layer.feedback_matrix().cpu(), cpu_layer.feedback_matrix()), name


def test_brsf_redraws_on_the_gpu_with_the_gpu_generator():
    net = small_net("brsf").cuda()
    layers = [layer for _, layer in biofa.feedback_layers(net)]
    before = [layer.feedback_magnitude.clone() for layer in layers]
    x, y = torch.randn(16, 3, 8, 8, device="cuda"), torch.randint(0, 10, (16,), device="cuda")
    torch.manual_seed(3)
    cpu_state = torch.get_rng_state()
    F.cross_entropy(net(x), y).backward()
    assert torch.equal(torch.get_rng_state(), cpu_state)  # no draw from the CPU generator
    for layer, old in zip(layers, before):
        magnitude = layer.feedback_magnitude
        assert magnitude.device.type == "cuda" and not torch.equal(magnitude, old)
        bound = math.sqrt(3.0) * init_std(layer.init_scheme, magnitude.shape)
        assert magnitude.min() >= 0 and magnitude.max() <= bound
        assert magnitude.mean().item() == pytest.approx(bound / 2, rel=0.2)
        assert torch.equal(layer.feedback_matrix(), magnitude * torch.sign(layer.weight.detach()))
    again = small_net("brsf").cuda()
    torch.manual_seed(3)
    F.cross_entropy(again(x), y).backward()
    for (_, a), (_, b) in zip(biofa.feedback_layers(net), biofa.feedback_layers(again)):
        assert torch.equal(a.feedback_magnitude, b.feedback_magnitude)  # seeded: reproducible


@pytest.mark.parametrize("method", RULES)
def test_amp_and_channels_last_on_cuda_keep_the_rule(method):
    net = small_net(method).train(method != "brsf")
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    reference = gradients(copy.deepcopy(net), x, y)
    model = copy.deepcopy(net).cuda().to(memory_format=torch.channels_last)
    inputs = x.cuda().contiguous(memory_format=torch.channels_last)
    for name, grad in gradients(model, inputs, y.cuda(), amp=True).items():
        assert grad.dtype == torch.float32
        assert_close_to_scale(grad, reference[name], 0.01)  # float16 products


def test_training_on_cuda_with_amp_and_channels_last_learns(tmp_path):
    out = tmp_path / "run"
    args = ["train", str(EXAMPLE), "--out", str(out), "--set", "method=usf",
            "--set", "device=cuda", "--set", "amp=true", "--set", "channels_last=true"]
    args += ["--set", "epochs=3", "--set", "schedule.milestones=[2]"]
    assert main(args) == 0
    finished = (out / "last.pt").stat().st_mtime_ns
    assert main(args) == 0 and (out / "last.pt").stat().st_mtime_ns == finished  # not trained again
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2, 3]
    assert metrics["val_acc1"].iloc[-1] > 0.5  # 10 classes; uSF reaches ~0.9 on digits in 3 epochs
    assert main(["evaluate", str(out)]) == 0
    test = json.loads((out / "test.json").read_text())
    assert test["top1_acc"] > 0.5


@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
@pytest.mark.parametrize("method", ["bp", *RULES])
def test_a_compiled_step_on_cuda_matches_eager(method, mode):
    """torch.compile(fullgraph=True) on the GPU, with CUDA graphs too (reduce-overhead):
    three SGD steps take the eager steps, B and the per-step chores included."""
    torch.manual_seed(0)
    net = biofa.models.build("lenet_cifar", num_classes=10)
    biofa.convert(net, method, init="xavier", constrain_weights=method == "brsf",
                  **({"input_size": (3, 32, 32)} if method == "dfa" else {}))
    eager, twin = net.cuda(), copy.deepcopy(net).cuda()
    compiled = torch.compile(twin, fullgraph=True, mode=mode)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, 32, 32, generator=generator).cuda()
    y = torch.randint(0, 10, (16,), generator=generator).cuda()
    for model, params in ((eager, eager), (compiled, twin)):
        torch.manual_seed(2)
        torch.cuda.manual_seed(2)
        optimizer = torch.optim.SGD(params.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
        model(x)  # eager does the last step's chores here
    for (name, a), b in zip(eager.state_dict().items(), twin.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=name)
