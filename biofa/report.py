"""``biofa report``: gather run folders and attack CSVs into tables and figures.

Three steps, each a plain function a workflow can call on file paths:

* :func:`collect_runs` / :func:`collect_attacks` read what ``biofa train``,
  ``biofa evaluate`` and ``biofa attack`` wrote into tidy frames (CSV on disk);
* :func:`error_table` lays the test errors out like the paper's benchmark tables,
  next to the published numbers (``config/reference/paper_results.csv``);
* ``fig_*`` draw one PNG each, with one fixed colour per method across all figures.

Every figure is written even when its data is absent (a panel says so), so a workflow
can always declare it as an output. Every file is written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import yaml

from . import io
from .attack import COLUMNS as ATTACK_COLUMNS
from .attack import WHITE_BOX
from .methods import PAPER_METHODS
from .errors import UsageError

# ----------------------------------------------------------------------------- names

KEYS = ["dataset", "model", "optimizer", "method", "seed"]
TEXT_COLUMNS = ["dataset", "model", "optimizer", "method", "attack", "gradient", "source", "status"]
ACCURACY_COLUMNS = KEYS + ["status", "epochs_done", "best_epoch", "top1_error", "n_images",
                           "in_paper", "run_dir"]

#: Rows of every table and legend, in the paper's order; kp (not in the paper) last.
METHOD_ORDER = tuple(PAPER_METHODS) + ("kp",)

#: One colour per method, the same in every figure.
PALETTE = {"bp": "#222222", "fa": "#1f77b4", "dfa": "#ff7f0e", "usf": "#2ca02c",
           "brsf": "#d62728", "frsf": "#9467bd", "kp": "#8c564b"}

DATASET_NAMES = {"digits": "Digits", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST",
                 "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}
MODEL_NAMES = {"lenet_mnist": "LeNet", "lenet_cifar": "LeNet", "resnet18": "ResNet-18",
               "resnet20": "ResNet-20", "resnet32": "ResNet-32", "resnet44": "ResNet-44",
               "resnet56": "ResNet-56", "resnet110": "ResNet-110"}
OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam"}

FIGURE_NAMES = ("training", "alignment", "alignment_layers", "robustness", "onepixel", "transfer")
ROBUSTNESS_ATTACKS = tuple(WHITE_BOX) + ("square",)
GRADIENT_STYLES = {"feedback": "-", "true": "--", "none": "-", "transfer": "-"}
GRADIENT_LABELS = {"feedback": "feedback gradient (the rule's own)",
                   "true": "true gradient (exact backprop)",
                   "none": "Square: outputs only"}

TABLE_LEGEND = ("Top-1 test error (%): mean ± sample std over the seeds that completed "
                "(one number when one seed did); published value of Sanfiz & Akrout 2021 in "
                "parentheses, — where the paper has none; [k/n diverged] and [k/n unfinished] "
                "count seeds left out of the mean because training diverged or is still running.")


def method_label(method: str) -> str:
    """How a method appears in tables and legends: kp says it is not in the paper."""
    return method if method in PAPER_METHODS else f"{method} (not in paper)"


def setting_label(dataset: str, model: str, optimizer: str | None = None) -> str:
    """Readable column/panel header such as 'CIFAR-10 ResNet-20 SGD'."""
    parts = [DATASET_NAMES.get(dataset, dataset), MODEL_NAMES.get(model, model)]
    if optimizer is not None and not (isinstance(optimizer, float) and math.isnan(optimizer)):
        parts.append(OPTIMIZER_NAMES.get(optimizer, str(optimizer)))
    return " ".join(parts)


def _order(values, preferred) -> list:
    """``values`` in ``preferred`` order, unknown ones after it, sorted."""
    values = list(dict.fromkeys(values))
    known = [v for v in preferred if v in values]
    return known + sorted((v for v in values if v not in preferred), key=str)


def _methods(values) -> list[str]:
    return _order(values, METHOD_ORDER)


def _settings(frame: pd.DataFrame, with_optimizer: bool = True) -> list[tuple]:
    """The (dataset, model[, optimizer]) combinations of ``frame``, in a stable reading order."""
    columns = ["dataset", "model"] + (["optimizer"] if with_optimizer else [])
    if frame.empty:
        return []
    combos = frame[columns].drop_duplicates().itertuples(index=False, name=None)
    datasets, models = list(DATASET_NAMES), list(MODEL_NAMES)
    optimizers = list(OPTIMIZER_NAMES)

    def rank(combo):
        dataset, model, *optimizer = combo
        return (datasets.index(dataset) if dataset in datasets else len(datasets), str(dataset),
                models.index(model) if model in models else len(models), str(model),
                *[(optimizers.index(o) if o in optimizers else len(optimizers), str(o))
                  for o in optimizer])

    return sorted(combos, key=rank)


# ----------------------------------------------------------------------------- collecting

def _read_csv(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A CSV as a frame; a zero-byte file is an empty frame rather than an error.

    Names stay text: pandas would otherwise read a column holding only ``true`` (the
    gradient of an attack file) as booleans.
    """
    try:
        return pd.read_csv(path, dtype={key: str for key in TEXT_COLUMNS})
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=columns or [])


