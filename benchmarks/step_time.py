"""Training-step time of every biofa method relative to plain PyTorch backprop.

For each model (LeNet-MNIST at batch 64, CIFAR ResNet-20 at batch 128) and device, one
process builds every variant up front from the same initial weights: the unconverted
torch model (the reference), one ``biofa.convert``-ed copy per method and, when the
``biotorch`` package is importable, one BioTorch copy per BioTorch method. Each gets its
own SGD optimiser and the same fixed random batch. After a few warm-up steps, every
round times each variant once for ``--steps`` steps, in a freshly shuffled order, so
slow drifts of the machine (thermal, other jobs) hit all variants alike. Reported: the
median over rounds of the per-step time and its ratio to the plain-torch median.

With ``--compile`` every torch and biofa variant also runs as ``torch.compile(model,
fullgraph=True)`` (``--compile-backend``, default inductor; ``--compile-mode``, torch.compile's
``mode``, e.g. reduce-overhead for CUDA graphs on a GPU), in the same interleaved rounds as the
eager ones. What is compiled is the model's forward pass, and with it the backward pass, which
AOTAutograd traces from it; zero_grad, the loss's backward call and the optimiser step stay
eager (the fused SGD is one call anyway). Compiled rows take the compiled plain model as their
reference, eager rows the eager one. Compilation happens at a variant's first step, timed
once and reported as compile seconds (with any disk cache of torch's compiler warm from an
earlier run, far less than cold); the warm-up steps then run before the rounds. BioTorch
rows stay eager only.

    python benchmarks/step_time.py                       # all methods, CPU (+ CUDA)
    python benchmarks/step_time.py --rounds 7 --markdown # table for a README
    python benchmarks/step_time.py --models resnet20 --methods fa,dfa --csv times.csv
    python benchmarks/step_time.py --device cuda --gpu-options  # + amp and channels_last rows
    python benchmarks/step_time.py --models lenet_mnist --phases  # + forward/backward/step split
    python benchmarks/step_time.py --device cpu --compile --markdown  # + torch.compile rows
    python benchmarks/step_time.py --device cuda --compile --compile-mode reduce-overhead
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import csv
import ctypes
import datetime
import gc
import io
import os
import platform
import random
import statistics
import sys
import time
import warnings

# Inductor's CPU kernels run OpenMP parallel regions whose idle threads spin by default; on a
# small machine (2 cores here) they then compete with the eager variants' threads in the same
# process: with --compile, LeNet's eager steps measured ~400 ms instead of ~5. Read once, when
# the OpenMP runtime starts, so it is set before torch is imported; only with --compile.
OMP_PASSIVE = "--compile" in sys.argv[1:] and "OMP_WAIT_POLICY" not in os.environ
if OMP_PASSIVE:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import biofa  # noqa: E402
from biofa.study.config import DEFAULTS  # noqa: E402
from biofa.models import build, input_shape  # noqa: E402
from biofa.study.train import make_optimizer  # noqa: E402

BATCH = {"lenet_mnist": 64, "resnet20": 128}
# every variant's optimiser, built by biofa train's own make_optimizer (over its defaults)
OPTIMIZER = {**DEFAULTS["optimizer"], "name": "sgd", "lr": 0.01, "momentum": 0.9,
             "weight_decay": 1e-4}
WARMUP = 3
# biofa method -> BioTorch mode (BioTorch has no Kolen-Pollack)
BIOTORCH_MODES = {"bp": "backpropagation", "fa": "fa", "dfa": "dfa",
                  "usf": "usf", "brsf": "brsf", "frsf": "frsf"}

try:  # optional comparison; never a dependency of biofa
    from biotorch.module.biomodule import BioModule
except Exception as err:  # noqa: BLE001 - any import failure just skips the comparison
    BioModule, BIOTORCH_ERROR = None, f"{type(err).__name__}: {err}"


def biotorch_model(base, method, num_classes):
    """A BioTorch copy of ``base``; its converter prints a report, which we swallow."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return BioModule(copy.deepcopy(base), mode=BIOTORCH_MODES[method],
                         copy_weights=True, output_dim=num_classes)


