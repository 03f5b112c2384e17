"""Data sets: offline digits, fixed splits, and fast, clean failure without network or with
damaged files.

No test touches the network (the download tests cut it off by patching sockets) or needs a
real data set: the MNIST and CIFAR files are small synthetic ones in the official layout.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import socket
import struct
import time
from pathlib import Path

import pytest
import torch
import yaml

from biofa.study import data
from biofa.study.cli import main
from biofa.errors import UsageError


@pytest.fixture
def no_network(monkeypatch):
    """Make every DNS lookup and connect fail, as on a machine without network."""
    def refuse(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (network disabled in tests)")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def _files(path):
    return sorted(p for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name,classes,size", [
    ("digits", 10, (1, 32, 32)), ("mnist", 10, (1, 32, 32)), ("fashion_mnist", 10, (1, 32, 32)),
    ("cifar10", 10, (3, 32, 32)), ("cifar100", 100, (3, 32, 32)), ("imagenet", 1000, (3, 224, 224)),
])
def test_registry(name, classes, size):
    info = data.DATASETS[name]
    assert info.name == name and info.num_classes == classes and info.input_size == size
    assert len(info.mean) == len(info.std) == size[0]
    assert set(info.splits) == {"train", "val", "test"} and all(v > 0 for v in info.splits.values())
    assert info.description


def test_registry_is_complete():
    assert set(data.DATASETS) == {"digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "imagenet"}


def test_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="digits"):
        data.load("svhn", tmp_path, "train")
    with pytest.raises(ValueError, match="digits"):
        data.prepare("svhn", tmp_path)
    with pytest.raises(ValueError, match="digits"):
        data.loaders("svhn", tmp_path, 8)


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="val"):
        data.load("digits", tmp_path, "validation")


# --------------------------------------------------------------------------- split logic


def test_split_indices_cifar():
    train, val = data.split_indices(50000, 5000, 0)
    assert len(train) == 45000 and len(val) == 5000
    assert not set(train) & set(val) and set(train) | set(val) == set(range(50000))
    assert (train, val) == data.split_indices(50000, 5000, 0)
    assert val != data.split_indices(50000, 5000, 1)[1]


def test_split_indices_rejects_bad_sizes():
    with pytest.raises(ValueError):
        data.split_indices(10, 11, 0)


# --------------------------------------------------------------------------- digits


def _hashes(images):
    return [hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in images]


def test_digits_offline(tmp_path):
    sizes = {"train": 1257, "val": 180, "test": 360}
    splits = {s: data.load("digits", tmp_path, s) for s in sizes}
    for split, ds in splits.items():
        assert len(ds) == sizes[split] == data.DATASETS["digits"].splits[split]
        x, y = ds.tensors
        assert x.shape == (sizes[split], 1, 32, 32) and x.dtype == torch.float32
        assert x.min() >= 0 and x.max() <= 1
        assert set(y.tolist()) <= set(range(10)) and y.dtype == torch.long
    assert set(splits["train"].tensors[1].tolist()) == set(range(10))
    # the splits partition the 1797 images: their image hashes, pooled, are exactly the
    # multiset of hashes of the full set (sklearn's digits contain a few duplicate images,
    # so a plain set intersection would not prove disjointness)
    from collections import Counter

    from sklearn.datasets import load_digits

    full = torch.as_tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0
    full = torch.nn.functional.interpolate(full, size=(32, 32), mode="bilinear", align_corners=False)
    pooled = Counter(h for ds in splits.values() for h in _hashes(ds.tensors[0]))
    assert pooled == Counter(_hashes(full.clamp(0, 1)))
    again = data.load("digits", tmp_path, "val")
    assert torch.equal(again.tensors[0], splits["val"].tensors[0])
    assert torch.equal(again.tensors[1], splits["val"].tensors[1])


def test_digits_mean_std_match_info(tmp_path):
    x = data.load("digits", tmp_path, "train").tensors[0]
    info = data.DATASETS["digits"]
    assert abs(x.mean().item() - info.mean[0]) < 1e-3 and abs(x.std().item() - info.std[0]) < 1e-3


def test_prepare_digits(tmp_path):
    folder = data.prepare("digits", tmp_path)
    assert folder == tmp_path / "digits" and (folder / "READY").is_file()
    assert _files(tmp_path) == [folder / "READY", folder / data.DIGITS_FILE]


def _order(loader):
    return torch.cat([y for _, y in loader])


def test_loaders_reproducible(tmp_path):
    a = data.loaders("digits", tmp_path, 64, seed=0)
    b = data.loaders("digits", tmp_path, 64, seed=0)
    c = data.loaders("digits", tmp_path, 64, seed=1)
    assert set(a) == {"train", "val", "test"}
    first = torch.cat([x for x, _ in a["train"]])
    assert torch.equal(first, torch.cat([x for x, _ in b["train"]]))
    assert not torch.equal(first, torch.cat([x for x, _ in c["train"]]))
    # shuffled (differs from storage order), val/test in storage order, nothing dropped
    assert not torch.equal(first, data.load("digits", tmp_path, "train").tensors[0])
    assert torch.equal(_order(a["val"]), data.load("digits", tmp_path, "val").tensors[1])
    assert len(first) == 1257 and len(_order(a["test"])) == 360
    d = data.loaders("digits", tmp_path, 64, eval_batch_size=1000)
    assert next(iter(d["test"]))[0].shape[0] == 360
    assert not a["train"].pin_memory and a["train"].drop_last is False


# --------------------------------------------------------------------------- missing files


def test_prepare_mnist_without_network_fails_fast_and_clean(tmp_path, no_network):
    start = time.monotonic()
    with pytest.raises(data.DatasetMissing) as err:
        data.prepare("mnist", tmp_path, download=True)
    assert time.monotonic() - start < 30
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and str(tmp_path / "mnist" / "MNIST" / "raw") in msg
    assert "biofa data mnist" in msg
    assert isinstance(err.value, FileNotFoundError)
    assert _files(tmp_path) == []
    assert socket.getdefaulttimeout() is None  # restored


def test_prepare_without_download(tmp_path):
    with pytest.raises(data.DatasetMissing, match="cifar-100-python.tar.gz"):
        data.prepare("cifar100", tmp_path, download=False)
    with pytest.raises(data.DatasetMissing, match="imagenet"):
        data.prepare("imagenet", tmp_path)
    assert _files(tmp_path) == []


def test_load_cifar10_missing(tmp_path):
    with pytest.raises(data.DatasetMissing, match="cifar-10-python.tar.gz") as err:
        data.load("cifar10", tmp_path, "train")
    assert str(tmp_path / "cifar10") in str(err.value)


def test_load_imagenet_missing(tmp_path):
    with pytest.raises(data.DatasetMissing, match=str(tmp_path / "imagenet" / "train")):
        data.load("imagenet", tmp_path, "val")


# --------------------------------------------------------------------------- hand-placed files


def _idx(array: torch.Tensor) -> bytes:
    dims = array.shape
    return struct.pack(">HBB", 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + \
        array.to(torch.uint8).numpy().tobytes()


def test_prepare_uses_hand_placed_archives(tmp_path, no_network, monkeypatch):
    """Archives put where the error message says are verified, unpacked and installed offline."""
    from torchvision.datasets import MNIST

    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    arrays = {"train-images-idx3-ubyte": torch.randint(0, 256, (20, 28, 28), generator=g),
              "train-labels-idx1-ubyte": torch.arange(20) % 10,
              "t10k-images-idx3-ubyte": torch.randint(0, 256, (10, 28, 28), generator=g),
              "t10k-labels-idx1-ubyte": torch.arange(10)}
    resources = []
    for stem, arr in arrays.items():
        blob = gzip.compress(_idx(arr))
        (raw / f"{stem}.gz").write_bytes(blob)
        resources.append((f"{stem}.gz", hashlib.md5(blob).hexdigest()))
    monkeypatch.setattr(MNIST, "resources", resources)

    folder = data.prepare("mnist", tmp_path)
    assert folder == tmp_path / "mnist" and (folder / "READY").is_file()
    assert (raw / "train-images-idx3-ubyte").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    test = data.load("mnist", tmp_path, "test")
    x, y = test[3]
    assert x.shape == (1, 32, 32) and 0 <= x.min() and x.max() <= 1 and y == 3
    assert data.prepare("mnist", tmp_path, download=False) == folder  # already complete


def _write_cifar(root, cls, n_batch: int, monkeypatch=None):
    """A small CIFAR layout of random images; with ``monkeypatch`` its md5s are not checked."""
    folder = root / cls.__name__.lower() / cls.base_folder
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    labels_key = "labels" if cls.__name__ == "CIFAR10" else "fine_labels"
    for i, (fname, _) in enumerate(cls.train_list + cls.test_list):
        pixels = torch.randint(0, 256, (n_batch, 3072), generator=g, dtype=torch.uint8).numpy()
        labels = [(i * n_batch + j) % 10 for j in range(n_batch)]
        (folder / fname).write_bytes(pickle.dumps({"data": pixels, labels_key: labels}))
    (folder / cls.meta["filename"]).write_bytes(pickle.dumps({cls.meta["key"]: [str(c) for c in range(10)]}))
    if monkeypatch is not None:
        for attr in ("train_list", "test_list"):
            monkeypatch.setattr(cls, attr, [[f, None] for f, _ in getattr(cls, attr)])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": None})
    return folder


def test_cifar_views_train_augmented_val_plain(tmp_path, monkeypatch):
    """val is held out of train with the fixed seed and gets the test transform (no augmentation)."""
    from torchvision.datasets import CIFAR10

    _write_cifar(tmp_path, CIFAR10, 1200, monkeypatch)  # 6000 train images: enough for val's 5000

    train, val = data.load("cifar10", tmp_path, "train"), data.load("cifar10", tmp_path, "val")
    test = data.load("cifar10", tmp_path, "test")
    assert (len(train), len(val), len(test)) == (1000, 5000, 1200)
    assert not set(train.indices) & set(val.indices)
    x, y = val[0]
    assert x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1 and isinstance(y, int)
    assert torch.equal(x, val[0][0])  # deterministic: no augmentation on val
    assert any(not torch.equal(train[0][0], train[0][0]) for _ in range(10))  # crop/flip on train
    plain = data.load("cifar10", tmp_path, "train", augment=False)
    assert torch.equal(plain[0][0], plain[0][0])
    assert data.prepare("cifar10", tmp_path, download=False) == tmp_path / "cifar10"


# --------------------------------------------------------------------------- damaged files

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "examples" / "digits_lenet.yaml"


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"biofa {command}: error: "), err
    return err.strip()


def _cli_names_the_file(tmp_path, capsys, name: str, model: str, bad: Path, words=()):
    """``biofa data --no-download`` and ``biofa train`` both stop with one line naming ``bad``."""
    before = _files(tmp_path)
    assert main(["data", name, "--root", str(tmp_path), "--no-download"]) == 2
    line = _one_line(capsys, "data")
    assert str(bad) in line and f"biofa data {name} --root {tmp_path}" in line
    assert all(w in line for w in words), line
    run = tmp_path.parent / f"{tmp_path.name}-run"
    config = yaml.safe_load(EXAMPLE.read_text())
    config.update(dataset=name, model=model, data_root=str(tmp_path), threads=None,
                  deterministic=False, device="cpu")
    path = tmp_path.parent / f"{tmp_path.name}-run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--out", str(run)]) == 2
    assert str(bad) in _one_line(capsys, "train")
    assert not run.exists() and _files(tmp_path) == before  # no READY, no run folder
    path.unlink()
    return line


def _truncate(path: Path) -> None:
    blob = path.read_bytes()
    path.write_bytes(blob[:len(blob) // 2])


@pytest.mark.parametrize("damage, words", [
    (_truncate, ["truncated", "cannot be unpickled"]),
    (lambda p: p.write_bytes(b"this is not a pickle \x00\xff" * 50), ["cannot be unpickled"]),
    (lambda p: p.write_bytes(pickle.dumps([1, 2, 3])), ["holds a list"]),
    (lambda p: p.write_bytes(pickle.dumps({"data": torch.zeros(4, 3).numpy(), "labels": [0] * 4})),
     ["32x32 RGB"]),
])
def test_damaged_cifar10_batch_is_named(tmp_path, capsys, monkeypatch, damage, words):
    from torchvision.datasets import CIFAR10

    folder = _write_cifar(tmp_path, CIFAR10, 1200, monkeypatch)
    bad = folder / "data_batch_3"
    damage(bad)
    with pytest.raises(data.DatasetCorrupt) as err:
        data.load("cifar10", tmp_path, "train")
    msg = str(err.value)
    assert str(bad) in msg and all(w in msg for w in words), msg
    assert f"delete the folder {tmp_path / 'cifar10'}" in msg and CIFAR10.url in msg
    assert isinstance(err.value, ValueError)
    line = _cli_names_the_file(tmp_path, capsys, "cifar10", "lenet_cifar", bad, words)
    assert "cifar-10-python.tar.gz" in line


def test_cifar10_with_official_checksums_names_the_mismatching_file(tmp_path, capsys):
    from torchvision.datasets import CIFAR10

    folder = _write_cifar(tmp_path, CIFAR10, 10)  # real md5s: no synthetic file matches
    _truncate(folder / "data_batch_1")
    with pytest.raises(data.DatasetCorrupt, match="md5 checksum") as err:
        data.load("cifar10", tmp_path, "test")
    assert str(folder / "data_batch_1") in str(err.value)
    _cli_names_the_file(tmp_path, capsys, "cifar10", "lenet_cifar", folder / "data_batch_1",
                        ["md5 checksum", CIFAR10.train_list[0][1]])


def test_damaged_cifar100_is_named(tmp_path, capsys, monkeypatch):
    from torchvision.datasets import CIFAR100

    folder = _write_cifar(tmp_path, CIFAR100, 6000, monkeypatch)
    _truncate(folder / "train")
    with pytest.raises(data.DatasetCorrupt, match="truncated") as err:
        data.load("cifar100", tmp_path, "val")
    assert str(folder / "train") in str(err.value) and "cifar-100-python.tar.gz" in str(err.value)
    _cli_names_the_file(tmp_path, capsys, "cifar100", "lenet_cifar", folder / "train")
    (folder / "train").write_bytes(pickle.dumps({"data": torch.zeros(5, 3072, dtype=torch.uint8).numpy(),
                                                 "fine_labels": [0] * 4}))
    with pytest.raises(data.DatasetCorrupt, match="holds 5 images but 4 labels"):
        data.load("cifar100", tmp_path, "train")


def test_damaged_cifar_archive_is_named(tmp_path, capsys):
    archive = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(b"\x1f\x8b half a download")
    assert main(["data", "cifar10", "--root", str(tmp_path), "--no-download"]) == 2
    line = _one_line(capsys, "data")
    assert str(archive) in line and "md5" in line


def _write_mnist(root, name: str, n_train: int = 20, n_test: int = 10) -> Path:
    from torchvision import datasets

    raw = root / name / {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[name].__name__ / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        (raw / f"{split}-images-idx3-ubyte").write_bytes(_idx(torch.randint(0, 256, (n, 28, 28), generator=g)))
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(_idx(torch.arange(n) % 10))
    return raw


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("damage, words", [
    (_truncate, ["bytes long, but its header promises 20 images"]),
    (lambda p: p.write_bytes(p.read_bytes() + b"\x00" * 7), ["header promises"]),
    (lambda p: p.write_bytes(b"\x00\x00\x08\x01" + p.read_bytes()[4:]), ["magic number 0x00000803"]),
    (lambda p: p.write_bytes(b"<html>404 Not Found</html>"), ["magic number"]),
    (lambda p: p.write_bytes(b"\x00\x00"), ["too short"]),
    (lambda p: p.write_bytes(_idx(torch.zeros(20, 32, 32))), ["32x32 pixels, not 28x28"]),
])
def test_damaged_mnist_idx_file_is_named(tmp_path, capsys, name, damage, words):
    raw = _write_mnist(tmp_path, name)
    bad = raw / "train-images-idx3-ubyte"
    damage(bad)
    with pytest.raises(data.DatasetCorrupt) as err:
        data.load(name, tmp_path, "train")
    msg = str(err.value)
    assert str(bad) in msg and all(w in msg for w in words), msg
    assert "train-images-idx3-ubyte.gz" in msg and str(raw) in msg  # where good copies go
    _cli_names_the_file(tmp_path, capsys, name, "lenet_mnist", bad, words)


def test_mnist_labels_that_do_not_match_the_images(tmp_path, capsys):
    raw = _write_mnist(tmp_path, "mnist")
    (raw / "t10k-labels-idx1-ubyte").write_bytes(_idx(torch.arange(9) % 10))
    with pytest.raises(data.DatasetCorrupt, match="holds 9 labels for the 10 images"):
        data.load("mnist", tmp_path, "test")
    _cli_names_the_file(tmp_path, capsys, "mnist", "lenet_mnist", raw / "t10k-labels-idx1-ubyte")


def test_too_few_training_images_for_the_validation_split(tmp_path):
    _write_mnist(tmp_path, "mnist")  # 20 images: the files are readable, the set is not MNIST's
    with pytest.raises(data.DatasetCorrupt, match="too few for the 5000-image validation split"):
        data.load("mnist", tmp_path, "val")


def test_damaged_mnist_without_network_still_names_the_file(tmp_path, no_network):
    raw = _write_mnist(tmp_path, "mnist")
    _truncate(raw / "train-labels-idx1-ubyte")
    with pytest.raises(data.DatasetCorrupt, match="downloading a new copy failed") as err:
        data.prepare("mnist", tmp_path, download=True)
    assert str(raw / "train-labels-idx1-ubyte") in str(err.value)
    assert not (tmp_path / "mnist" / "READY").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_unknown_data_set_on_the_command_line(tmp_path, capsys):
    assert main(["data", "svhn", "--root", str(tmp_path)]) == 2
    line = _one_line(capsys, "data")
    assert "unknown data set 'svhn'" in line and "cifar10" in line
    assert _files(tmp_path) == []


@pytest.mark.parametrize("name", ["digits", "mnist", "cifar10"])
def test_data_root_that_is_a_file(tmp_path, capsys, name):
    root = tmp_path / "data"
    root.write_text("not a folder")
    for where in (root, root / "sub"):
        assert main(["data", name, "--root", str(where)]) == 2
        line = _one_line(capsys, "data")
        assert f"{root} is a file" in line and "--root" in line
        with pytest.raises(UsageError, match="is a file"):
            data.load(name, where, "test")
    assert _files(tmp_path) == [root]


def test_data_set_folder_that_is_a_file(tmp_path, capsys):
    (tmp_path / "cifar10").write_text("not a folder")
    assert main(["data", "cifar10", "--root", str(tmp_path), "--no-download"]) == 2
    line = _one_line(capsys, "data")
    assert f"{tmp_path / 'cifar10'} is a file" in line and "biofa data cifar10" in line
    with pytest.raises(data.DatasetCorrupt):
        data.load("cifar10", tmp_path, "train")


# --------------------------------------------------------------------------- stand-ins

STAND_INS = ["mnist", "fashion_mnist", "cifar10", "cifar100", "imagenet"]


def _stand_in_layout(folder: Path, name: str) -> list[str]:
    from torchvision import datasets

    if name in ("mnist", "fashion_mnist"):
        raw = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[name].__name__ + "/raw"
        return [f"{raw}/{s}-{k}" for s in ("t10k", "train") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    if name == "imagenet":
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.JPEG"))
    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    return sorted(f"{cls.base_folder}/{f}" for f, _ in cls.train_list + cls.test_list + [[cls.meta["filename"], 0]])


@pytest.mark.parametrize("name", STAND_INS)
def test_stand_in_loads_in_the_real_shapes(tmp_path, name):
    folder = data.prepare(name, tmp_path, stand_in=True)
    assert folder == tmp_path / name and data.is_stand_in(name, tmp_path)
    assert (folder / "READY").is_file() and "STAND-IN" in (folder / "STAND-IN").read_text()
    files = sorted(p.relative_to(folder).as_posix() for p in _files(folder))
    assert files == sorted(["READY", "STAND-IN", *_stand_in_layout(folder, name)])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    sizes = data.STAND_IN_SIZES[name]
    if name == "imagenet":
        n_train, n_test = sizes["classes"] * sizes["train"], sizes["classes"] * sizes["val"]
    else:
        n_train, n_test = sizes["train"], sizes["test"]
    n_val = n_train // 10
    info = data.DATASETS[name]
    splits = {s: data.load(name, tmp_path, s) for s in data.SPLITS}
    assert {s: len(d) for s, d in splits.items()} == {"train": n_train - n_val, "val": n_val, "test": n_test}
    assert not set(splits["train"].indices) & set(splits["val"].indices)
    classes = sizes.get("classes", info.num_classes)
    for split, ds in splits.items():
        for i in (0, len(ds) - 1):
            x, y = ds[i]
            assert x.shape == info.input_size and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
            assert isinstance(y, int) and 0 <= y < classes


def test_stand_in_files_are_the_real_formats(tmp_path):
    """The very readers and formats of the real sets: torchvision's MNIST (no checksums), the
    CIFAR pickles' dictionaries, JPEGs of varied size in class folders."""
    import numpy as np
    from PIL import Image
    from torchvision.datasets import MNIST, ImageFolder

    for name in ("mnist", "cifar10", "imagenet"):
        data.prepare(name, tmp_path, stand_in=True)
    mnist = MNIST(str(tmp_path / "mnist"), train=True)
    assert mnist.data.shape == (200, 28, 28) and mnist.data.dtype == torch.uint8
    assert set(mnist.targets.tolist()) == set(range(10))
    batches = tmp_path / "cifar10" / "cifar-10-batches-py"
    with open(batches / "data_batch_1", "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    assert entry["data"].shape == (40, 3072) and entry["data"].dtype == np.uint8
    assert len(entry["labels"]) == 40 and len(entry["filenames"]) == 40
    with open(batches / "batches.meta", "rb") as f:
        assert pickle.load(f, encoding="latin1")["label_names"][0] == "airplane"
    train = ImageFolder(str(tmp_path / "imagenet" / "train"))
    sizes = data.STAND_IN_SIZES["imagenet"]
    assert len(train.classes) == sizes["classes"] and train.classes[0] == "n01440764"
    assert len(train) == sizes["classes"] * sizes["train"]
    sides = set()
    for path, _ in train.samples + ImageFolder(str(tmp_path / "imagenet" / "val")).samples:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            sides |= set(image.size)
    assert min(sides) >= 60 and max(sides) <= 100 and len(set(sides)) > 4


def test_stand_in_is_seeded_and_learnable(tmp_path):
    for root in ("a", "b"):
        data.prepare("cifar10", tmp_path / root, stand_in=True)
    assert [p.read_bytes() for p in _files(tmp_path / "a")] == [p.read_bytes() for p in _files(tmp_path / "b")]
    test = data.load("cifar10", tmp_path / "a", "test")
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor([test[i][1] for i in range(len(test))])
    means = torch.stack([x[y == c].mean(0) for c in y.unique()])
    assert means.mean((1, 2, 3)).std() > 0.05  # the classes differ in colour


def test_stand_in_warns_once(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="biofa.study.data"):
        data.prepare("mnist", tmp_path, stand_in=True)
        data.loaders("mnist", tmp_path, 32)
        data.load("mnist", tmp_path, "test")
        assert data.prepare("mnist", tmp_path, stand_in=True) == tmp_path / "mnist"
    (record,) = [r for r in caplog.records if "STAND-IN" in r.getMessage()]
    assert str(tmp_path / "mnist") in record.getMessage()


def test_digits_stand_in_is_the_real_set(tmp_path):
    folder = data.prepare("digits", tmp_path, stand_in=True)
    assert _files(tmp_path) == [folder / "READY", folder / data.DIGITS_FILE] and not data.is_stand_in("digits", tmp_path)
    assert len(data.load("digits", tmp_path, "train")) == 1257


def test_stand_in_on_the_command_line(tmp_path):
    import subprocess
    import sys

    command = [sys.executable, "-m", "biofa.study.cli", "data", "mnist", "--root", str(tmp_path),
               "--stand-in"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "mnist") and "STAND-IN" in done.stderr
    before = {p: p.stat().st_mtime_ns for p in _files(tmp_path)}
    assert main(command[3:]) == 0
    assert {p: p.stat().st_mtime_ns for p in _files(tmp_path)} == before  # complete: left alone
    assert len(data.load("mnist", tmp_path, "val")) == 20


def test_one_epoch_of_training_on_a_stand_in_cifar10(tmp_path):
    from run_configs import write_config

    root = tmp_path / "data"
    assert main(["data", "cifar10", "--root", str(root), "--stand-in"]) == 0
    config = write_config(tmp_path, dataset="cifar10", model="lenet_cifar", data_root=str(root),
                          epochs=1, **{"schedule.milestones": [1]}, threads=None,
                          deterministic=False, device="cpu")
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out)]) == 0
    assert (out / "metrics.csv").is_file() and (out / "last.pt").is_file()


