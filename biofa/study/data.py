"""Data sets of the benchmark, each by name, always with a validation split.

Why a validation split everywhere: model selection (learning rate, epochs, ...)
must never look at the test set, so every data set has a fixed ``val`` split
carved out of its official training set with a fixed seed.

Images come out in [0, 1] and are *not* normalised: models normalise inside
their first layer (:class:`biofa.models.common.Normalize`), which keeps
adversarial attacks and these pipelines in pixel space.  The statistics they
need are in :data:`DATASETS` (``info.mean`` / ``info.std``).

On-disk layout (``root`` is what ``biofa data NAME --root DIR`` gets)::

    root/digits/digits.npz, READY                   (scikit-learn's, nothing to download)
    root/mnist/MNIST/raw/train-images-idx3-ubyte ...
    root/fashion_mnist/FashionMNIST/raw/...
    root/cifar10/cifar-10-batches-py/...
    root/cifar100/cifar-100-python/...
    root/imagenet/train/<wnid>/*.JPEG, root/imagenet/val/<wnid>/*.JPEG
    root/<name>/READY                               (written last, atomically)
    root/<name>/STAND-IN                            (only in a stand-in, see below)

Stand-ins (``biofa data NAME --root DIR --stand-in``, :func:`prepare` with
``stand_in=True``) are tiny, seeded, random data sets in each set's real files and
layout, for a smoke run of a whole study on a machine without the real data: idx
files for MNIST and Fashion-MNIST, the python pickles for CIFAR, an ImageFolder tree
of JPEGs for ImageNet (sizes in :data:`STAND_IN_SIZES`; digits ships with
scikit-learn, so its "stand-in" is the real set, prepared as usual).  Their files
cannot match the official md5 checksums, and biofa steps around them explicitly:
:func:`prepare` writes the marker file ``root/<name>/STAND-IN`` into the stand-in, and
only while that marker is there do the loaders skip checksums (CIFAR is read by a
torchvision subclass whose integrity check asks only that every pickle exists and
parses), accept ImageNet with fewer than 1000 classes, hold out a tenth of the
training images for ``val`` instead of the real count (:func:`validation_size`), and
log a warning, once per process and folder, that the data are a stand-in.  Without
the marker nothing changes: the real checks refuse a foreign file as before.  Real
data and a stand-in never share a folder: a stand-in is refused where the real files
are (or any other file), and the real data are refused over a stand-in; use another
``root`` for each.

>>> from biofa import data
>>> dl = data.loaders("digits", "data", batch_size=64)   # {'train', 'val', 'test'}
"""

from __future__ import annotations

import functools
import logging
import math
import os
import pickle
import shutil
import socket
import struct
import tempfile
import urllib.error
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, TensorDataset

from ..errors import DatasetCorrupt, DatasetMissing, UsageError

__all__ = ["DATASETS", "DatasetInfo", "DatasetMissing", "SPLITS", "STAND_IN", "STAND_IN_SIZES",
           "is_stand_in", "load", "loaders", "prepare", "split_indices", "validation_size"]

log = logging.getLogger("biofa.study.data")

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


#: scikit-learn's digits as ``biofa data digits`` keeps them: the 8x8 images (0-16) and
#: labels, read with NumPy alone; importing ``sklearn.datasets`` costs a second or more of
#: every job's start.
DIGITS_FILE = "digits.npz"
DIGITS_SHAPE = (1797, 8, 8)


