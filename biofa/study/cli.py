"""The ``biofa`` command: one sub-command per step of the study.

    biofa methods                          list the learning rules
    biofa data NAME... --root DIR          make sure data sets are on disk
    biofa train CONFIG.yaml --out DIR      train one run (resumes from DIR/last.pt; a stop
                                           signal checkpoints mid-epoch and exits 75)
    biofa evaluate DIR                     test error of DIR/best.pt into DIR/test.json
    biofa attack DIR --attack NAME ...     robust accuracy under an attack, into a CSV
    biofa report collect|attacks|table|init-table|figure   the study's tables and figures
    biofa native [--check]                 build the compiled extension once (or report it)

Bad input (unknown key, method or data set, missing files) ends with one line that
names the problem and the fix, and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.util import find_spec

# The command is the study's, whose packages are the extra biofa[study]: a library-only
# install gets one line naming it, not an ImportError from whichever step needs one first.
STUDY_MODULES = ("yaml", "jsonschema", "numpy", "pandas", "matplotlib", "seaborn", "sklearn",
                 "torchattacks", "tqdm", "PIL")
_missing = [name for name in STUDY_MODULES if find_spec(name) is None]
if _missing:
    sys.exit(f"biofa: the biofa command needs the study's packages ({', '.join(_missing)} "
             "missing): pip install \"biofa[study]\"")

from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

from ..errors import BiofaError, UsageError


def _set(config: dict, assignment: str) -> None:
    """Apply ``a.b=value`` (value parsed as YAML) to a raw config."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise UsageError(f"--set expects key=value (e.g. optimizer.lr=0.01), got {assignment!r}")
    *parents, last = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UsageError(f"--set {key}: {part!r} is not a section of the config")
    try:
        node[last] = yaml.safe_load(value)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise UsageError(f"--set {key}: {value!r} is not a YAML value ({problem}); quote text and "
                         f"close brackets, e.g. --set schedule.milestones=[2,4]") from None


def cmd_methods(args) -> int:
    from ..methods import METHODS, PAPER_METHODS

    width = max(map(len, METHODS))
    for name, rule in METHODS.items():
        mark = "" if name in PAPER_METHODS else "  (not in Sanfiz & Akrout 2021)"
        if not rule.__module__.startswith("biofa."):
            mark += f"  (plugin: {rule.__module__})"
        print(f"{name:<{width}} {rule.paper}{mark}")
    return 0


def cmd_native(args) -> int:
    """Build (or load) the compiled feedback operators for this torch installation and say
    where they are; where they cannot be built, say that the Python functions run. Exit 0
    either way: the workflow runs this first also where no compiler exists."""
    import os
    import warnings

    from .. import _native

    if os.environ.get("BIOFA_NATIVE", "1") == "0":
        print("biofa native: disabled (BIOFA_NATIVE=0): the Python functions run "
              "(same results, slower on small models)")
        return 0
    import torch

    folder = _native.build_directory(create=not args.check)
    built = _native.is_built(folder)
    compiler = _native._compiler()
    if args.check:
        if built:
            state = f"built for torch {torch.__version__} in {folder}"
        elif compiler is None:
            state = ("not built and no C++ compiler (CXX or c++): the Python functions run "
                     "(same results, slower on small models)")
        else:
            state = (f"not built yet for torch {torch.__version__}: the first use (or "
                     f"biofa native) compiles it into {folder}, about a minute")
        print(f"biofa native: {state}")
        return 0
    if compiler is None and not built:
        print("biofa native: no C++ compiler (CXX or c++) to build them: the Python functions "
              "run (same results, slower on small models)")
        return 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = _native.load(mode="1")
    if module is None:
        reason = next((str(w.message).removeprefix("biofa: ") for w in caught),
                      "they did not build; the Python functions run (same results)")
        print(f"biofa native: {reason}")
        return 0
    how = "already built" if built else "compiled now"
    print(f"biofa native: {how} for torch {torch.__version__}: {module.__file__}")
    return 0


