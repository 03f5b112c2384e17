"""Training images per second of every rule in 1 process and under DDP in N processes.

The script starts N processes itself (``torch.multiprocessing.start_processes``, gloo's or
nccl's rendezvous on a free local port, as torchrun's ``--standalone`` does) once per process
count of ``--nprocs`` and repetition of ``--repeats``, alternating the order of the counts
between repetitions (1, 2, then 2, 1, ...). On the CPU the processes are forked from the
launcher, which has imported torch and biofa but run nothing (no thread pool yet), so a
launch does not pay the ~5 s import of torch again on a busy machine; on GPUs they are
spawned (CUDA does not survive a fork). Every process runs torch on one thread
(``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``) on the CPU, or drives one GPU each
with ``--device cuda``. The global batch is fixed (``--batch``; LeNet-MNIST 64, ResNet-20
128 as in step_time.py), so each of N processes takes batch/N: N processes take the step
one process takes.

In each launch every process builds, for every rule, the model from the same seed (so all
ranks hold the same W and B), converts it with ``biofa.convert`` (``input_size`` for the
direct rules), wraps it with ``biofa.parallel.data_parallel`` when N > 1 (plain when N = 1;
process group gloo on the CPU, nccl on GPUs) and gives it SGD as ``biofa train`` builds it
(fused). After 3 warm-up steps each, every round times ``--steps`` steps of every rule in
the same shuffled order on every rank (bp and the rules interleaved, as in step_time.py),
all ranks starting each burst at a barrier; rank 0's clock counts. Reported per rule:
images/s for each N (global batch over the median step time, all rounds of all launches),
the speed-up over 1 process with its min-max over repetitions, the efficiency (speed-up / N)
and the rule's throughput over bp's at the same N (median over rounds of the ratio within
one round, so slow spells of the machine cancel). ``--no-sync`` also times every rule's
N-process step under DDP's ``no_sync()`` (no all-reduce of the gradients; the ranks drift
apart, which does not matter for timing): its images/s and the all-reduce's share of the
synchronised step, round by round.

    python benchmarks/data_parallel.py                            # all rules, LeNet, 1 vs 2 CPU processes
    python benchmarks/data_parallel.py --methods bp,fa,dfa,kp --repeats 3 --no-sync --markdown
    python benchmarks/data_parallel.py --model resnet20 --steps 3
    python benchmarks/data_parallel.py --device cuda --nprocs 1,2,4,8 --model resnet20
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import gc
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

# one thread per process, read when torch's OpenMP runtime starts: before torch is imported
os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import biofa  # noqa: E402
from biofa.methods import METHODS  # noqa: E402
from biofa.models import build, input_shape  # noqa: E402
from biofa.parallel import data_parallel  # noqa: E402
from biofa.study.train import make_optimizer  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from step_time import BATCH, OPTIMIZER, render, steady_allocator  # noqa: E402

WARMUP = 3


def worker(rank: int, world: int, args, out: str) -> None:
    """Rank ``rank`` of ``world``: time every rule; rank 0 writes {rule: [s/step per round]}
    to ``out`` as JSON. MASTER_ADDR and MASTER_PORT come from the environment."""
    local = rank  # one machine
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # see step_time.py: subnormals would slow rules unevenly
    steady_allocator()
    cuda = args.device == "cuda"
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world,
                                device_id=device if cuda else None)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    barrier = dist.barrier if world > 1 else (lambda: None)

    shape = input_shape(args.model)
    generator = torch.Generator().manual_seed(1 + rank)  # each rank its own part of the batch
    x = torch.randn(args.batch // world, *shape, generator=generator).to(device)
    y = torch.randint(0, 10, (args.batch // world,), generator=generator).to(device)
    methods = args.methods.split(",")
    steps = {}
    for method in methods:
        torch.manual_seed(0)  # the same on every rank: the same W and B everywhere
        model = build(args.model, num_classes=10)
        biofa.convert(model, method, **({"input_size": shape} if METHODS[method].direct else {}))
        model = model.to(device).train()
        if world > 1:
            model = data_parallel(model, device_ids=[local] if cuda else None)
        optimizer = make_optimizer({"optimizer": OPTIMIZER}, model)

        def step(model=model, optimizer=optimizer, sync_gradients=True):
            optimizer.zero_grad(set_to_none=True)
            with contextlib.nullcontext() if sync_gradients else model.no_sync():
                F.cross_entropy(model(x), y).backward()
            optimizer.step()
        steps[method] = step
        if world > 1 and args.no_sync:  # the same step without the all-reduce
            steps[f"{method}:no-sync"] = functools.partial(step, sync_gradients=False)

    for step in steps.values():
        for _ in range(WARMUP):
            step()
    times = {key: [] for key in steps}
    order, rng = list(steps), random.Random(args.seed)  # the same order on every rank
    gc.collect()
    gc.disable()
    try:
        for _ in range(args.rounds):
            rng.shuffle(order)
            for key in order:
                sync()
                barrier()
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    steps[key]()
                sync()
                times[key].append((time.perf_counter() - t0) / args.steps)
            gc.collect()
    finally:
        gc.enable()
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    if world > 1:
        dist.destroy_process_group()


def launch(n: int, args, out: Path) -> dict[str, list[float]]:
    """``n`` processes timing every rule; rank 0's {rule: [s/step per round]}."""
    import torch.multiprocessing as mp

    with socket.socket() as free:  # what torchrun --standalone does: a free local port
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    mp.start_processes(worker, args=(n, args, str(out)), nprocs=n, join=True,
                       start_method="spawn" if args.device == "cuda" else "fork")
    return json.loads(out.read_text())


