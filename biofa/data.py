"""Data sets of the benchmark, each by name, always with a validation split.

Why a validation split everywhere: model selection (learning rate, epochs, ...)
must never look at the test set, so every data set has a fixed ``val`` split
carved out of its official training set with a fixed seed.

Images come out in [0, 1] and are *not* normalised: models normalise inside
their first layer (:class:`biofa.models.common.Normalize`), which keeps
adversarial attacks and these pipelines in pixel space.  The statistics they
need are in :data:`DATASETS` (``info.mean`` / ``info.std``).

On-disk layout (``root`` is what ``biofa data NAME --root DIR`` gets)::

    root/digits/READY                               (nothing to download)
    root/mnist/MNIST/raw/train-images-idx3-ubyte ...
    root/fashion_mnist/FashionMNIST/raw/...
    root/cifar10/cifar-10-batches-py/...
    root/cifar100/cifar-100-python/...
    root/imagenet/train/<wnid>/*.JPEG, root/imagenet/val/<wnid>/*.JPEG
    root/<name>/READY                               (written last, atomically)

>>> from biofa import data
>>> dl = data.loaders("digits", "data", batch_size=64)   # {'train', 'val', 'test'}
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import tempfile
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from .errors import DatasetCorrupt, DatasetMissing, UsageError

__all__ = ["DATASETS", "DatasetInfo", "DatasetMissing", "SPLITS", "load", "loaders", "prepare",
           "split_indices"]

SPLITS = ("train", "val", "test")
SEED = 0  # the fixed seed of every train/val split; changing it changes the benchmark
DOWNLOAD_TIMEOUT_S = 10.0  # per socket operation; without network we must fail fast


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a report need to know about a data set, without loading it."""

    name: str
    num_classes: int
    input_size: tuple[int, int, int]  # (C, H, W) as the model receives it
    mean: tuple[float, ...]  # per channel, for the model's Normalize layer
    std: tuple[float, ...]
    splits: dict[str, int] = field(hash=False)  # number of examples in train / val / test
    description: str = ""


_MNIST_MEAN, _MNIST_STD = (0.1307,), (0.3081,)

DATASETS: dict[str, DatasetInfo] = {
    i.name: i
    for i in (
        DatasetInfo("digits", 10, (1, 32, 32), (0.3048,), (0.3232,),
                    {"train": 1257, "val": 180, "test": 360},
                    "scikit-learn's 8x8 handwritten digits upsampled to 32x32; ships with "
                    "scikit-learn, so it is the offline smoke-test data set"),
        DatasetInfo("mnist", 10, (1, 32, 32), _MNIST_MEAN, _MNIST_STD,
                    {"train": 55000, "val": 5000, "test": 10000},
                    "MNIST resized to 32x32 for LeNet; 5k validation held out of the 60k train set"),
        DatasetInfo("fashion_mnist", 10, (1, 32, 32), (0.2860,), (0.3530,),
                    {"train": 55000, "val": 5000, "test": 10000},
                    "Fashion-MNIST resized to 32x32; 5k validation held out of the 60k train set"),
        DatasetInfo("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                    {"train": 45000, "val": 5000, "test": 10000},
                    "CIFAR-10, the paper's 45k/5k split of the official train set; "
                    "crop+flip augmentation on train"),
        DatasetInfo("cifar100", 100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                    {"train": 45000, "val": 5000, "test": 10000},
                    "CIFAR-100, same 45k/5k split scheme as CIFAR-10"),
        DatasetInfo("imagenet", 1000, (3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                    {"train": 1271167, "val": 10000, "test": 50000},
                    "ILSVRC-2012 from ImageFolder trees; 10k validation held out of train, "
                    "the official val set is the test set; never downloaded"),
    )
}


def _info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise UsageError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}") from None


def split_indices(n: int, n_val: int, seed: int = SEED) -> tuple[list[int], list[int]]:
    """Split ``range(n)`` into (train, val) index lists with a fixed-seed permutation.

    Pure and deterministic so that the held-out validation set is the same on
    every machine and every run; both lists are sorted (storage order reads
    faster, and the train loader shuffles anyway).
    """
    if not 0 <= n_val <= n:
        raise UsageError(f"n_val={n_val} must be within [0, n={n}]")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())


# --------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=1)
def _digits_tensors() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Precompute the three digits splits once per process (about 30 MB).

    The tensors are shared between calls: do not modify them in place.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N,1,8,8) in [0,1]
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = x.clamp_(0.0, 1.0).contiguous()
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    sizes = DATASETS["digits"].splits
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(SEED))
    out, start = {}, 0
    for split in SPLITS:
        idx = perm[start:start + sizes[split]].sort().values
        out[split] = (x[idx], y[idx])
        start += sizes[split]
    assert start == len(x), "digits split sizes must add up to the 1797 images"
    return out