def cmd_data(args) -> int:
    from .data import prepare

    for name in args.names:
        print(prepare(name, args.root, download=not args.no_download, stand_in=args.stand_in))
    return 0


def cmd_train(args) -> int:
    from .config import read, validate
    from .train import train

    raw = read(args.config)
    for assignment in args.set:
        _set(raw, assignment)
    from .train import Stopped

    try:
        status = train(validate(raw), args.out, restart_on_change=args.restart_on_change,
                       restart=args.restart, evaluate=tuple(args.evaluate))
    except Stopped as stopped:
        print(f"biofa train: {stopped}", file=sys.stderr)
        return stopped.exit_status
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 reports for the run
    print(f"{args.out}: {status['status']} at epoch {status['epoch']}")
    if args.evaluate:
        from .io import read_json
        from .run import RunFolder

        for split in dict.fromkeys(args.evaluate):
            _print_evaluation(args.out, read_json(Path(args.out) / RunFolder.evaluation(split)))
    return 0


def _print_evaluation(run_dir, report: dict) -> None:
    print(f"{run_dir}: {report['split']} top-1 error {report['top1_error']:.2%} "
          f"on {report['n_images']} images")


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate

    _print_evaluation(args.run_dir, evaluate(args.run_dir, split=args.split, device=args.device))
    return 0


def _numbers(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


_SINGLE_DEFAULTS = {"n": 500, "batch_size": 128, "seed": 0, "gradient": "feedback,true",
                    "steps": 10}


def cmd_attack(args) -> int:
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if (args.attack is None) == (args.plan is None):
        raise UsageError("give --attack NAME (one attack, into --out CSV) or --plan ATTACKS.yaml "
                         "(a study's attacks: section, into --out-dir DIR), not "
                         f"{'both' if args.plan else 'neither'}")
    if args.plan is not None:
        return _attack_plan(args)
    if args.out is None or args.out_dir is not None:
        raise UsageError("--attack writes one CSV: give --out FILE.csv (--out-dir is for --plan)")
    from .attack import attack_to_csv

    for key, value in _SINGLE_DEFAULTS.items():  # queries: the attack's own default
        if getattr(args, key) is None:
            setattr(args, key, value)
    strengths = args.pixels if args.attack == "onepixel" else args.eps
    frame = attack_to_csv(args.out, args.run_dir, args.attack, strengths or [], n=args.n,
                          gradients=tuple(args.gradient.split(",")), source=args.source,
                          steps=args.steps, queries=args.queries, batch_size=args.batch_size,
                          seed=args.seed, device=args.device)
    print(frame[["attack", "gradient", "eps", "pixels", "clean_acc", "robust_acc"]]
          .to_string(index=False))
    return 0


def read_attacks(path: str | Path) -> dict:
    """The validated ``attacks:`` section of a YAML file holding either the section itself
    or a mapping with the one key ``attacks`` (:func:`validate_attacks`)."""
    from ..errors import ConfigError
    from .config import _yaml_problem
    from .study_config import validate_attacks

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"attacks file {str(path)!r} does not exist"
                          + (" as a file" if path.exists() else "")
                          + "; give a YAML file holding a study's attacks: section")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(f"attacks file {str(path)!r} is not text: byte {error.start} "
                          "cannot be decoded") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"attacks file {str(path)!r} is not valid YAML: "
                          f"{_yaml_problem(error)}") from None
    raw = {} if raw is None else raw
    if isinstance(raw, dict) and set(raw) == {"attacks"}:
        raw = raw["attacks"]
    try:
        return validate_attacks(raw)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def _attack_plan(args) -> int:
    """``biofa attack DIR --plan ATTACKS.yaml --out-dir OUT``: every attack of the plan."""
    given = [f"--{name.replace('_', '-')}" for name in ("eps", "pixels", "gradient", "steps",
                                                          "queries", "out")
             if getattr(args, name) is not None]
    if given:
        raise UsageError(f"--plan takes each attack's options from ATTACKS.yaml; drop "
                         f"{', '.join(given)} (or run one attack with --attack)")
    if args.out_dir is None:
        raise UsageError("--plan writes one CSV per attack: give --out-dir DIR")
    from .attack import run_plan

    section = read_attacks(args.plan)
    for path in run_plan(args.run_dir, section, args.out_dir, source=args.source, n=args.n,
                         batch_size=args.batch_size, seed=args.seed, device=args.device):
        print(path)
    return 0


