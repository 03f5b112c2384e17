import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from biofa import models
from biofa.models import MODELS, Normalize, build, input_shape

NUM_CLASSES = 7


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _last_layer(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]


def _test_shape(name: str) -> tuple[int, int, int]:
    c, h, w = input_shape(name)
    if name == "resnet18":
        return (c, 64, 64)
    return (c, h, w)


def test_names():
    assert set(MODELS) == {
        "lenet_mnist", "lenet_mnist_tanh", "lenet_cifar", "resnet20", "resnet32",
        "resnet44", "resnet56", "resnet110", "resnet18",
    }


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shape_and_output_layer(name):
    torch.manual_seed(0)
    model = build(name, num_classes=NUM_CLASSES).eval()
    with torch.no_grad():
        out = model(torch.rand(2, *_test_shape(name)))
    assert out.shape == (2, NUM_CLASSES)
    last = _last_layer(model)
    assert isinstance(last, nn.Linear)
    assert last.out_features == NUM_CLASSES


def test_input_shapes():
    assert input_shape("lenet_mnist") == (1, 32, 32)
    assert input_shape("lenet_cifar") == (3, 32, 32)
    assert input_shape("resnet20") == (3, 32, 32)
    assert input_shape("resnet110") == (3, 32, 32)
    assert input_shape("resnet18") == (3, 224, 224)
    assert input_shape("resnet18", in_channels=1) == (1, 224, 224)
    assert input_shape("lenet_mnist", in_channels=3) == (3, 32, 32)


def test_in_channels_honoured():
    model = build("lenet_mnist", in_channels=3)
    assert model.conv1.in_channels == 3
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)

    r = build("resnet20", num_classes=NUM_CLASSES, in_channels=1)
    assert r.conv1.in_channels == 1
    assert r(torch.rand(2, 1, 32, 32)).shape == (2, NUM_CLASSES)

    r18 = build("resnet18", num_classes=NUM_CLASSES, in_channels=1).eval()
    assert r18.conv1.in_channels == 1
    assert _last_layer(r18) is r18.fc
    with torch.no_grad():
        assert r18(torch.rand(2, 1, 64, 64)).shape == (2, NUM_CLASSES)


def test_default_channels():
    assert build("lenet_mnist").conv1.in_channels == 1
    assert build("lenet_cifar").conv1.in_channels == 3
    assert build("resnet20").conv1.in_channels == 3


def test_resnet_parameter_counts():
    assert 269_000 <= _n_params(build("resnet20")) <= 273_000
    assert 840_000 <= _n_params(build("resnet56")) <= 870_000


def test_option_a_shortcut_has_no_parameters():
    model = build("resnet20")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 19
    assert len(linears) == 1
    shortcuts = [m for m in model.modules() if isinstance(m, models.ShortcutA)]
    assert len(shortcuts) == 2
    assert all(_n_params(s) == 0 for s in shortcuts)

    y = models.ShortcutA(16, 32, stride=2)(torch.ones(2, 16, 32, 32))
    assert y.shape == (2, 32, 16, 16)
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0
    assert torch.all(y[:, 8:24] == 1)


def test_resnet_depths():
    for name, depth in [("resnet20", 20), ("resnet32", 32), ("resnet44", 44),
                        ("resnet56", 56), ("resnet110", 110)]:
        model = build(name)
        convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
        assert convs + 1 == depth


def test_normalize_numerics():
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    norm = Normalize(mean, std)
    x = torch.rand(4, 3, 5, 5)
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), expected)
    assert norm.mean.shape == (1, 3, 1, 1)


def test_build_with_normalize():
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    model = build("lenet_cifar", num_classes=NUM_CLASSES, normalize=(mean, std))
    sd = model.state_dict()
    assert "normalize.mean" in sd and "normalize.std" in sd
    assert "net.fc3.weight" in sd
    torch.testing.assert_close(sd["normalize.mean"].flatten(), torch.tensor(mean))
    assert _last_layer(model) is model.net.fc3

    x = torch.rand(2, 3, 32, 32)
    expected = model.net(Normalize(mean, std)(x))
    torch.testing.assert_close(model(x), expected)

    fresh = build("lenet_cifar", num_classes=NUM_CLASSES, normalize=((0.0,) * 3, (1.0,) * 3))
    fresh.load_state_dict(sd)
    torch.testing.assert_close(fresh.normalize.std.flatten(), torch.tensor(std))


def test_unknown_name():
    with pytest.raises(ValueError, match="resnet20"):
        build("resnet21")
    with pytest.raises(ValueError, match="resnet20"):
        input_shape("vgg16")


def test_lenet_layer_order():
    names = [n for n, m in build("lenet_mnist").named_modules()
             if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert names == ["conv1", "conv2", "fc1", "fc2", "fc3"]


def test_import_biofa_gives_the_models_and_stays_light():
    """``biofa.models.build`` after a plain ``import biofa``, in a fresh interpreter (here
    other tests have imported ``biofa.models`` already); torchvision, matplotlib and pandas
    stay unimported until a command needs them."""
    script = textwrap.dedent("""\
        import sys
        import biofa
        assert biofa.models.build("lenet_mnist", num_classes=3).fc3.out_features == 3
        for name in ("convert", "Linear", "Conv2d", "metrics", "models", "true_gradient"):
            assert name in biofa.__all__ and hasattr(biofa, name), name
        heavy = [m for m in ("torchvision", "matplotlib", "pandas") if m in sys.modules]
        assert not heavy, heavy
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "BIOFA_NATIVE": "0"})
    assert result.returncode == 0, result.stderr[-2000:]