def _run_folder(path: str | Path) -> Path:
    """A run folder, also when given a file inside it (workflows pass files, e.g. test.json)."""
    path = Path(path)
    return path.parent if path.is_file() else path


def _read_run(run: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """(accuracy row, metrics, alignment) of one run folder; clear errors for missing files."""
    if not (run / "config.yaml").exists():
        raise UsageError(f"{run} is not a run folder (no config.yaml); "
                         f"train it first: biofa train CONFIG.yaml --out {run}")
    if not (run / "test.json").exists():
        raise UsageError(f"run {run} has no test.json; evaluate it first: biofa evaluate {run}")
    config = yaml.safe_load((run / "config.yaml").read_text())
    test = io.read_json(run / "test.json")
    status = (io.read_json(run / "status.json") if (run / "status.json").exists()
              else {"status": test.get("status", "unknown"), "epoch": math.nan})
    key = {"dataset": config["dataset"], "model": config["model"],
           "optimizer": config["optimizer"]["name"], "method": config["method"],
           "seed": config["seed"]}
    epoch = status.get("epoch", math.nan)
    # A diverged run's status names the epoch that blew up; the ones before it are done.
    done = epoch - 1 if status.get("status") == "diverged" else epoch
    row = {**key, "status": status.get("status", "unknown"), "epochs_done": done,
           "best_epoch": status.get("best_epoch", test.get("best_epoch", math.nan)),
           "top1_error": test["top1_error"], "n_images": test["n_images"],
           "in_paper": config["method"] in PAPER_METHODS, "run_dir": str(run)}

    def keyed(name: str) -> pd.DataFrame:
        path = run / name
        frame = _read_csv(path) if path.exists() else pd.DataFrame()
        frame = frame.drop(columns=[k for k in KEYS if k in frame.columns])
        for position, (column, value) in enumerate(key.items()):
            frame.insert(position, column, value)
        return frame

    return row, keyed("metrics.csv"), keyed("alignment.csv")


def collect_runs(run_dirs) -> dict[str, pd.DataFrame]:
    """Tidy frames of many run folders, so tables and figures never re-read run folders.

    Returns ``accuracy`` (one row per run; ``top1_error`` is a fraction, as in test.json),
    ``training`` (metrics.csv rows) and ``alignment`` (alignment.csv rows), each keyed
    by dataset, model, optimizer, method and seed. Two folders of the same key would be
    averaged as if they were different seeds, so they are refused.
    """
    rows, training, alignment, seen = [], [], [], {}
    for path in run_dirs:
        run = _run_folder(path)
        row, metrics, aligned = _read_run(run)
        key = tuple(row[k] for k in KEYS)
        if key in seen:
            raise UsageError(f"runs {seen[key]} and {run} are the same setting "
                             f"({', '.join(f'{k}={v}' for k, v in zip(KEYS, key))}); "
                             "give each seed once")
        seen[key] = run
        rows.append(row)
        training.append(metrics)
        alignment.append(aligned)

    def concat(frames):
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=KEYS)

    return {"accuracy": pd.DataFrame(rows, columns=ACCURACY_COLUMNS),
            "training": concat(training), "alignment": concat(alignment)}