def cmd_check(args) -> int:
    """Validate a study config (one with ``experiments:``) or a run config; writes nothing.

    A study is checked as a whole (every run it would train, every attack target), so a
    mistake is found here rather than hours into a workflow."""
    from .config import read, validate
    from ..errors import ConfigError
    from .study_config import is_study, runs, validate_study

    raw = read(args.config)
    try:
        if is_study(raw):
            count = len(runs(validate_study(raw)))
        else:
            validate(raw)
            count = 1
    except ConfigError as error:
        raise ConfigError(f"{args.config}: {error}") from None
    print(f"{args.config}: ok ({count} run{'' if count == 1 else 's'})")
    return 0


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{what} {path} does not exist")
    return path


def cmd_collect(args) -> int:
    from .collect import collect_runs, write_collected

    frames = collect_runs(args.runs)
    for path in write_collected(frames, args.out_dir):
        print(path)
    return 0


def cmd_attacks(args) -> int:
    from . import io
    from .collect import collect_attacks

    frame = collect_attacks(args.csv, optimizer=args.optimizer)
    io.write_csv(args.out, frame)
    print(f"{args.out}: {len(frame)} rows from {len(args.csv)} files")
    return 0


def cmd_table(args) -> int:
    from .collect import read_csv
    from .names import ACCURACY_COLUMNS
    from .tables import error_table, write_table

    accuracy = read_csv(_existing(args.accuracy, "accuracy CSV"), ACCURACY_COLUMNS)
    table = error_table(accuracy, args.reference)
    for path in write_table(table, args.prefix):
        print(path)
    return 0


def cmd_init_table(args) -> int:
    from .collect import read_csv
    from .names import ACCURACY_COLUMNS
    from .tables import init_table, write_table

    accuracy = read_csv(_existing(args.accuracy, "accuracy CSV"), ACCURACY_COLUMNS)
    for path in write_table(init_table(accuracy), args.prefix, kind="init"):
        print(path)
    return 0


def cmd_figure(args) -> int:
    import pandas as pd

    from .collect import read_csv
    from .figures import FIGURES  # matplotlib only for the command that draws
    from .names import ATTACK_COLUMNS, ATTACK_TABLE, FIGURE_TABLES, REFERENCE_FIGURES

    if args.name not in FIGURES:
        raise UsageError(f"unknown figure {args.name!r}; valid: {', '.join(FIGURES)}")
    frame = read_csv(_existing(args.input, "input CSV"))
    if FIGURE_TABLES[args.name] == ATTACK_TABLE:
        for column in ATTACK_COLUMNS:
            if column not in frame.columns:
                frame[column] = pd.Series(dtype=object)
    kwargs = {"reference": args.reference} if args.name in REFERENCE_FIGURES else {}
    if args.reference and not kwargs:
        raise UsageError(f"--reference applies to the {' and '.join(REFERENCE_FIGURES)} "
                         f"figures, not {args.name}")
    if args.reference:
        _existing(args.reference, "reference CSV")
    print(FIGURES[args.name](frame, args.out, **kwargs))
    return 0


