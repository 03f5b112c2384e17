"""Data sets: offline digits, fixed splits, and fast, clean failure without network.

No test touches the network: the download tests cut it off by patching sockets.
"""

from __future__ import annotations

import gzip
import hashlib
import socket
import struct
import time

import pytest
import torch

from biofa import data


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
    assert _files(tmp_path) == [folder / "READY"]


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


def test_cifar_views_train_augmented_val_plain(tmp_path, monkeypatch):
    """val is held out of train with the fixed seed and gets the test transform (no augmentation)."""
    import pickle

    from torchvision.datasets import CIFAR10

    folder = tmp_path / "cifar10" / CIFAR10.base_folder
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    n_batch = 1200  # 6000 train images: enough for the 5000-image val split
    for i, (fname, _) in enumerate(CIFAR10.train_list + CIFAR10.test_list):
        pixels = torch.randint(0, 256, (n_batch, 3072), generator=g, dtype=torch.uint8).numpy()
        labels = [(i * n_batch + j) % 10 for j in range(n_batch)]
        (folder / fname).write_bytes(pickle.dumps({"data": pixels, "labels": labels}))
    (folder / CIFAR10.meta["filename"]).write_bytes(pickle.dumps({"label_names": [str(c) for c in range(10)]}))
    for attr in ("train_list", "test_list"):
        monkeypatch.setattr(CIFAR10, attr, [[f, None] for f, _ in getattr(CIFAR10, attr)])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": None})

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