def summarise(runs: dict[int, list[dict[str, list[float]]]], methods: list[str], batch: int):
    """{rule: {n: (images/s, [ratio to bp per round], [s/step median per launch])}}."""
    out = {}
    for method in methods:
        out[method] = {}
        for n, launches in runs.items():
            seconds = [t for launch in launches for t in launch[method]]
            ratios = [b / t for launch in launches for b, t in zip(launch["bp"], launch[method])]
            per_launch = [statistics.median(launch[method]) for launch in launches]
            out[method][n] = (batch / statistics.median(seconds), ratios, per_launch)
            free = f"{method}:no-sync"
            if free in launches[0]:  # the all-reduce's share of the step, round by round
                alone = [t for launch in launches for t in launch[free]]
                share = [1 - a / t for launch in launches
                         for a, t in zip(launch[free], launch[method])]
                out[method][f"{n}:no-sync"] = (batch / statistics.median(alone),
                                               statistics.median(share))
    return out


def table(summary, nprocs: list[int], markdown: bool, no_sync: bool = False) -> str:
    """Per rule: images/s per process count, speed-up over 1 process (min-max over
    repetitions), efficiency, ratio to bp at each count; with ``no_sync`` also each count's
    images/s without the gradients' all-reduce and the share of the step it costs."""
    more = [n for n in nprocs if n != 1]
    head = ([f"{n}-proc img/s" for n in nprocs]
            + [c for n in more for c in (f"speed-up x{n}", "min-max", f"efficiency x{n}")]
            + [f"vs bp @{n}" for n in nprocs]
            + [c for n in more if no_sync for c in (f"{n}-proc no-sync img/s", f"all-reduce @{n}")])
    rows = []
    for method, cells in summary.items():
        row = [method] + [f"{cells[n][0]:.0f}" for n in nprocs]
        for n in more:
            speedup = cells[n][0] / cells[1][0]
            # repetition r's speed-up: its 1-process launch's median over its n-process one's
            each = [a / b for a, b in zip(cells[1][2], cells[n][2])]
            row += [f"{speedup:.2f}x", f"{min(each):.2f}-{max(each):.2f}", f"{speedup / n:.0%}"]
        row += [f"{statistics.median(cells[n][1]):.2f}x" for n in nprocs]
        for n in more if no_sync else []:
            alone, share = cells[f"{n}:no-sync"]
            row += [f"{alone:.0f}", f"{share:.0%}"]
        rows.append(row)
    return render(["rule"] + head, rows, markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=None, help="rules, comma-separated (default: all)")
    parser.add_argument("--model", default="lenet_mnist", choices=["lenet_mnist", "resnet20"])
    parser.add_argument("--batch", type=int, default=None,
                        help="global batch (default: LeNet 64, ResNet-20 128)")
    parser.add_argument("--nprocs", default="1,2", help="process counts, must include 1")
    parser.add_argument("--steps", type=int, default=10, help="steps per rule per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per launch")
    parser.add_argument("--repeats", type=int, default=2, help="launches per process count")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cuda: nccl, one GPU per process")
    parser.add_argument("--seed", type=int, default=0, help="seed of the round orders")
    parser.add_argument("--no-sync", action="store_true",
                        help="also time every rule's N-process step under DDP's no_sync() "
                             "(no all-reduce): what the all-reduce costs of the step")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    methods = args.methods.split(",") if args.methods else list(METHODS)
    for method in methods:
        if method not in METHODS:
            parser.error(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    methods = ["bp"] + [m for m in methods if m != "bp"]  # the reference of the ratios
    args.methods = ",".join(methods)
    nprocs = sorted({int(n) for n in args.nprocs.split(",")})
    if 1 not in nprocs or any(n < 1 for n in nprocs):
        parser.error("--nprocs must list 1 (the reference) and counts >= 1")
    args.batch = args.batch or BATCH[args.model]
    if any(args.batch % n for n in nprocs):
        parser.error(f"--batch {args.batch} must divide among {args.nprocs} processes")
    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda but torch.cuda.is_available() is False (no GPU here)")
        if torch.cuda.device_count() < max(nprocs):
            parser.error(f"--nprocs {max(nprocs)} needs as many GPUs; "
                         f"{torch.cuda.device_count()} visible")

    runs = {n: [] for n in nprocs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for n in (nprocs if r % 2 == 0 else nprocs[::-1]):
                print(f"  repeat {r + 1}/{args.repeats}: {n} process(es)", file=sys.stderr)
                runs[n].append(launch(n, args, Path(tmp) / f"{r}-{n}.json"))
    where = (f"{torch.cuda.get_device_name()}, nccl" if args.device == "cuda"
             else f"cpu, {os.cpu_count()} cores, gloo, 1 thread per process")
    print(f"# {datetime.datetime.now():%Y-%m-%d %H:%M} | torch {torch.__version__} | {where} | "
          f"{args.model} global batch {args.batch} | {args.repeats} launches x {args.rounds} rounds "
          f"x {args.steps} steps per count | images/s from the median step time")
    print(table(summarise(runs, methods, args.batch), nprocs, args.markdown, args.no_sync))


if __name__ == "__main__":
    main()