def _add_report_commands(subparsers) -> None:
    """Add ``biofa report collect|attacks|table|init-table|figure`` to the ``biofa`` parser."""
    from .names import FIGURE_NAMES

    report = subparsers.add_parser("report", help="tables and figures from runs and attack CSVs")
    sub = report.add_subparsers(dest="report_command", required=True, metavar="STEP")

    p = sub.add_parser("collect", help="run folders -> accuracy.csv, training.csv, alignment.csv")
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR",
                   help="run folders (or a file inside each, e.g. RUN_DIR/test.json)")
    p.add_argument("--out-dir", required=True, metavar="DIR")
    p.set_defaults(run=cmd_collect)

    p = sub.add_parser("attacks", help="concatenate biofa attack CSVs")
    p.add_argument("--csv", nargs="+", required=True, metavar="CSV")
    p.add_argument("--out", required=True, metavar="FILE.csv")
    p.add_argument("--optimizer", help="for CSVs that lack the optimizer column: its value (sgd, adam)")
    p.set_defaults(run=cmd_attacks)

    p = sub.add_parser("table", help="top-1 error table next to the paper's (.md .tex .csv)")
    p.add_argument("--accuracy", required=True, metavar="accuracy.csv")
    p.add_argument("--reference", default="config/reference/paper_results.csv", metavar="CSV",
                   help="published errors (default config/reference/paper_results.csv)")
    p.add_argument("--prefix", required=True, metavar="PREFIX",
                   help="writes PREFIX.md, PREFIX.tex and PREFIX.csv")
    p.set_defaults(run=cmd_table)

    p = sub.add_parser("init-table", help="top-1 error by init and method, for each setting "
                                          "trained from several inits (.md .tex .csv)")
    p.add_argument("--accuracy", required=True, metavar="accuracy.csv")
    p.add_argument("--prefix", required=True, metavar="PREFIX",
                   help="writes PREFIX.md, PREFIX.tex and PREFIX.csv")
    p.set_defaults(run=cmd_init_table)

    p = sub.add_parser("figure", help="one figure, as FILE.png and FILE.pdf")
    p.add_argument("name", choices=FIGURE_NAMES, metavar="NAME",
                   help=f"one of {', '.join(FIGURE_NAMES)}")
    p.add_argument("--input", required=True, metavar="CSV",
                   help="training.csv / alignment.csv / accuracy.csv (initialization) from "
                        "collect, or attacks CSV")
    p.add_argument("--out", required=True, metavar="FILE.png")
    p.add_argument("--reference", metavar="CSV",
                   help="robustness/onepixel: config/reference/paper_robustness.csv, drawn as stars")
    p.set_defaults(run=cmd_figure)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="biofa", description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("methods", help="list the learning rules")
    p.set_defaults(run=cmd_methods)

    p = sub.add_parser("data", help="download or check data sets")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--root", default="data", help="folder for the data sets (default: data)")
    p.add_argument("--no-download", action="store_true", help="only check that the files are there")
    p.add_argument("--stand-in", action="store_true",
                   help="write a tiny random stand-in in the real files and layout, for a smoke run "
                        "without the real data (marked ROOT/NAME/STAND-IN; never over real data)")
    p.set_defaults(run=cmd_data)

    p = sub.add_parser(
        "train", help="train one model with one learning rule",
        description="Train one model with one learning rule into a run folder. On several "
                    "processes: torchrun --nproc-per-node N --no-python biofa train CONFIG --out "
                    "DIR (batch_size is the global batch; rank 0 writes DIR).")
    p.add_argument("config", help="YAML run config (see config/README.md)")
    p.add_argument("--out", required=True, help="run folder; an interrupted run resumes from it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set method=fa --set optimizer.lr=0.01")
    p.add_argument("--restart-on-change", action="store_true",
                   help="if DIR holds a run of another config, start afresh instead of refusing")
    p.add_argument("--restart", action="store_true",
                   help="discard what DIR holds (e.g. a corrupted last.pt) and train afresh")
    from .run import RunFolder

    p.add_argument("--evaluate", action="append", default=[], choices=RunFolder.EVALUATIONS,
                   metavar="SPLIT",
                   help="then evaluate the best checkpoint on SPLIT (test or val) into "
                        "DIR/SPLIT.json, as biofa evaluate does, in the same process; a "
                        "finished run writes it only if missing (repeatable)")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("evaluate", help="test error of a run's best checkpoint")
    p.add_argument("run_dir", metavar="DIR")
    p.add_argument("--split", default="test", choices=RunFolder.EVALUATIONS)
    p.add_argument("--device", default="auto")
    p.set_defaults(run=cmd_evaluate)

    from .names import ATTACKS, AUTOATTACK_QUERIES, AUTOATTACK_STEPS, PAPER_SQUARE_QUERIES
    p = sub.add_parser("attack", help="adversarial robustness of a run's best checkpoint",
                       description="One attack (--attack NAME --out FILE.csv), or every attack "
                                   "of a study's attacks: section (--plan ATTACKS.yaml --out-dir "
                                   "DIR, one DIR/ATTACK-GRADIENT.csv each, the model loaded once).")
    p.add_argument("run_dir", metavar="DIR")
    p.add_argument("--attack", choices=ATTACKS, help="the one attack to run (or --plan)")
    p.add_argument("--plan", metavar="ATTACKS.yaml",
                   help="a study's attacks: section (the section, or a mapping with the key "
                        "attacks); runs every attack it plans")
    p.add_argument("--eps", type=_numbers, help="comma-separated budgets in [0, 1] (L-inf), e.g. 0,0.01,0.03")
    p.add_argument("--pixels", type=_numbers, help="onepixel: comma-separated pixel counts, e.g. 1,2,3,4,5")
    p.add_argument("--n", type=int, help="first N test images (default 500, as in the paper; "
                                         "with --plan: its n_images)")
    p.add_argument("--out", help="--attack: the CSV to write (atomically)")
    p.add_argument("--out-dir", metavar="DIR",
                   help="--plan: the folder of the CSVs, each written atomically")
    p.add_argument("--gradient",
                   help="white-box threat models: feedback, true or both (default both)")
    p.add_argument("--source", help="transfer: the backpropagation run that crafts the examples")
    p.add_argument("--steps", type=int,
                   help=f"iterations of pgd/tpgd/apgd, and of autoattack's APGD-CE, APGD-T and "
                        f"FAB-T (default 10; {AUTOATTACK_STEPS} is torchattacks' standard "
                        f"AutoAttack, the original code runs 100)")
    p.add_argument("--queries", type=int,
                   help=f"square: query budget (default {PAPER_SQUARE_QUERIES}, the paper's; library "
                        f"default 5000); autoattack: its Square's (default {AUTOATTACK_QUERIES}, "
                        f"the standard version's)")
    p.add_argument("--batch-size", type=int, help="default 128; with --plan: its batch_size")
    p.add_argument("--seed", type=int, help="default 0; with --plan: its seed")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=_positive, metavar="N",
                   help="CPU threads of torch (default: torch's, one per core); jobs running "
                        "side by side each want their own")
    p.set_defaults(run=cmd_attack)

    p = sub.add_parser("check", help="validate a study config or a run config, writing nothing")
    p.add_argument("config", help="YAML study config (with experiments:) or run config")
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("native", help="build the compiled feedback operators once for this "
                                      "torch installation (or, with --check, say if they are)")
    p.add_argument("--check", action="store_true",
                   help="only report whether they are built, building nothing")
    p.set_defaults(run=cmd_native)

    _add_report_commands(sub)
    return top


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be swapped, e.g. by pytest)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _log_to_stderr() -> None:
    """biofa's progress lines on stderr, each with its time, for the command only.

    As a library biofa only logs; where those lines go is the application's choice.
    """
    logger = logging.getLogger("biofa")
    if not any(isinstance(handler, _Stderr) for handler in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _log_to_stderr()
    try:
        return args.run(args)
    except BiofaError as error:  # input biofa cannot use; anything else is a bug: traceback
        print(f"biofa {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"biofa {args.command}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