def write_collected(frames: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    """``out_dir``/accuracy.csv, training.csv, alignment.csv."""
    paths = []
    for name in ("accuracy", "training", "alignment"):
        path = Path(out_dir) / f"{name}.csv"
        io.write_csv(path, frames[name])
        paths.append(path)
    return paths


def collect_attacks(csv_paths, optimizer: str | dict | None = None) -> pd.DataFrame:
    """All ``biofa attack`` CSVs in one frame (columns as ``biofa.attack.COLUMNS``).

    Each row names its run's optimizer, so figures keep SGD and Adam models apart.
    ``optimizer`` (one name, or a mapping {csv path: name}) fills that column only for
    CSVs written by biofa versions that did not record it; a file without it is refused
    otherwise, since its rows would be averaged across optimizers.
    """
    frames = []
    for path in csv_paths:
        path = Path(path)
        if not path.exists():
            raise UsageError(f"attack CSV {path} does not exist; make it with biofa attack RUN_DIR "
                             f"--attack NAME --out {path}")
        frame = _read_csv(path, ATTACK_COLUMNS)
        if "optimizer" not in frame.columns:
            given = optimizer.get(str(path), optimizer.get(path)) if isinstance(optimizer, dict) \
                else optimizer
            if given is None:
                raise UsageError(f"{path} does not say which optimizer trained its model; attack "
                                 "the run again, or name it: biofa report attacks --optimizer NAME")
            frame.insert(ATTACK_COLUMNS.index("optimizer"), "optimizer", given)
        missing = [c for c in ATTACK_COLUMNS if c not in frame.columns]
        if missing:
            raise UsageError(f"{path} is not a biofa attack CSV: columns {missing} missing")
        if not frame.empty:
            frames.append(frame[ATTACK_COLUMNS])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ATTACK_COLUMNS)


# ----------------------------------------------------------------------------- the table

def load_reference(reference) -> pd.DataFrame:
    """The published errors: a frame as is, or read from a CSV path."""
    if isinstance(reference, pd.DataFrame):
        return reference
    path = Path(reference)
    if not path.exists():
        raise UsageError(f"reference file {path} does not exist "
                         "(the published numbers are in config/reference/paper_results.csv)")
    frame = pd.read_csv(path)
    missing = {"dataset", "model", "optimizer", "method", "top1_error"} - set(frame.columns)
    if missing:
        raise UsageError(f"{path}: columns {sorted(missing)} missing")
    return frame


def error_summary(accuracy: pd.DataFrame, reference=None) -> pd.DataFrame:
    """Numbers behind :func:`error_table`: one row per setting and method, errors in %.

    Only seeds whose status is ``complete`` enter the mean and std (ddof 1), because a
    diverged run's best checkpoint is not the rule's result; the others are counted.
    """
    reference = load_reference(reference) if reference is not None else None
    rows = []
    for (dataset, model, optimizer, method), group in accuracy.groupby(
            ["dataset", "model", "optimizer", "method"], sort=False):
        ok = group[group["status"] == "complete"]["top1_error"].astype(float) * 100
        published, published_optimizer = math.nan, ""
        if reference is not None:
            same = reference[(reference["dataset"] == dataset) & (reference["model"] == model)
                             & (reference["method"] == method)]
            exact = same[same["optimizer"] == optimizer]
            if len(exact):
                published = float(exact["top1_error"].iloc[0])
            elif len(same) == 1:  # e.g. ImageNet DFA: the paper reports its Adam run only
                published = float(same["top1_error"].iloc[0])
                published_optimizer = same["optimizer"].iloc[0]
        rows.append({"dataset": dataset, "model": model, "optimizer": optimizer, "method": method,
                     "n_seeds": len(group), "n_complete": len(ok),
                     "n_diverged": int((group["status"] == "diverged").sum()),
                     "mean": ok.mean() if len(ok) else math.nan,
                     "std": ok.std(ddof=1) if len(ok) > 1 else math.nan,
                     "published": published, "published_optimizer": published_optimizer})
    return pd.DataFrame(rows, columns=["dataset", "model", "optimizer", "method", "n_seeds",
                                       "n_complete", "n_diverged", "mean", "std", "published",
                                       "published_optimizer"])