def make_variants(name, methods, device, use_biotorch, num_classes=10, compile_options=None,
                  channels_last=False):
    """(library, method, model, mode) for every variant, all from the same initial weights;
    mode is "eager", or "compiled" for the ``torch.compile``-d copies of the torch and biofa
    variants made when ``compile_options`` (torch.compile's keyword arguments) is given.
    ``channels_last`` converts the models' memory format (before compiling)."""
    torch.manual_seed(0)
    base = build(name, num_classes=num_classes)

    def biofa_model(method):
        model = copy.deepcopy(base)
        options = {"input_size": input_shape(name)} if biofa.METHODS[method].direct else {}
        biofa.convert(model, method, **options)
        return model

    variants = [("torch", "torch", copy.deepcopy(base), "eager")]
    variants += [("biofa", method, biofa_model(method), "eager") for method in methods]
    if use_biotorch:
        for method in methods:
            if method in BIOTORCH_MODES:
                variants.append(("biotorch", method, biotorch_model(base, method, num_classes),
                                 "eager"))
    if compile_options is not None:  # own copies: own weights, feedback and optimiser state
        variants.append(("torch", "torch", copy.deepcopy(base), "compiled"))
        variants += [("biofa", method, biofa_model(method), "compiled") for method in methods]
    out = []
    for lib, method, model, mode in variants:
        model = model.to(device).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if mode == "compiled":
            model = torch.compile(model, fullgraph=True, **compile_options)
        out.append((lib, method, model, mode))
    return out


def make_step(model, lib, method, x, y, amp=False, fused=True, compiled=False):
    """One training step: zero_grad, forward, cross-entropy, backward, optimiser step
    (forward and loss under float16 autocast with ``amp``, as biofa train does on CUDA;
    SGD as biofa train builds it, fused unless ``fused`` is False).

    ``step(clock)`` with a list also appends the times at which each of the three phases
    ended (for ``--phases``); ``step()`` times nothing. A ``compiled`` model (what
    ``torch.compile`` returned) has its step begin with ``cudagraph_mark_step_begin``, so
    that reduce-overhead's CUDA graphs may reuse the previous step's memory.
    """
    opt = make_optimizer({"optimizer": {**OPTIMIZER, "fused": fused}}, model)
    # BioTorch's DFA computes the output error inside its forward pass
    kwargs = ({"targets": y, "loss_function": F.cross_entropy}
              if lib == "biotorch" and method == "dfa" else {})
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

    def mark(clock):
        if clock is not None:
            sync()
            clock.append(time.perf_counter())

    def step(clock=None):
        if compiled:
            torch.compiler.cudagraph_mark_step_begin()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, enabled=amp):
            loss = F.cross_entropy(model(x, **kwargs), y)
        mark(clock)
        loss.backward()
        mark(clock)
        opt.step()
        mark(clock)
    return step


def phases(variants, step_fns, rounds, steps, seed):
    """Median microseconds of (zero_grad + forward + loss, backward, optimiser step) per
    variant, interleaved like the timed rounds; synchronising between phases costs a little
    on a GPU, so these are for where the time goes, not for the ratios."""
    spans = [[] for _ in variants]
    order, rng = list(range(len(variants))), random.Random(seed + 1)
    for _ in range(rounds):
        rng.shuffle(order)
        for i in order:
            for _ in range(steps):
                clock = [time.perf_counter()]
                step_fns[i](clock)
                spans[i].append([b - a for a, b in zip(clock, clock[1:])])
    return [[statistics.median(s[k] for s in spans_i) * 1e6 for k in range(3)]
            for spans_i in spans]


Result = collections.namedtuple(
    "Result", "lib method sec ratio spread split mode compile_s")


