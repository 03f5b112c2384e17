"""Images per second of biofa's ImageNet training input pipeline, per DataLoader worker count.

Writes a stand-in ImageFolder into a temporary folder (``--classes`` x ``--images`` JPEGs of
500x375, ImageNet's typical size, smooth random colour fields plus noise saved by PIL at
quality 90, ~100 KB each, near ILSVRC-2012's mean file size of ~110 KB) and times two
pipelines over it, for every worker count of ``--workers``:

- ``pil``: what ``biofa train`` reads ImageNet with: torchvision's ``ImageFolder`` (PIL
  decodes each JPEG) behind biofa's own train transform, ``biofa.study.data._transforms(
  "imagenet", train=True)`` (RandomResizedCrop(224), RandomHorizontalFlip, ToTensor; biofa
  normalises inside the model, in its first layer), in biofa's ``Transformed`` view;
- ``tvio``: the alternative torchvision offers: the file's bytes decoded by
  ``torchvision.io.decode_jpeg`` (libjpeg-turbo, straight into a uint8 tensor) and the same
  augmentation as ``torchvision.transforms.v2`` on tensors (RandomResizedCrop(224,
  antialias), RandomHorizontalFlip, ToDtype(float32, scale)).

With ``--device cuda`` a third pipeline, ``tvio-gpu``, reads the files' bytes in the workers
and decodes each batch on the GPU (``torchvision.io.decode_jpeg(list, device="cuda")``,
nvJPEG), cropping and flipping there.

Each round times one pass over the images for every (pipeline, workers) in a freshly
shuffled order (workers are persistent and warmed by one pass beforehand, so worker start-up
is not counted); reported: the median images/s over rounds, its spread (min-max over rounds),
images/s per worker (the main process counts as one for 0 workers), per core used
(workers capped at the machine's cores) and, with ``psutil`` installed, images per CPU-second
of the main process and its workers together (user + system time): what one core of its
own would deliver, whatever else the machine was running.

    python benchmarks/imagenet_loader.py                   # workers 0,1,2; 2 x 100 images
    python benchmarks/imagenet_loader.py --workers 0,1,2,4 --rounds 7 --markdown
    python benchmarks/imagenet_loader.py --device cuda --workers 0,4,8
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from biofa.study.data import Transformed, _transforms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_time import render  # noqa: E402


def write_folder(root: Path, classes: int, images: int, size=(500, 375), seed: int = 0) -> float:
    """``classes`` class folders of ``images`` JPEGs each under ``root``; mean file KB."""
    rng = np.random.default_rng(seed)
    sizes = []
    for c in range(classes):
        folder = root / f"n{c:08d}"
        folder.mkdir(parents=True)
        for i in range(images):
            low = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            smooth = np.asarray(Image.fromarray(low).resize(size, Image.BICUBIC), np.float32)
            pixels = np.clip(smooth + rng.normal(0, 16, smooth.shape), 0, 255).astype(np.uint8)
            path = folder / f"img_{i:05d}.JPEG"
            Image.fromarray(pixels).save(path, "JPEG", quality=90)
            sizes.append(path.stat().st_size)
    return sum(sizes) / len(sizes) / 1e3


def pil_dataset(root: Path) -> Dataset:
    """biofa's ImageNet train pipeline: ImageFolder (PIL) + biofa's own train transform."""
    from torchvision.datasets import ImageFolder

    return Transformed(ImageFolder(str(root)), _transforms("imagenet", train=True))


class TvioDataset(Dataset):
    """The same files through ``torchvision.io.decode_jpeg`` and transforms.v2 on tensors;
    with ``decode=False`` only the file's bytes (for decoding a whole batch on a GPU)."""

    def __init__(self, root: Path, decode: bool = True):
        from torchvision.datasets import ImageFolder
        from torchvision.transforms import v2

        self.samples = ImageFolder(str(root)).samples
        self.decode = decode
        self.transform = v2.Compose([v2.RandomResizedCrop(224, antialias=True),
                                     v2.RandomHorizontalFlip(),
                                     v2.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from torchvision.io import ImageReadMode, decode_jpeg, read_file

        path, label = self.samples[index]
        data = read_file(path)
        if not self.decode:
            return data, label
        return self.transform(decode_jpeg(data, mode=ImageReadMode.RGB)), label


def _bytes_collate(batch):
    return [data for data, _ in batch], torch.tensor([label for _, label in batch])


def gpu_pass(loader: DataLoader, transform) -> int:
    """One pass decoding every batch on the GPU; images seen."""
    from torchvision.io import ImageReadMode, decode_jpeg

    n = 0
    for datas, labels in loader:
        images = decode_jpeg(datas, mode=ImageReadMode.RGB, device="cuda")
        batch = torch.stack([transform(image) for image in images])
        labels = labels.to("cuda", non_blocking=True)
        n += batch.shape[0]
    torch.cuda.synchronize()
    return n


def make_loaders(root: Path, workers: list[int], batch: int, device: str):
    """{(pipeline, workers): a function running one pass and returning the images seen}."""
    from torchvision.transforms import v2

    def loader(dataset, w, collate=None):
        return DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=w,
                          persistent_workers=w > 0, collate_fn=collate,
                          generator=torch.Generator().manual_seed(0))

    def cpu_pass(dl):
        return lambda: sum(x.shape[0] for x, _ in dl)

    out = {}
    for w in workers:
        out[("pil", w)] = cpu_pass(loader(pil_dataset(root), w))
        out[("tvio", w)] = cpu_pass(loader(TvioDataset(root), w))
        if device == "cuda":
            gpu_transform = v2.Compose([v2.RandomResizedCrop(224, antialias=True),
                                        v2.RandomHorizontalFlip(),
                                        v2.ToDtype(torch.float32, scale=True)])
            dl = loader(TvioDataset(root, decode=False), w, _bytes_collate)
            out[("tvio-gpu", w)] = (lambda dl=dl: gpu_pass(dl, gpu_transform))
    return out


def cpu_seconds() -> float | None:
    """CPU seconds (user + system) of this process and its live children (the loaders'
    workers) so far, or None without psutil (an optional extra, not a biofa dependency)."""
    try:
        import psutil
    except ImportError:
        return None
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:  # a child that just ended
            continue
        total += times.user + times.system
    return total


def bench(passes: dict, rounds: int, seed: int = 0) -> tuple[dict, dict]:
    """({key: images/s of each round}, {key: images per CPU-second of each round}), the
    keys timed in a shuffled order every round."""
    for run in passes.values():  # starts the persistent workers, warms caches
        run()
    rates, per_cpu = {key: [] for key in passes}, {key: [] for key in passes}
    order, rng = list(passes), random.Random(seed)
    for r in range(rounds):
        rng.shuffle(order)
        for key in order:
            c0, t0 = cpu_seconds(), time.perf_counter()
            n = passes[key]()
            rates[key].append(n / (time.perf_counter() - t0))
            if c0 is not None:
                per_cpu[key].append(n / max(cpu_seconds() - c0, 1e-9))
        print(f"  round {r + 1}/{rounds}", end="\r", file=sys.stderr)
    print(file=sys.stderr)
    return rates, per_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="0,1,2", help="DataLoader num_workers to time")
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--images", type=int, default=100, help="JPEGs per class")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cuda: also decode on the GPU (tvio-gpu rows)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    if any(w < 0 for w in workers):
        parser.error("--workers must be counts >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    torch.set_num_threads(1)  # workers run torch on one thread each; the main process too
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    with tempfile.TemporaryDirectory() as tmp:
        kb = write_folder(Path(tmp), args.classes, args.images)
        passes = make_loaders(Path(tmp), workers, args.batch, args.device)
        rates, per_cpu = bench(passes, args.rounds)
        del passes  # shuts the persistent workers down before the folder goes
    print(f"# {datetime.datetime.now():%Y-%m-%d %H:%M} | torch {torch.__version__} | {cores} cores "
          f"| {args.classes}x{args.images} JPEGs 500x375 q90, mean {kb:.0f} KB | batch {args.batch} "
          f"| {args.rounds} rounds | median images/s over rounds (min-max)")
    head = ["pipeline", "workers", "images/s", "min-max", "per worker", "per core",
            "per CPU-s"]
    rows = []
    for (pipeline, w), r in rates.items():
        median = statistics.median(r)
        cpu = f"{statistics.median(per_cpu[pipeline, w]):.0f}" if per_cpu[pipeline, w] else "-"
        rows.append([pipeline, str(w), f"{median:.0f}", f"{min(r):.0f}-{max(r):.0f}",
                     f"{median / max(w, 1):.0f}", f"{median / min(max(w, 1), cores):.0f}", cpu])
    print(render(head, rows, args.markdown))


if __name__ == "__main__":
    main()
