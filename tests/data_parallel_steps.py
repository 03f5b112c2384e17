"""A few SGD steps of every rule, in one process or as a rank of a DDP run (tests/test_parallel.py).

One process, ``python data_parallel_steps.py OUT``: the reference, every rule on the whole
batch. Under ``torchrun --nproc-per-node 2``: each rank takes its half of every batch
through ``biofa.parallel.data_parallel``, its global RNG seeded apart from the other's
after the model is built (as per-rank data augmentation does), and saves its final state.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import biofa
from biofa.methods import METHODS
from biofa.models import input_shape

STEPS = 3
BATCH = 8  # global
MODELS = {name: input_shape(name) for name in ("lenet_mnist", "resnet20")}


def make_model(name: str, method: str, seed: int | None = 0) -> torch.nn.Module:
    if seed is not None:
        torch.manual_seed(seed)
    model = biofa.models.build(name, num_classes=10)
    direct = {"input_size": MODELS[name]} if METHODS[method].direct else {}
    biofa.convert(model, method, init="xavier", **direct)
    return model


def make_batches(name: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    shape = MODELS[name]
    return [(torch.randn(BATCH, *shape, generator=generator),
             torch.randint(10, (BATCH,), generator=generator)) for _ in range(STEPS)]


def train(model, batches, ghost: int = 1) -> dict[str, torch.Tensor]:
    """SGD steps; ``ghost`` > 1 splits each batch into that many parts and averages their
    gradients, each part normalised by its own batch statistics: what DDP's ranks compute.
    (Not the gradient of the parts' mean loss: drtp's hidden signal ignores the loss's scale.)"""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    model.train()
    for x, y in batches:
        optimizer.zero_grad()
        for xs, ys in zip(x.chunk(ghost), y.chunk(ghost)):
            F.cross_entropy(model(xs), ys).backward()
        for p in model.parameters():
            p.grad /= ghost
        optimizer.step()
    state = getattr(model, "module", model).state_dict()  # DDP's holds the model as .module
    return {key: value.detach().clone() for key, value in state.items()}


def main(out: str) -> None:
    torch.set_default_dtype(torch.float64)  # differences are then the rules', not rounding
    if "RANK" not in os.environ:
        for name in MODELS:
            for method in METHODS:
                ghost = 2 if name == "resnet20" else 1
                torch.save(train(make_model(name, method), make_batches(name), ghost),
                           f"{out}/{name}-{method}-reference.pt")
        return
    import torch.distributed as dist
    from biofa.parallel import data_parallel

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    for name in MODELS:
        for method in METHODS:
            model = make_model(name, method)
            torch.manual_seed(1000 + rank)  # ranks apart from here on
            ddp = data_parallel(model)
            batches = [(x.chunk(world)[rank], y.chunk(world)[rank]) for x, y in make_batches(name)]
            torch.save(train(ddp, batches), f"{out}/{name}-{method}-rank{rank}.pt")
    torch.manual_seed(rank)  # a model built from other seeds on each rank is refused
    try:
        data_parallel(make_model("lenet_mnist", "fa", seed=None))
    except biofa.errors.UsageError as error:
        (Path(out) / f"refused-rank{rank}.txt").write_text(str(error))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