def bench(name, device, methods, rounds, steps, use_biotorch, seed, gpu_options=False,
          with_phases=False, fused=True, compile_options=None):
    """A ``Result`` per variant: library, method, median s/step, median ratio, spread,
    phases, mode ("eager" or "compiled") and compile seconds (None for eager variants).

    The ratio is taken round by round against plain torch of the same mode timed in the
    same round, then the median over rounds: a slow spell of the machine cancels out of
    each ratio. ``phases`` is what ``phases()`` measures after the timed rounds, or None.
    With ``compile_options`` (torch.compile's keyword arguments) every torch and biofa
    variant is also timed compiled; its first step, which compiles, is timed on its own
    (the compile seconds) and followed by the usual warm-up steps.
    """
    # biofa train's amp + channels_last; BioTorch's Functions fail under autocast
    variants = make_variants(name, methods, device, use_biotorch and not gpu_options,
                             compile_options=compile_options, channels_last=gpu_options)
    torch.manual_seed(1)
    x = torch.randn(BATCH[name], *input_shape(name), device=device)
    y = torch.randint(0, 10, (BATCH[name],), device=device)
    if gpu_options:
        x = x.contiguous(memory_format=torch.channels_last)
    step_fns = [make_step(model, lib, method, x, y, amp=gpu_options, fused=fused,
                          compiled=mode == "compiled")
                for lib, method, model, mode in variants]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    compile_s = [None] * len(variants)
    for i, (step, (lib, method, _, mode)) in enumerate(zip(step_fns, variants)):
        if mode == "compiled":
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            compile_s[i] = time.perf_counter() - t0
            print(f"  {name} {device} compiled {method}: {compile_s[i]:.1f} s",
                  file=sys.stderr)
        for _ in range(WARMUP):
            step()
    sync()
    graphs = compiled_graphs() if compile_options is not None else None
    times = [[] for _ in variants]
    order = list(range(len(variants)))
    rng = random.Random(seed)
    gc.collect()
    gc.disable()  # a collection inside one timed burst would land on one variant only
    try:
        for r in range(rounds):
            rng.shuffle(order)
            for i in order:
                sync()
                t0 = time.perf_counter()
                for _ in range(steps):
                    step_fns[i]()
                sync()
                times[i].append((time.perf_counter() - t0) / steps)
            gc.collect()
            print(f"  {name} {device} round {r + 1}/{rounds}", end="\r", file=sys.stderr)
        split = phases(variants, step_fns, rounds, steps, seed) if with_phases else None
    finally:
        gc.enable()
    print(file=sys.stderr)
    if graphs is not None and compiled_graphs() != graphs:
        print(f"# warning: {name} {device}: {compiled_graphs() - graphs} graph(s) compiled "
              "during the timed rounds (recompiles); those rounds include compile time")
    # plain torch of the same mode, timed in the same rounds
    reference = {mode: times[i] for i, (lib, _, _, mode) in enumerate(variants)
                 if lib == "torch"}
    results = []
    for i, ((lib, method, _, mode), t) in enumerate(zip(variants, times)):
        ratios = [a / b for a, b in zip(t, reference[mode])]
        results.append(Result(lib, method, statistics.median(t), statistics.median(ratios),
                              spread(ratios), split and split[i], mode, compile_s[i]))
    return results


def compiled_graphs() -> int:
    """How many graphs torch.compile has compiled so far in this process."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def steady_allocator() -> bool:
    """Keep freed memory in glibc's heap instead of returning it to the system.

    By default every step's large activations are mapped fresh and page-faulted in, which
    costs a variable 10-20% of a LeNet step on a small VM and swamps differences of a few
    percent between variants. With the heap kept, every variant pays the same steady-state
    allocation cost. Linux/glibc only; returns False where mallopt is not available.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(libc.mallopt(option, value) == 1 for option, value in (
        (m_mmap_threshold, 1 << 30), (m_trim_threshold, 1 << 30), (m_top_pad, 1 << 28)))


def spread(times):
    """Interquartile range over median: how noisy a variant's rounds were."""
    if len(times) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(times, n=4)
    return (q3 - q1) / statistics.median(times)