def _digits_arrays():
    """(images, labels) of scikit-learn's bundled digits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


def _write_digits(target: Path) -> None:
    import numpy as np

    images, labels = _digits_arrays()
    tmp = target / f".{DIGITS_FILE}.partial"
    with open(tmp, "wb") as handle:
        np.savez(handle, images=images.astype(np.uint8), labels=labels.astype(np.uint8))
    os.replace(tmp, target / DIGITS_FILE)


def _read_digits(root: str):
    """The digits ``biofa data digits`` saved under ``root``, or scikit-learn's own."""
    import numpy as np

    path = Path(root) / "digits" / DIGITS_FILE
    if not path.exists():
        return _digits_arrays()
    try:
        with np.load(path, allow_pickle=False) as saved:
            images, labels = saved["images"], saved["labels"]
    except (OSError, ValueError, KeyError) as error:
        raise DatasetCorrupt(f"data set 'digits': {path} is unreadable ({error}); run "
                             f"biofa data digits --root {root} to write it again") from None
    if images.shape != DIGITS_SHAPE or labels.shape != DIGITS_SHAPE[:1] or images.max() > 16 \
            or labels.max() > 9:
        raise DatasetCorrupt(f"data set 'digits': {path} does not hold scikit-learn's digits; "
                             f"run biofa data digits --root {root} to write it again")
    return images, labels


