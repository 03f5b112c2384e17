"""Images per second of `biofa attack`, for every attack, on the quick study's models.

Runs ``biofa.study.attack.attack_run`` (what `biofa attack` and the workflow run) on one seed
of each method of the quick default study (``snakemake --cores 2`` trains them into
results/runs/digits/lenet_mnist/sgd/) and prints images/second per attack and gradient:
white-box attacks through the rule's own feedback gradient and through the true gradient,
the black-box Square and OnePixel, and transfer from the bp run.

    python benchmarks/attack_throughput.py
    python benchmarks/attack_throughput.py --methods bp,fa --n 200 --markdown
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch

from biofa import functional
from biofa.study.attack import attack_run
from step_time import render  # the sibling script: benchmarks/ is on sys.path

#: (attack, gradients, strength): one strength each; eps in image units, pixels for onepixel
PLAN = [("fgsm", ("feedback", "true"), 0.1), ("pgd", ("feedback", "true"), 0.1),
        ("tpgd", ("feedback", "true"), 0.1), ("apgd", ("feedback", "true"), 0.1),
        ("square", ("none",), 0.1), ("onepixel", ("none",), 1), ("transfer", ("transfer",), 0.1)]


def throughput(run: Path, attack: str, gradient: str, strength: float, n: int, args) -> float:
    source = run.parent.parent / "bp" / run.name if attack == "transfer" else None
    gradients = (gradient,) if gradient in ("feedback", "true") else ("feedback",)
    start = time.perf_counter()
    attack_run(run, attack, [strength], n=n, gradients=gradients, source=source,
               steps=args.steps, queries=args.queries, batch_size=args.batch_size,
               device=args.device)
    return n / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("results/runs/digits/lenet_mnist/sgd"),
                        help="folder holding one sub-folder per method")
    parser.add_argument("--seed", default="seed0", help="which seed's run of each method")
    parser.add_argument("--methods", default="bp,fa,dfa,usf,brsf,frsf,kp")
    parser.add_argument("--n", type=int, default=120, help="test images per attack")
    parser.add_argument("--steps", type=int, default=10, help="iterations of pgd/tpgd/apgd")
    parser.add_argument("--queries", type=int, default=50, help="square's query budget")
    parser.add_argument("--batch-size", type=int, default=120)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    methods = args.methods.split(",")
    missing = [m for m in methods if not (args.runs / m / args.seed / "best.pt").exists()]
    if missing:
        print(f"no trained run for {', '.join(missing)} under {args.runs}/<method>/{args.seed}; "
              "train the quick study first: snakemake --cores 2", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    columns = [(attack, gradient, strength) for attack, gradients, strength in PLAN
               for gradient in gradients]
    head = ["method"] + [f"{a}/{g}" for a, g, _ in columns]
    # warm-up: imports, data set loading, the compiled backend (built at its first use on a
    # machine, ~30 s; bp never loads it) and first-call allocations stay out of the timings
    functional.backend()
    throughput(args.runs / methods[0] / args.seed, "pgd", "feedback", 0.1, args.n, args)
    rows = []
    for method in methods:
        run = args.runs / method / args.seed
        cells = []
        for attack, gradient, strength in columns:
            cells.append(f"{throughput(run, attack, gradient, strength, args.n, args):.0f}")
            print(f"  {method} {attack} {gradient}", end="\r", file=sys.stderr)
        rows.append([method] + cells)
    print(file=sys.stderr)

    print(f"# {datetime.datetime.now():%Y-%m-%d %H:%M} | torch {torch.__version__} | "
          f"{args.device}, {torch.get_num_threads()} threads | images/second of biofa attack "
          f"(n={args.n}, eps 0.1, {args.steps} steps, square {args.queries} queries, onepixel 1 "
          "pixel) on LeNet-MNIST/digits")
    print(render(head, rows, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