# --------------------------------------------------------------------------- torchvision sets


def _tv_class(name: str):
    from torchvision import datasets

    return {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST,
            "cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]


def _files_folder(name: str, root: Path) -> Path:
    """The exact folder where a user who downloads by hand must put the files."""
    if name in ("mnist", "fashion_mnist"):
        return root / name / _tv_class(name).__name__ / "raw"  # torchvision's MNIST.raw_folder
    return root / name


def _missing_message(name: str, root: Path, cause: object = None) -> str:
    """Explain which files are missing, where they go, and how to retry."""
    root = Path(root)
    folder = _files_folder(name, root)
    retry = f"then run `biofa data {name} --root {root}` (or biofa.data.prepare({name!r}, {str(root)!r}))"
    if name == "imagenet":
        base = root / "imagenet"
        text = (f"data set 'imagenet' is missing or incomplete: expected {base / 'train'} and "
                f"{base / 'val'}, each with one sub-folder per class (1000 WordNet ids such as "
                f"n01440764) holding the JPEGs. ImageNet cannot be downloaded automatically: get "
                f"ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org, unpack them "
                f"into those folders (sort val into class folders, e.g. with the usual valprep.sh), {retry}.")
    else:
        cls = _tv_class(name)
        if name in ("mnist", "fashion_mnist"):
            missing = [f for f, _ in cls.resources
                       if not (folder / f).exists() and not (folder / f.removesuffix(".gz")).exists()]
            missing = missing or [f for f, _ in cls.resources]  # present but corrupt
            urls = cls.mirrors[0]
            text = (f"data set {name!r} is missing or incomplete: missing files {', '.join(missing)} "
                    f"(from {urls}). Put them (gzipped, or unpacked without .gz) into the folder "
                    f"{folder} , {retry}.")
        else:
            text = (f"data set {name!r} is missing or incomplete: missing file {cls.filename} "
                    f"(from {cls.url}, md5 {cls.tgz_md5}) or its unpacked folder "
                    f"{folder / cls.base_folder}. Put {cls.filename} into the folder {folder} , {retry}.")
    if cause is not None:
        text += f" (cause: {cause})"
    return text


def _tv_complete(name: str, tv_root: Path) -> bool:
    """torchvision's own existence/integrity check, without loading the data."""
    cls = _tv_class(name)
    probe = cls.__new__(cls)  # the checks only need root (and the class attributes)
    probe.root = str(tv_root)
    if name in ("mnist", "fashion_mnist"):
        return probe._check_exists()
    return probe._check_integrity()


@functools.lru_cache(maxsize=4)
def _tv_base(name: str, root: str, train: bool) -> Dataset:
    """The underlying torchvision data set, returning PIL images (cached: CIFAR md5-checks 170 MB)."""
    try:
        return _tv_class(name)(root=os.path.join(root, name), train=train, download=False)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DatasetMissing(_missing_message(name, Path(root), err)) from err


@functools.lru_cache(maxsize=4)
def _imagenet_base(root: str, folder: str) -> Dataset:
    from torchvision.datasets import ImageFolder

    path = Path(root) / "imagenet" / folder
    if not _imagenet_complete(Path(root)):
        raise DatasetMissing(_missing_message("imagenet", Path(root)))
    return ImageFolder(str(path))


def _imagenet_complete(root: Path) -> bool:
    n = DATASETS["imagenet"].num_classes
    for folder in ("train", "val"):
        path = root / "imagenet" / folder
        if not path.is_dir() or sum(1 for p in path.iterdir() if p.is_dir()) != n:
            return False
    return True


class Transformed(Dataset):
    """A view of a data set with its own transform.

    Why: the train and val splits come from the same files but need different
    transforms (augmentation only on train); two light views of one loaded data
    set avoid loading it twice.
    """

    def __init__(self, base: Dataset, transform: Callable | None):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, label = self.base[index]
        return (self.transform(image) if self.transform is not None else image), int(label)


def _transforms(name: str, train: bool) -> Callable:
    """Pixel transforms ending in ToTensor (values in [0, 1]); never Normalize."""
    from torchvision import transforms as T

    if name in ("mnist", "fashion_mnist"):
        return T.Compose([T.Resize(32), T.ToTensor()])  # LeNet-5 expects 32x32
    if name in ("cifar10", "cifar100"):
        if train:
            return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])
        return T.ToTensor()
    if name == "imagenet":
        if train:
            return T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor()])
        return T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
    raise UsageError(name)


# --------------------------------------------------------------------------- public API