def device_name(device):
    if device == "cuda":
        return torch.cuda.get_device_name()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def table(results, methods, markdown, with_mode=False):
    """Rows = model/device/library(/mode), columns = methods (ratio to plain torch of the
    same mode); ``with_mode`` adds the mode column and, per compiled row, "compiled/eager":
    the compiled plain model's time over the eager one's."""
    head = (["model", "device", "batch", "impl"] + ["mode"] * with_mode + ["torch ms/step"]
            + list(methods) + ["torch compiled/eager"] * with_mode)
    rows = []
    for (name, device), res in results.items():
        refs = {r.mode: r.sec for r in res if r.lib == "torch"}
        for impl, mode in (("biofa", "eager"), ("biotorch", "eager"), ("biofa", "compiled")):
            cells = {r.method: r.ratio for r in res if r.lib == impl and r.mode == mode}
            if cells:
                speedup = ([f"{refs[mode] / refs['eager']:.2f}x" if mode == "compiled" else "-"]
                           if with_mode else [])
                rows.append([name, device, str(BATCH[name]), impl] + [mode] * with_mode
                            + [f"{refs[mode] * 1e3:.2f}"]
                            + [f"{cells[m]:.2f}x" if m in cells else "-" for m in methods]
                            + speedup)
    return render(head, rows, markdown)


def compile_table(results, methods, markdown):
    """Seconds of every compiled variant's first step, which compiles it."""
    head = ["model", "device", "compile s: torch"] + list(methods)
    rows = []
    for (name, device), res in results.items():
        cells = {r.method: r.compile_s for r in res if r.mode == "compiled"}
        if cells:
            rows.append([name, device, f"{cells['torch']:.1f}"]
                        + [f"{cells[m]:.1f}" if m in cells else "-" for m in methods])
    return render(head, rows, markdown)


def render(head, rows, markdown=False):
    """A Markdown table, or columns aligned for a terminal (also used by attack_throughput)."""
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in [head] + rows)


def phase_table(results, markdown):
    """Where each variant's step goes: microseconds per phase and the total's excess over
    plain torch in each phase."""
    head = ["model", "device", "variant", "forward us", "backward us", "step us",
            "extra fwd/bwd/step us"]
    rows = []
    for (name, device), res in results.items():
        refs = {r.mode: r.split for r in res if r.lib == "torch"}
        for lib, method, _, _, _, split, mode, _ in res:
            label = method if lib in ("biofa", "torch") else f"{lib}:{method}"
            label = label if mode == "eager" else f"compiled:{label}"
            extra = "/".join(f"{a - b:+.0f}" for a, b in zip(split, refs[mode]))
            rows.append([name, device, label] + [f"{v:.0f}" for v in split] + [extra])
    return render(head, rows, markdown)