@functools.lru_cache(maxsize=4)
def _digits_tensors(root: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Precompute the three digits splits once per process (about 30 MB).

    The tensors are shared between calls: do not modify them in place.
    """
    images, labels = _read_digits(root)
    x = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N,1,8,8) in [0,1]
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = x.clamp_(0.0, 1.0).contiguous()
    y = torch.as_tensor(labels, dtype=torch.long)
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
    retry = f"then run `biofa data {name} --root {root}` (or biofa.study.data.prepare({name!r}, {str(root)!r}))"
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


def _archives(name: str) -> list[tuple[str, str | None]]:
    """The downloadable archives of a torchvision set, relative to ``root/name``, with md5."""
    cls = _tv_class(name)
    if name in ("mnist", "fashion_mnist"):
        return [(f"{cls.__name__}/raw/{f}", md5) for f, md5 in cls.resources]
    return [(cls.filename, cls.tgz_md5)]


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:300]


_IDX = {"images": (0x0803, 3), "labels": (0x0801, 1)}  # MNIST's idx magic numbers and ranks


def _idx_problem(path: Path, kind: str) -> tuple[str | None, int]:
    """Why an MNIST idx file is unreadable (None if it is fine), and its number of items.

    Only the header and the file size are read: a whole-file check would cost as much
    as loading, and the header already catches truncation and wrong files.
    """
    magic, rank = _IDX[kind]
    header = 4 + 4 * rank
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(header)
    if len(head) < 4:
        return f"it is {size} bytes long, too short for an idx file", 0
    found = int.from_bytes(head[:4], "big")
    if found != magic:
        return (f"it starts with 0x{found:08x}, not the magic number 0x{magic:08x} of an idx file "
                f"of {kind}; it is not an unpacked MNIST {kind} file"), 0
    if len(head) < header:
        return f"it is {size} bytes long, shorter than its {header}-byte header", 0
    dims = struct.unpack(f">{rank}I", head[4:])
    if kind == "images" and dims[1:] != (28, 28):
        return f"its images are {dims[1]}x{dims[2]} pixels, not 28x28", 0
    expected = header + math.prod(dims)
    if size != expected:
        return (f"it is {size} bytes long, but its header promises {dims[0]} {kind}, "
                f"{expected} bytes (a truncated or damaged file)"), 0
    return None, dims[0]


def _pickle_problem(path: Path, meta_key: str | None) -> str | None:
    """Why a CIFAR pickle is unreadable, or None; ``meta_key`` is set for the meta file."""
    import numpy as np

    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as err:  # garbage can raise nearly anything from the unpickler
        truncated = isinstance(err, EOFError) or "truncated" in str(err)
        return f"{'truncated: ' if truncated else ''}it cannot be unpickled ({_one_line(err)})"
    if not isinstance(entry, dict):
        return f"it holds a {type(entry).__name__}, not the dictionary of a CIFAR batch"
    if meta_key is not None:
        return None if meta_key in entry else f"it has no {meta_key!r} entry"
    images = entry.get("data")
    labels = entry.get("labels", entry.get("fine_labels"))
    if not isinstance(images, np.ndarray) or images.ndim != 2 or images.shape[1] != 3 * 32 * 32 \
            or images.dtype != np.uint8:
        return "its 'data' entry is not an array of 32x32 RGB images (N x 3072 bytes)"
    if labels is None or len(labels) != len(images):
        return f"it holds {len(images)} images but {0 if labels is None else len(labels)} labels"
    return None


def _problem(name: str, root: Path, verified: bool = False,
             stand_in: bool = False) -> tuple[Path, str] | None:
    """The first file of data set ``name`` that is on disk but unreadable, and why.

    Missing files are not problems here (they are :class:`DatasetMissing`'s business).
    ``verified``: torchvision's own md5 check just passed, so files with an official
    checksum are not hashed again.  ``stand_in``: the folder holds a stand-in (its
    marker is there), whose files are parsed instead of md5-checked and has no archives.
    """
    cls = _tv_class(name)
    complete = True
    if name in ("mnist", "fashion_mnist"):
        raw = _files_folder(name, root)
        for split in ("train", "t10k"):
            counts = {}
            for kind in ("images", "labels"):
                path = raw / f"{split}-{kind}-idx{_IDX[kind][1]}-ubyte"
                if not path.exists():
                    complete = False
                    continue
                if not path.is_file():
                    return path, "it is not a file"
                reason, counts[kind] = _idx_problem(path, kind)
                if reason:
                    return path, reason
            if len(counts) == 2 and counts["images"] != counts["labels"]:
                return (raw / f"{split}-labels-idx1-ubyte",
                        f"it holds {counts['labels']} labels for the {counts['images']} images "
                        f"of {split}-images-idx3-ubyte")
    else:
        folder = root / name / cls.base_folder
        files = [(f, md5, None) for f, md5 in cls.train_list + cls.test_list]
        files.append((cls.meta["filename"], cls.meta["md5"], cls.meta["key"]))
        for fname, md5, meta_key in files:
            path = folder / fname
            md5 = None if stand_in else md5
            if not path.exists():
                complete = False
                continue
            if not path.is_file():
                return path, "it is not a file"
            if md5 is not None:
                if not verified:
                    from torchvision.datasets.utils import calculate_md5

                    actual = calculate_md5(str(path))
                    if actual != md5:
                        return path, (f"its md5 checksum is {actual}, not the official {md5} "
                                      "(a truncated download or a different file)")
                continue
            reason = _pickle_problem(path, meta_key)
            if reason:
                return path, reason
    if not complete and not stand_in:  # the archive is what a repair would unpack: check it too
        from torchvision.datasets.utils import check_integrity

        for relative, md5 in _archives(name):
            path = root / name / relative
            if path.is_file() and md5 is not None and not check_integrity(str(path), md5):
                return path, f"its md5 checksum is not the official {md5} (a truncated download?)"
    return None


def _corrupt_message(name: str, root: Path, path: Path, reason: str, cause: object = None) -> str:
    """Name the unreadable file and the two ways to a good copy (network or by hand)."""
    root = Path(root)
    if is_stand_in(name, root):
        text = (f"data set {name!r}: the file {path} of the stand-in in {root / name} is corrupt: "
                f"{reason}. To write a new stand-in, delete the folder {root / name} and run "
                f"`biofa data {name} --root {root} --stand-in`.")
        return text + (f" ({cause})" if cause is not None else "")
    cls = _tv_class(name)
    if name in ("mnist", "fashion_mnist"):
        files, source = ", ".join(f for f, _ in cls.resources), cls.mirrors[0]
    else:
        files, source = f"{cls.filename} (md5 {cls.tgz_md5})", cls.url
    text = (f"data set {name!r}: the file {path} is corrupt: {reason}. To get a good copy, delete "
            f"the folder {root / name} and run `biofa data {name} --root {root}`; on a machine "
            f"without network, first put {files} from {source} into the folder "
            f"{_files_folder(name, root)} .")
    if cause is not None:
        text += f" ({cause})"
    return text


def _check_folder(root: Path, name: str) -> None:
    """Refuse a data root (or data set folder) that is a file, before anything reads or writes."""
    probe = root / name
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.is_dir() or not probe.exists():
        return
    if probe == root / name or root / name in probe.parents:
        raise DatasetCorrupt(f"data set {name!r}: {probe} is a file, where the data set's folder "
                             f"belongs; delete it and run `biofa data {name} --root {root}`")
    what = f"data root {root} is a file" if probe == root else \
        f"data root {root} is not a folder: {probe} is a file"
    raise UsageError(f"{what}; pass a folder as --root (or data_root in the run config); "
                     "it is created if missing")


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
    """The underlying torchvision data set, returning PIL images (cached: CIFAR md5-checks 170 MB).

    A stand-in (its marker is in the folder) is read by :func:`_stand_in_class`'s reader,
    which does not check the official md5 checksums.
    """
    stand_in = is_stand_in(name, root)
    cls = _stand_in_class(name) if stand_in else _tv_class(name)
    try:
        base = cls(root=os.path.join(root, name), train=train, download=False)
    except Exception as err:  # torchvision: "Dataset not found or corrupted", or a reader's error
        problem = _problem(name, Path(root), stand_in=stand_in)
        if problem is not None:
            raise DatasetCorrupt(_corrupt_message(name, Path(root), *problem)) from err
        if isinstance(err, RuntimeError):
            raise DatasetMissing(_missing_message(name, Path(root), err)) from err
        raise  # readable files that torchvision still cannot load: a bug, keep the traceback
    problem = None
    if name in ("mnist", "fashion_mnist"):  # torchvision checks existence only; headers are cheap
        problem = _problem(name, Path(root), verified=True, stand_in=stand_in)
    elif len(base.data) != len(base.targets):  # torchvision does not compare the two
        problem = _problem(name, Path(root), stand_in=stand_in) or (
            Path(root) / name / base.base_folder,
            f"its files hold {len(base.data)} images but {len(base.targets)} labels")
    if problem is not None:
        raise DatasetCorrupt(_corrupt_message(name, Path(root), *problem))
    return base


@functools.lru_cache(maxsize=4)
def _imagenet_base(root: str, folder: str) -> Dataset:
    from torchvision.datasets import ImageFolder

    path = Path(root) / "imagenet" / folder
    if is_stand_in("imagenet", root):
        if not _imagenet_complete(Path(root), stand_in=True):
            raise DatasetMissing(f"the stand-in of data set 'imagenet' in {Path(root) / 'imagenet'} "
                                 "is incomplete: its train and val folders must hold the same class "
                                 "folders; delete the folder and run `biofa data imagenet --root "
                                 f"{root} --stand-in`")
    elif not _imagenet_complete(Path(root)):
        raise DatasetMissing(_missing_message("imagenet", Path(root)))
    return ImageFolder(str(path))


def _imagenet_complete(root: Path, stand_in: bool = False) -> bool:
    """The real set: 1000 class folders in train and in val; a stand-in: the same few in both."""
    n = DATASETS["imagenet"].num_classes
    classes = []
    for folder in ("train", "val"):
        path = root / "imagenet" / folder
        if not path.is_dir():
            return False
        classes.append(sorted(p.name for p in path.iterdir() if p.is_dir()))
        if not stand_in and len(classes[-1]) != n:
            return False
    return not stand_in or (bool(classes[0]) and classes[0] == classes[1])


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


# --------------------------------------------------------------------------- stand-ins

STAND_IN = "STAND-IN"  # the marker file in root/<name>/ of a stand-in; see the module docstring
STAND_IN_SIZES: dict[str, dict[str, int]] = {
    "mnist": {"train": 200, "test": 50},  # images in the train / test files (val: a tenth of train)
    "fashion_mnist": {"train": 200, "test": 50},
    "cifar10": {"train": 200, "test": 50},  # 40 in each of data_batch_1..5
    "cifar100": {"train": 200, "test": 50},
    # JPEGs per class in train/ and val/: ResNet-18 at 224 px holds a batch of all of them in
    # memory (about 0.2 GB an image in training with the alignment measurement)
    "imagenet": {"classes": 4, "train": 3, "val": 1},
}
_IMAGENET_WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331",
                   "n01498041", "n01514668", "n01514859", "n01518878")  # the first ten of the real 1000
_CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                  "truck")
_WARNED: set[tuple[str, str]] = set()


def is_stand_in(name: str, root: str | os.PathLike) -> bool:
    """Whether ``root/name`` holds a stand-in (its ``STAND-IN`` marker file is there)."""
    return (Path(root) / name / STAND_IN).is_file()


def _warn_stand_in(name: str, root: str) -> None:
    if (name, root) not in _WARNED:
        _WARNED.add((name, root))
        log.warning("biofa: data set %r in %s is a STAND-IN (tiny random images, marker %s), not "
                    "the real data set: its checksums are not verified and its numbers mean nothing",
                    name, os.path.join(root, name), os.path.join(root, name, STAND_IN))


@functools.lru_cache(maxsize=None)
def _stand_in_class(name: str):
    """torchvision's reader of data set ``name``, for a stand-in.

    MNIST's reader checks no checksums (it only reads the idx files), so it is used as is.
    CIFAR's checks the official md5 of every pickle, which a stand-in cannot match: its
    subclass here lists the same files without checksums, and its integrity check asks only
    that each pickle exists and parses as a CIFAR batch.
    """
    cls = _tv_class(name)
    if name in ("mnist", "fashion_mnist"):
        return cls

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / f).is_file() and _pickle_problem(folder / f, None) is None
                   for f, _ in self.train_list + self.test_list)

    return type(f"StandIn{cls.__name__}", (cls,), {
        "__doc__": f"{cls.__name__} reading a biofa stand-in: files must exist and parse, no md5.",
        "__module__": __name__,
        "train_list": [[f, None] for f, _ in cls.train_list],
        "test_list": [[f, None] for f, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None},
        "_check_integrity": _check_integrity,
    })


def _noise_images(rng, labels, means, shape: tuple[int, ...], channel_axis: int | None):
    """uint8 images of ``shape`` each: noise around its class's colour ``means[label]``.

    ``channel_axis``: 0 for (C, H, W), -1 for (H, W, C), None for grey (H, W).
    """
    import numpy as np

    m = means[labels]  # (N, 3)
    if channel_axis is None:
        m = m[:, :1, None]
    elif channel_axis == 0:
        m = m[:, :shape[0], None, None]
    else:
        m = m[:, None, None, :shape[-1]]
    x = m + rng.normal(0.0, 40.0, (len(labels), *shape))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _labels(rng, n: int, classes: int) -> "np.ndarray":
    import numpy as np

    return rng.permutation(np.arange(n) % classes)


def _write_stand_in(name: str, folder: Path) -> None:
    """Write the stand-in of ``name`` into ``folder`` (the future ``root/name``), seeded."""
    import numpy as np

    seed = zlib.crc32(name.encode())
    classes = DATASETS[name].num_classes if name != "imagenet" else STAND_IN_SIZES[name]["classes"]
    means = np.random.default_rng(seed).uniform(40.0, 215.0, (classes, 3))  # a colour per class
    sizes = STAND_IN_SIZES[name]
    if name in ("mnist", "fashion_mnist"):
        raw = folder / _tv_class(name).__name__ / "raw"
        raw.mkdir(parents=True)
        for i, (split, n) in enumerate((("train", sizes["train"]), ("t10k", sizes["test"]))):
            rng = np.random.default_rng([seed, i])
            labels = _labels(rng, n, classes)
            images = _noise_images(rng, labels, means, (28, 28), None)
            for kind, array in (("images", images), ("labels", labels.astype(np.uint8))):
                magic, rank = _IDX[kind]
                head = struct.pack(f">I{rank}I", magic, *array.shape)
                (raw / f"{split}-{kind}-idx{rank}-ubyte").write_bytes(head + array.tobytes())
    elif name in ("cifar10", "cifar100"):
        cls = _tv_class(name)
        base = folder / cls.base_folder
        base.mkdir(parents=True)
        files = [(f, sizes["train"] // len(cls.train_list), f"training batch {i + 1} of "
                  f"{len(cls.train_list)}") for i, (f, _) in enumerate(cls.train_list)]
        files += [(f, sizes["test"], "testing batch 1 of 1") for f, _ in cls.test_list]
        for i, (fname, n, batch_label) in enumerate(files):
            rng = np.random.default_rng([seed, i])
            labels = _labels(rng, n, classes)
            rows = _noise_images(rng, labels, means, (3, 32, 32), 0).reshape(n, 3 * 32 * 32)
            entry = {"batch_label": batch_label, "data": rows,
                     "filenames": [f"stand_in_{i}_{j:05d}.png" for j in range(n)]}
            if name == "cifar10":
                entry["labels"] = labels.tolist()
            else:
                entry.update(fine_labels=labels.tolist(), coarse_labels=(labels // 5).tolist())
            with open(base / fname, "wb") as f:
                pickle.dump(entry, f, protocol=2)
        meta = {"num_cases_per_batch": files[0][1], "num_vis": 3 * 32 * 32}
        if name == "cifar10":
            meta["label_names"] = list(_CIFAR10_NAMES)
        else:
            meta.update(fine_label_names=[f"class_{c:02d}" for c in range(100)],
                        coarse_label_names=[f"superclass_{c:02d}" for c in range(20)])
        with open(base / cls.meta["filename"], "wb") as f:
            pickle.dump(meta, f, protocol=2)
    elif name == "imagenet":
        from PIL import Image

        for i, split in enumerate(("train", "val")):
            rng = np.random.default_rng([seed, i])
            number = 0
            for c, wnid in enumerate(_IMAGENET_WNIDS[:classes]):
                (folder / split / wnid).mkdir(parents=True)
                for j in range(sizes[split]):
                    h, w = (int(v) for v in rng.integers(60, 101, 2))
                    pixels = _noise_images(rng, np.array([c]), means, (h, w, 3), -1)[0]
                    number += 1
                    fname = f"{wnid}_{j + 1}.JPEG" if split == "train" else \
                        f"ILSVRC2012_val_{number:08d}.JPEG"
                    Image.fromarray(pixels, "RGB").save(folder / split / wnid / fname, "JPEG",
                                                        quality=90)
    else:
        raise UsageError(f"data set {name!r} has no stand-in")
    (folder / STAND_IN).write_text(
        f"{name}: a STAND-IN written by `biofa data {name} --stand-in`: tiny seeded random images "
        f"in the real files and layout, not the real data set. Its files do not match the official "
        f"checksums; biofa's loaders skip those checks only while this file is here.\n")


def _prepare_stand_in(name: str, root: Path) -> Path:
    """Write the stand-in of ``name`` into ``root/name`` atomically (see :func:`prepare`)."""
    target = root / name
    if target.is_dir():
        if is_stand_in(name, root) and (target / "READY").is_file():
            _warn_stand_in(name, str(root))
            return target  # complete already: files (and their times) stay as they are
        others = sorted(p.name for p in target.iterdir())
        if others and not is_stand_in(name, root):
            raise UsageError(
                f"data set {name!r}: the folder {target} already holds files of the real data set "
                f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) and no {STAND_IN} "
                f"marker; a stand-in is never written over or mixed with them: pass another "
                f"--root for the stand-in, e.g. `biofa data {name} --root {root}-stand-in "
                f"--stand-in` (and the same data_root in the run config)")
    _mkdir(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=root))
    try:
        _write_stand_in(name, tmp)
        _install(tmp, target, name, complete=lambda folder: (folder / STAND_IN).is_file())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _write_ready(target, name)
    _warn_stand_in(name, str(root))
    return target


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
    _check_folder(Path(root), name)

    if name == "digits":
        return TensorDataset(*_digits_tensors(root)[split])

    stand_in = is_stand_in(name, root)
    if stand_in:
        _warn_stand_in(name, root)
    if name == "imagenet":
        base = _imagenet_base(root, "val" if split == "test" else "train")
    else:
        base = _tv_base(name, root, split != "test")
    transform = _transforms(name, train=(split == "train" and augment))
    view = Transformed(base, transform)
    if split == "test":
        return view
    n_val = validation_size(name, len(base), stand_in=stand_in)
    if len(base) <= n_val:
        again = f"`biofa data {name} --root {root}{' --stand-in' if stand_in else ''}`"
        raise DatasetCorrupt(f"data set {name!r} under {root}: its training files hold {len(base)} "
                             f"images, too few for the {n_val}-image validation split; "
                             f"delete the folder {Path(root) / name} and run {again}")
    train_idx, val_idx = split_indices(len(base), n_val, SEED)
    return Subset(view, train_idx if split == "train" else val_idx)


def validation_size(name: str, n_train: int, *, stand_in: bool = False) -> int:
    """How many of the ``n_train`` images of the official training files ``val`` holds out.

    A real data set holds out its fixed count, ``DATASETS[name].splits["val"]`` (5000 for
    MNIST and CIFAR, 10000 for ImageNet), whatever ``n_train`` is.  A stand-in holds out a
    tenth of its images (at least one, never more than the real count): 200 -> 20.
    """
    real = _info(name).splits["val"]
    return min(real, max(1, n_train // 10)) if stand_in else real


def _write_ready(folder: Path, name: str) -> None:
    """Write the READY marker atomically, so that a crash never leaves a half marker."""
    fd, tmp = tempfile.mkstemp(prefix=".READY.", dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write(f"{name}\n")
    os.replace(tmp, folder / "READY")


def prepare(name: str, root: str | os.PathLike, download: bool = True, *,
            stand_in: bool = False) -> Path:
    """Make sure data set ``name`` is complete under ``root``; return ``root/name``.

    Used by ``biofa data NAME --root DIR`` (a workflow's data rule, whose
    output is ``root/name/READY``).  Downloads go to a temporary folder next to
    the target and are moved into place only after torchvision's integrity
    check passes, so an interrupted or failed download never leaves files that
    look like a data set.  Files placed by hand in the folder that the error
    message names are used instead of downloading.  Without network it fails
    within seconds with :class:`DatasetMissing`.

    ``stand_in``: write a tiny random stand-in instead (see the module's docstring and
    :data:`STAND_IN_SIZES`), never downloading; ``download`` is then ignored.  Refused
    where ``root/name`` holds other files; a complete stand-in is left as it is.  Without
    ``stand_in``, a folder holding a stand-in is refused rather than overwritten.
    """
    _info(name)
    root = Path(root).absolute()
    target = root / name
    _check_folder(root, name)

    if stand_in and name != "digits":
        return _prepare_stand_in(name, root)
    if stand_in:
        log.info("biofa: digits ships with scikit-learn: its stand-in is the real data set")
    if name != "digits" and is_stand_in(name, root):
        raise UsageError(f"data set {name!r}: the folder {target} holds a stand-in (marker "
                         f"{target / STAND_IN}), and the real data set is never written over or "
                         f"mixed with one; pass another --root (or data_root in the run config) "
                         f"for the real data set, or delete the folder {target}")

    if name == "digits":  # ships with scikit-learn: kept as NumPy arrays for a fast start
        _mkdir(target)
        if not (target / DIGITS_FILE).exists():
            _write_digits(target)
        _write_ready(target, name)
        return target

    if name == "imagenet":
        if not _imagenet_complete(root):
            raise DatasetMissing(_missing_message(name, root))
        _write_ready(target, name)
        return target

    complete = target.is_dir() and _tv_complete(name, target)
    problem = _problem(name, root, verified=complete) if target.is_dir() else None
    if complete and problem is None:
        _write_ready(target, name)
        return target
    if not download:
        if problem is not None:
            raise DatasetCorrupt(_corrupt_message(name, root, *problem))
        raise DatasetMissing(_missing_message(name, root, "download=False"))

    _mkdir(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=root))
    old_timeout = socket.getdefaulttimeout()
    try:
        _reuse_archives(name, target, tmp)
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            _tv_class(name)(root=str(tmp), train=False, download=True)
        except (urllib.error.URLError, OSError, RuntimeError) as err:
            if problem is not None:
                raise DatasetCorrupt(_corrupt_message(name, root, *problem,
                                                      cause=f"downloading a new copy failed: {err}")) from err
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


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except PermissionError as err:
        raise UsageError(f"data folder {folder} cannot be created: {err.strerror}; pass a "
                         "writable folder as --root (or data_root in the run config)") from None


def _reuse_archives(name: str, target: Path, tmp: Path) -> None:
    """Link the intact archives put into ``target`` by hand into the download folder.

    Only archives whose md5 is the official one: torchvision skips downloading those and
    unpacks them, and never writes to them. Unpacked files are not reused: torchvision
    unpacks over them, which through a hard link would rewrite the old copy in place.
    """
    from torchvision.datasets.utils import check_integrity

    for relative, md5 in _archives(name):
        source = target / relative
        if source.is_file() and check_integrity(str(source), md5):
            (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(str(source), str(tmp / relative))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _install(tmp: Path, target: Path, name: str,
             complete: Callable[[Path], bool] | None = None) -> None:
    """Move a verified download into place; an incomplete old folder is set aside first.

    ``complete``: whether a folder holds the whole data set (default: torchvision's check).
    """
    complete = complete or functools.partial(_tv_complete, name)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=target.parent))
        os.replace(target, old / name)
    try:
        os.replace(tmp, target)
    except OSError:
        if not (target.is_dir() and complete(target)):  # a concurrent prepare won the race
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def loaders(name: str, root: str | os.PathLike, batch_size: int, *, workers: int = 0, seed: int = 0,
            augment: bool = True, eval_batch_size: int | None = None,
            device: str | torch.device | None = None,
            shard: tuple[int, int] = (0, 1)) -> dict[str, DataLoader]:
    """DataLoaders for the three splits: {"train", "val", "test"}.

    ``shard`` = (rank, world size) of a data-parallel run: the train loader then takes
    rank's share of each epoch's permutation through a ``DistributedSampler`` (shuffled
    from ``seed`` and the epoch, ``sampler.set_epoch``: the same permutation for any
    number of processes), ``batch_size`` per process.

    The train loader shuffles with its own ``torch.Generator`` seeded by
    ``seed``, so the order of batches (and the augmentation seeds of worker
    processes) are reproducible, and a run can be resumed by restoring the
    generator's state.  val/test are not shuffled; they have generators of their own
    as well, so that evaluating never draws from torch's global RNG.
    """
    pin = device is not None and torch.device(device).type == "cuda"
    common = dict(num_workers=workers, pin_memory=pin, drop_last=False)
    out = {}
    for split in SPLITS:
        ds = load(name, root, split, augment=augment)
        if split == "train":
            # Fresh workers each epoch, seeded from the generator that the epoch's shuffle
            # is seeded from: their augmentation draws then depend on the epoch alone, so a
            # run resumed in another process (mid-epoch too) sees the same images.
            rank, size = shard
            sampler = None if size == 1 else DistributedSampler(
                ds, num_replicas=size, rank=rank, shuffle=True, seed=seed * 1_000_003)
            out[split] = DataLoader(ds, batch_size=batch_size, shuffle=sampler is None,
                                    sampler=sampler,
                                    generator=torch.Generator().manual_seed(seed), **common)
        else:
            # Their own generator too: each pass over them draws a worker seed, which
            # must not come from torch's global RNG, whose stream belongs to training
            # (brSF's redraws): evaluating between two steps then changes nothing.
            out[split] = DataLoader(ds, batch_size=eval_batch_size or batch_size, shuffle=False,
                                    persistent_workers=workers > 0,
                                    generator=torch.Generator().manual_seed(seed), **common)
    return out