def _cell(row) -> str:
    """'8.71 ± 0.12 (8.63)', plus ' [k/n diverged]' / ' [k/n unfinished]' when seeds are left out."""
    n, ok, diverged = row["n_seeds"], row["n_complete"], row["n_diverged"]
    if ok >= 2:
        reproduced = f"{row['mean']:.2f} ± {row['std']:.2f}"
    elif ok == 1:
        reproduced = f"{row['mean']:.2f}"
    else:
        reproduced = "diverged" if diverged else "unfinished"
    published = "—" if math.isnan(row["published"]) else f"{row['published']:.2f}"
    if row["published_optimizer"]:
        published += f", {OPTIMIZER_NAMES.get(row['published_optimizer'], row['published_optimizer'])}"
    notes = ""
    if diverged:
        notes += f" [{diverged}/{n} diverged]"
    if n - ok - diverged:
        notes += f" [{n - ok - diverged}/{n} unfinished]"
    return f"{reproduced} ({published}){notes}"


def error_table(accuracy: pd.DataFrame, reference=None) -> pd.DataFrame:
    """The paper's benchmark-table layout: methods down, settings across, text cells.

    Each cell is 'reproduced (published)', see :data:`TABLE_LEGEND`; a method not run
    in a setting reads '— (published)', or '—' without a published number. ``reference`` is a frame or a CSV path.
    """
    summary = error_summary(accuracy, reference)
    settings = _settings(summary)
    methods = _methods(summary["method"])
    reference = load_reference(reference) if reference is not None else None
    table = pd.DataFrame(index=pd.Index([method_label(m) for m in methods], name="method"),
                         columns=[setting_label(*s) for s in settings], dtype=object)
    for setting in settings:
        column = setting_label(*setting)
        for method in methods:
            match = summary[(summary[["dataset", "model", "optimizer"]]
                             .apply(tuple, axis=1) == setting) & (summary["method"] == method)]
            if len(match):
                text = _cell(match.iloc[0])
            else:
                published = math.nan
                if reference is not None:
                    hit = reference[(reference["dataset"] == setting[0])
                                    & (reference["model"] == setting[1])
                                    & (reference["optimizer"] == setting[2])
                                    & (reference["method"] == method)]
                    published = float(hit["top1_error"].iloc[0]) if len(hit) else math.nan
                text = "—" if math.isnan(published) else f"— ({published:.2f})"
            table.loc[method_label(method), column] = text
    return table


def _markdown(table: pd.DataFrame) -> str:
    frame = table.reset_index()
    try:
        return frame.to_markdown(index=False)
    except ImportError:  # tabulate missing: the same table by hand
        header = "| " + " | ".join(map(str, frame.columns)) + " |"
        rule = "|" + "|".join("---" for _ in frame.columns) + "|"
        body = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
        return "\n".join([header, rule, *body])