def noise_note(results):
    """The noisiest variant's IQR/median over rounds; a busy machine shows up here."""
    worst, label = max((r.spread, f"{name}/{device} {r.lib}:{r.method}"
                                  + (" compiled" if r.mode == "compiled" else ""))
                       for (name, device), res in results.items() for r in res)
    verdict = "busy machine? rerun" if worst > 0.10 else "ok"
    return f"noisiest variant: {label}, IQR/median over rounds {worst:.0%} ({verdict})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="lenet_mnist,resnet20")
    parser.add_argument("--methods", default=",".join(biofa.METHODS))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=5, help="steps per variant per round")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the round orders")
    parser.add_argument("--csv", help="also write long-format rows to this file")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--no-biotorch", action="store_true", help="skip the BioTorch rows")
    parser.add_argument("--gpu-options", action="store_true",
                        help="CUDA rows also with amp and channels_last (biofa train's options)")
    parser.add_argument("--system-allocator", action="store_true",
                        help="leave glibc's allocator as it is (noisier: see steady_allocator)")
    parser.add_argument("--phases", action="store_true",
                        help="also time forward, backward and optimiser step separately")
    parser.add_argument("--unfused", action="store_true",
                        help="torch's per-parameter optimiser loop instead of the fused update")
    parser.add_argument("--keep-denormals", action="store_true",
                        help="no flush-to-zero on the CPU (noisier: see main)")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile(model, fullgraph=True) of torch and "
                             "every biofa method, against the compiled torch model")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile's backend (with --compile)")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile's mode, e.g. reduce-overhead or max-autotune "
                             "(with --compile)")
    args = parser.parse_args()

    models = args.models.split(",")
    methods = args.methods.split(",")
    for name in models:
        if name not in BATCH:
            parser.error(f"unknown model {name!r}; choose from {', '.join(BATCH)}")
    for method in methods:
        if method not in biofa.METHODS:
            parser.error(f"unknown method {method!r}; choose from {', '.join(biofa.METHODS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    devices = {"cpu": ["cpu"], "cuda": ["cuda"],
               "all": ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])}[args.device]
    torch.set_num_threads(args.threads)
    # Each variant memorises its fixed batch within a few hundred steps; its gradients then
    # fall into float32's subnormal range, which x86 CPUs process far slower, and each
    # variant gets there at its own time. Flushing subnormals to zero (what GPUs do under
    # fast math anyway) keeps the timing about the arithmetic, the same for every variant.
    flush = not args.keep_denormals and torch.set_flush_denormal(True)
    # BioTorch's DFA layers use torch's deprecated register_backward_hook
    warnings.filterwarnings("ignore", message="Using a non-full backward hook")
    use_biotorch = BioModule is not None and not args.no_biotorch
    allocator = "system allocator" if args.system_allocator or not steady_allocator() \
        else "steady heap"

    names = ", ".join(f"{d}: {device_name(d)}" for d in devices)
    print(f"# {datetime.datetime.now():%Y-%m-%d %H:%M} | torch {torch.__version__} | {names} | "
          f"{torch.get_num_threads()} threads | {allocator}{' | subnormals flushed' if flush else ''} | "
          f"SGD {'per-parameter loop' if args.unfused else 'fused'} | {args.rounds} rounds x "
          f"{args.steps} steps | median over rounds of the ratio to plain torch backprop")
    if BioModule is None:
        print(f"# biotorch not importable ({BIOTORCH_ERROR}); no biotorch rows. "
              "Try: pip install --no-deps biotorch==0.0.16")

    compile_options = None
    if args.compile:
        compile_options = {"backend": args.compile_backend}
        if args.compile_mode is not None:
            compile_options["mode"] = args.compile_mode
        # every method's model is one more graph of the same forward code (one per device
        # and option set): more than dynamo's default limit of 8 before it gives up
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        print(f"# compiled rows: torch.compile(model, fullgraph=True, backend="
              f"{args.compile_backend!r}, mode={args.compile_mode!r}) of the forward pass "
              "(and the backward AOTAutograd derives), eager optimiser step; ratios to the "
              "compiled plain model; OpenMP wait policy "
              + ("PASSIVE (set by --compile)" if OMP_PASSIVE
                 else os.environ.get("OMP_WAIT_POLICY", "default")))

    runs = [(device, device, False) for device in devices]
    if args.gpu_options and "cuda" in devices:
        runs.append(("cuda", "cuda amp+channels_last", True))
    results = {}
    for device, label, gpu_options in runs:
        for name in models:
            results[(name, label)] = bench(name, device, methods, args.rounds, args.steps,
                                           use_biotorch, args.seed, gpu_options, args.phases,
                                           fused=not args.unfused,
                                           compile_options=compile_options)
    print(table(results, methods, args.markdown, with_mode=args.compile))
    if args.compile:
        print(compile_table(results, methods, args.markdown))
    if args.phases:
        print(phase_table(results, args.markdown))
    print(noise_note(results))

    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["model", "device", "batch", "method", "median_ms", "ratio"])
            for (name, device), res in results.items():
                for lib, method, sec, ratio, _, _, mode, _ in res:
                    label = method if lib != "biotorch" else f"biotorch:{method}"
                    label = label if mode == "eager" else f"compiled:{label}"
                    writer.writerow([name, device, BATCH[name], label,
                                     f"{sec * 1e3:.3f}", f"{ratio:.3f}"])


if __name__ == "__main__":
    main()