def load(name: str, root: str | os.PathLike, split: str, *, augment: bool = True) -> Dataset:
    """Data set ``name``'s ``split`` ("train", "val" or "test") of (image in [0, 1], int label).

    ``val`` is held out of the official training set with a fixed seed and uses
    the test-time transforms; augmentation applies only to ``train`` (and only
    when ``augment``).  Never downloads: missing files raise
    :class:`DatasetMissing` telling how to get them (see :func:`prepare`).
    """
    info = _info(name)
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    root = os.path.abspath(os.fspath(root))

    if name == "digits":
        return TensorDataset(*_digits_tensors()[split])

    if name == "imagenet":
        base = _imagenet_base(root, "val" if split == "test" else "train")
    else:
        base = _tv_base(name, root, split != "test")
    transform = _transforms(name, train=(split == "train" and augment))
    view = Transformed(base, transform)
    if split == "test":
        return view
    train_idx, val_idx = split_indices(len(base), info.splits["val"], SEED)
    return Subset(view, train_idx if split == "train" else val_idx)


def _write_ready(folder: Path, name: str) -> None:
    """Write the READY marker atomically, so that a crash never leaves a half marker."""
    fd, tmp = tempfile.mkstemp(prefix=".READY.", dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write(f"{name}\n")
    os.replace(tmp, folder / "READY")


def prepare(name: str, root: str | os.PathLike, download: bool = True) -> Path:
    """Make sure data set ``name`` is complete under ``root``; return ``root/name``.

    Used by ``biofa data NAME --root DIR`` (a workflow's data rule, whose
    output is ``root/name/READY``).  Downloads go to a temporary folder next to
    the target and are moved into place only after torchvision's integrity
    check passes, so an interrupted or failed download never leaves files that
    look like a data set.  Files placed by hand in the folder that the error
    message names are used instead of downloading.  Without network it fails
    within seconds with :class:`DatasetMissing`.
    """
    _info(name)
    root = Path(root).absolute()
    target = root / name

    if name == "digits":  # ships with scikit-learn
        target.mkdir(parents=True, exist_ok=True)
        _write_ready(target, name)
        return target

    if name == "imagenet":
        if not _imagenet_complete(root):
            raise DatasetMissing(_missing_message(name, root))
        _write_ready(target, name)
        return target

    if target.is_dir() and _tv_complete(name, target):
        _write_ready(target, name)
        return target
    if not download:
        raise DatasetMissing(_missing_message(name, root, "download=False"))

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=root))
    old_timeout = socket.getdefaulttimeout()
    try:
        if target.is_dir():  # reuse files put there by hand (torchvision skips verified archives)
            shutil.copytree(target, tmp, dirs_exist_ok=True, copy_function=_link_or_copy)
            (tmp / "READY").unlink(missing_ok=True)
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            _tv_class(name)(root=str(tmp), train=False, download=True)
        except (urllib.error.URLError, OSError, RuntimeError) as err:
            raise DatasetMissing(_missing_message(name, root, f"download failed: {err}")) from err
        finally:
            socket.setdefaulttimeout(old_timeout)
        if not _tv_complete(name, tmp):
            raise DatasetMissing(_missing_message(name, root, "downloaded files failed the integrity check"))
        _install(tmp, target, name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _write_ready(target, name)
    return target


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _install(tmp: Path, target: Path, name: str) -> None:
    """Move a verified download into place; an incomplete old folder is set aside first."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=target.parent))
        os.replace(target, old / name)
    try:
        os.replace(tmp, target)
    except OSError:
        if not (target.is_dir() and _tv_complete(name, target)):  # a concurrent prepare won the race
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def loaders(name: str, root: str | os.PathLike, batch_size: int, *, workers: int = 0, seed: int = 0,
            augment: bool = True, eval_batch_size: int | None = None,
            device: str | torch.device | None = None) -> dict[str, DataLoader]:
    """DataLoaders for the three splits: {"train", "val", "test"}.

    The train loader shuffles with its own ``torch.Generator`` seeded by
    ``seed``, so the order of batches (and the augmentation seeds of worker
    processes) are reproducible, and a run can be resumed by restoring the
    generator's state.  val/test are not shuffled.
    """
    pin = device is not None and torch.device(device).type == "cuda"
    common = dict(num_workers=workers, pin_memory=pin, persistent_workers=workers > 0, drop_last=False)
    out = {}
    for split in SPLITS:
        ds = load(name, root, split, augment=augment)
        if split == "train":
            out[split] = DataLoader(ds, batch_size=batch_size, shuffle=True,
                                    generator=torch.Generator().manual_seed(seed), **common)
        else:
            out[split] = DataLoader(ds, batch_size=eval_batch_size or batch_size, shuffle=False, **common)
    return out