def test_validation_size_is_unchanged_for_real_sets():
    for name, info in data.DATASETS.items():
        n = info.splits["train"] + info.splits["val"]
        assert data.validation_size(name, n) == info.splits["val"]
        assert data.validation_size(name, 20) == info.splits["val"]  # too few: refused by load
    assert data.validation_size("mnist", 200, stand_in=True) == 20
    assert data.validation_size("imagenet", 60, stand_in=True) == 6
    assert data.validation_size("cifar10", 5, stand_in=True) == 1


def test_without_the_marker_stand_in_files_are_refused(tmp_path, capsys):
    """The checksum checks are skipped only because of the marker: without it a stand-in is
    foreign files, refused as before."""
    from torchvision.datasets import CIFAR10

    for name in ("cifar10", "mnist", "imagenet"):
        data.prepare(name, tmp_path, stand_in=True)
        (tmp_path / name / "STAND-IN").unlink()
    capsys.readouterr()  # the stand-ins' warnings
    with pytest.raises(data.DatasetCorrupt, match="md5 checksum") as err:
        data.load("cifar10", tmp_path, "test")
    assert str(tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_1") in str(err.value)
    assert main(["data", "cifar10", "--root", str(tmp_path), "--no-download"]) == 2
    assert CIFAR10.train_list[0][1] in _one_line(capsys, "data")
    with pytest.raises(data.DatasetCorrupt, match="too few for the 5000-image validation split"):
        data.load("mnist", tmp_path, "val")
    with pytest.raises(data.DatasetMissing, match="1000 WordNet ids"):
        data.load("imagenet", tmp_path, "train")


def test_damaged_stand_in_file_is_named(tmp_path):
    folder = data.prepare("cifar10", tmp_path, stand_in=True) / "cifar-10-batches-py"
    _truncate(folder / "data_batch_3")
    with pytest.raises(data.DatasetCorrupt, match="truncated") as err:
        data.load("cifar10", tmp_path, "train")
    assert str(folder / "data_batch_3") in str(err.value)
    assert f"biofa data cifar10 --root {tmp_path} --stand-in" in str(err.value)


def test_stand_in_is_never_written_over_real_files(tmp_path, capsys):
    from torchvision.datasets import CIFAR10

    _write_cifar(tmp_path, CIFAR10, 10)
    _write_mnist(tmp_path, "mnist")
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    before = {p: p.read_bytes() for p in _files(tmp_path)}
    for name in ("cifar10", "mnist", "imagenet"):
        with pytest.raises(UsageError, match="another --root") as err:
            data.prepare(name, tmp_path, stand_in=True)
        assert str(tmp_path / name) in str(err.value) and "already holds files" in str(err.value)
    assert main(["data", "cifar10", "--root", str(tmp_path), "--stand-in"]) == 2
    assert "another --root" in _one_line(capsys, "data")
    assert {p: p.read_bytes() for p in _files(tmp_path)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar10", "imagenet", "mnist"]


@pytest.mark.parametrize("name", ["cifar10", "mnist", "imagenet"])
def test_real_data_are_never_written_over_a_stand_in(tmp_path, capsys, no_network, name):
    data.prepare(name, tmp_path, stand_in=True)
    capsys.readouterr()
    before = {p: p.read_bytes() for p in _files(tmp_path)}
    for download in (True, False):
        with pytest.raises(UsageError, match="holds a stand-in") as err:
            data.prepare(name, tmp_path, download=download)
        assert str(tmp_path / name) in str(err.value) and "another --root" in str(err.value)
    assert main(["data", name, "--root", str(tmp_path)]) == 2
    assert "holds a stand-in" in _one_line(capsys, "data")
    assert {p: p.read_bytes() for p in _files(tmp_path)} == before


def test_prepared_digits_are_scikit_learns_read_without_it(tmp_path):
    """biofa data digits keeps the images as NumPy arrays: the loaders give the same tensors
    as from scikit-learn itself, without importing sklearn.datasets, and a damaged file is
    named with the command that writes it again."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    data.prepare("digits", tmp_path)
    bunch = load_digits()
    images, labels = data._read_digits(str(tmp_path))
    assert (images == bunch.images).all() and (labels == bunch.target).all()
    saved = data.load("digits", tmp_path, "train")
    (tmp_path / "elsewhere" / "digits").mkdir(parents=True)  # no digits.npz there
    from_sklearn = data.load("digits", tmp_path / "elsewhere", "train")
    assert torch.equal(saved.tensors[0], from_sklearn.tensors[0])
    assert torch.equal(saved.tensors[1], from_sklearn.tensors[1])
    code = ("import sys; from biofa.study import data; data.load('digits', sys.argv[1], 'test'); "
            "print('sklearn.datasets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "False"
    (tmp_path / "digits" / data.DIGITS_FILE).write_bytes(b"not a zip")
    data._digits_tensors.cache_clear()
    with pytest.raises(data.DatasetCorrupt, match="biofa data digits --root"):
        data.load("digits", tmp_path, "test")