def _latex(table: pd.DataFrame) -> str:
    frame = table.reset_index()
    try:
        text = frame.to_latex(index=False, escape=True, column_format="l" + "c" * (frame.shape[1] - 1),
                              caption=TABLE_LEGEND.replace("%", r"\%").replace("&", r"\&"),
                              label="tab:top1-error")
    except ImportError:  # jinja2 missing: a plain tabular by hand
        def escape(value):
            return str(value).replace("\\", r"\textbackslash{}").replace("&", r"\&") \
                .replace("%", r"\%").replace("_", r"\_").replace("#", r"\#")
        lines = [r"\begin{table}", r"\centering", rf"\caption{{{escape(TABLE_LEGEND)}}}",
                 r"\label{tab:top1-error}",
                 rf"\begin{{tabular}}{{l{'c' * (frame.shape[1] - 1)}}}", r"\toprule",
                 " & ".join(escape(c) for c in frame.columns) + r" \\", r"\midrule"]
        lines += [" & ".join(escape(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        text = "\n".join(lines) + "\n"
    return text.replace("±", r"$\pm$").replace("—", "---")


def write_table(table: pd.DataFrame, prefix: str | Path) -> list[Path]:
    """prefix.md (with the legend), prefix.tex (booktabs) and prefix.csv of one table."""
    prefix = Path(prefix)
    paths = [prefix.with_name(prefix.name + ext) for ext in (".md", ".tex", ".csv")]
    io.write_text(paths[0], _markdown(table) + "\n\n" + TABLE_LEGEND + "\n")
    io.write_text(paths[1], _latex(table))
    io.write_csv(paths[2], table.reset_index())
    return paths


# ----------------------------------------------------------------------------- command line

def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{what} {path} does not exist")
    return path


def cmd_collect(args) -> int:
    frames = collect_runs(args.runs)
    for path in write_collected(frames, args.out_dir):
        print(path)
    return 0


def cmd_attacks(args) -> int:
    frame = collect_attacks(args.csv, optimizer=args.optimizer)
    io.write_csv(args.out, frame)
    print(f"{args.out}: {len(frame)} rows from {len(args.csv)} files")
    return 0


def cmd_table(args) -> int:
    accuracy = _read_csv(_existing(args.accuracy, "accuracy CSV"), ACCURACY_COLUMNS)
    table = error_table(accuracy, args.reference)
    for path in write_table(table, args.prefix):
        print(path)
    return 0


def cmd_figure(args) -> int:
    from .figures import FIGURES  # matplotlib only for the command that draws

    if args.name not in FIGURES:
        raise UsageError(f"unknown figure {args.name!r}; valid: {', '.join(FIGURES)}")
    frame = _read_csv(_existing(args.input, "input CSV"))
    if args.name in ("robustness", "onepixel", "transfer"):
        for column in ATTACK_COLUMNS:
            if column not in frame.columns:
                frame[column] = pd.Series(dtype=object)
    kwargs = {"reference": args.reference} if args.name in ("robustness", "onepixel") else {}
    if args.reference and not kwargs:
        raise UsageError(f"--reference applies to the robustness and onepixel figures, "
                         f"not {args.name}")
    if args.reference:
        _existing(args.reference, "reference CSV")
    print(FIGURES[args.name](frame, args.out, **kwargs))
    return 0


def add_commands(subparsers) -> None:
    """Add ``biofa report collect|attacks|table|figure`` to the ``biofa`` parser."""
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

    p = sub.add_parser("figure", help="one PNG figure")
    p.add_argument("name", choices=FIGURE_NAMES, metavar="NAME",
                   help=f"one of {', '.join(FIGURE_NAMES)}")
    p.add_argument("--input", required=True, metavar="CSV",
                   help="training.csv / alignment.csv from collect, or attacks CSV")
    p.add_argument("--out", required=True, metavar="FILE.png")
    p.add_argument("--reference", metavar="CSV",
                   help="robustness/onepixel: config/reference/paper_robustness.csv, drawn as stars")
    p.set_defaults(run=cmd_figure)


__all__ = ["collect_runs", "write_collected", "collect_attacks", "load_reference",
           "error_summary", "error_table", "write_table", "add_commands", "PALETTE",
           "METHOD_ORDER", "TABLE_LEGEND"]
