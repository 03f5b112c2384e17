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

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import yaml  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from . import io  # noqa: E402
from .attack import COLUMNS as ATTACK_COLUMNS  # noqa: E402
from .attack import WHITE_BOX  # noqa: E402
from .methods import PAPER_METHODS  # noqa: E402

# ----------------------------------------------------------------------------- names

KEYS = ["dataset", "model", "optimizer", "method", "seed"]
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
    """A CSV as a frame; a zero-byte file is an empty frame rather than an error."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=columns or [])


def _run_folder(path: str | Path) -> Path:
    """A run folder, also when given a file inside it (workflows pass files, e.g. test.json)."""
    path = Path(path)
    return path.parent if path.is_file() else path


def _read_run(run: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """(accuracy row, metrics, alignment) of one run folder; clear errors for missing files."""
    if not (run / "config.yaml").exists():
        raise ValueError(f"{run} is not a run folder (no config.yaml); "
                         f"train it first: biofa train CONFIG.yaml --out {run}")
    if not (run / "test.json").exists():
        raise ValueError(f"run {run} has no test.json; evaluate it first: biofa evaluate {run}")
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
            raise ValueError(f"runs {seen[key]} and {run} are the same setting "
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

    Attack CSVs do not record the optimizer; pass one name for all files, or a mapping
    {csv path: optimizer}, to add an ``optimizer`` column (figures then split by it).
    """
    frames = []
    for path in csv_paths:
        path = Path(path)
        if not path.exists():
            raise ValueError(f"attack CSV {path} does not exist; make it with biofa attack RUN_DIR "
                             f"--attack NAME --out {path}")
        frame = _read_csv(path, ATTACK_COLUMNS)
        missing = [c for c in ATTACK_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{path} is not a biofa attack CSV: columns {missing} missing")
        if isinstance(optimizer, dict):
            frame["optimizer"] = optimizer.get(str(path), optimizer.get(path, math.nan))
        elif optimizer is not None:
            frame["optimizer"] = optimizer
        if not frame.empty:
            frames.append(frame)
    columns = ATTACK_COLUMNS + (["optimizer"] if optimizer is not None else [])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


# ----------------------------------------------------------------------------- the table

def load_reference(reference) -> pd.DataFrame:
    """The published errors: a frame as is, or read from a CSV path."""
    if isinstance(reference, pd.DataFrame):
        return reference
    path = Path(reference)
    if not path.exists():
        raise ValueError(f"reference file {path} does not exist "
                         "(the published numbers are in config/reference/paper_results.csv)")
    frame = pd.read_csv(path)
    missing = {"dataset", "model", "optimizer", "method", "top1_error"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: columns {sorted(missing)} missing")
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


# ----------------------------------------------------------------------------- figures

def _themed(draw):
    """Draw under seaborn's whitegrid theme without changing matplotlib's global settings."""
    import functools

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with plt.rc_context({**sns.axes_style("whitegrid"), **sns.plotting_context("notebook")}):
            return draw(*args, **kwargs)
    return wrapper


def save_figure(fig, out: str | Path) -> Path:
    """Write ``fig`` as a 150-dpi PNG atomically (temp file in the same folder, then rename)."""
    out = Path(out)
    with io.atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    return out


@_themed
def _placeholder(out, title: str, message: str) -> Path:
    """A figure that says what is missing, so the file exists for the workflow anyway."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=13, wrap=True,
            transform=ax.transAxes)
    ax.set_title(title)
    ax.set_xticks([]), ax.set_yticks([])
    return save_figure(fig, out)


def _grid(n_rows: int, n_cols: int, width: float = 4.6, height: float = 3.4, **kwargs):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width * n_cols, height * n_rows),
                             squeeze=False, **kwargs)
    return fig, axes


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a 'Method' column of legend labels (kp marked not in paper)."""
    frame = frame.copy()
    frame["Method"] = frame["method"].map(method_label)
    return frame


def _hue(methods) -> dict:
    """seaborn arguments: fixed colours, and kp dashed, keyed by legend label."""
    labels = [method_label(m) for m in methods]
    return {"hue": "Method", "hue_order": labels, "style": "Method", "style_order": labels,
            "palette": {method_label(m): PALETTE.get(m, "#7f7f7f") for m in methods},
            "dashes": {method_label(m): "" if m in PAPER_METHODS else (4, 2) for m in methods}}


def _method_legend(fig, methods, extra: list | None = None, dash_kp: bool = True) -> None:
    """One legend for the whole figure, right of the panels.

    ``dash_kp=False`` where line style means something else (the attack's gradient).
    """
    handles = [Line2D([], [], color=PALETTE.get(m, "#7f7f7f"), lw=2,
                      ls="-" if m in PAPER_METHODS or not dash_kp else "--", label=method_label(m))
               for m in methods]
    handles += extra or []
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def _setting_of(frame: pd.DataFrame, setting: tuple) -> pd.DataFrame:
    columns = ["dataset", "model", "optimizer"][:len(setting)]
    mask = np.ones(len(frame), dtype=bool)
    for column, value in zip(columns, setting):
        mask &= (frame[column] == value).to_numpy()
    return frame[mask]


def _has_optimizer(frame: pd.DataFrame) -> bool:
    return "optimizer" in frame.columns and frame["optimizer"].notna().any()


@_themed
def fig_training(training: pd.DataFrame, out: str | Path) -> Path:
    """Validation top-1 error per epoch: mean over seeds, band ± 1 sd; a panel per setting.

    Shows how fast and how far each rule learns, and where a run diverged (its line stops).
    """
    title = "Validation top-1 error during training"
    if training.empty or "val_acc1" not in training.columns:
        return _placeholder(out, title, "no training metrics in this study")
    frame = _labelled(training)
    frame["val_error"] = 100 * (1 - frame["val_acc1"].astype(float))
    settings, methods = _settings(frame), _methods(frame["method"])
    fig, axes = _grid(1, len(settings))
    for ax, setting in zip(axes[0], settings):
        sns.lineplot(data=_setting_of(frame, setting), x="epoch", y="val_error",
                     errorbar="sd", ax=ax, legend=False, **_hue(methods))
        ax.set(title=setting_label(*setting), xlabel="epoch", ylabel="validation top-1 error (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _method_legend(fig, methods)
    fig.suptitle(f"{title} (mean over seeds, band ± 1 sd)")
    fig.tight_layout()
    return save_figure(fig, out)


ALIGNMENT_METRICS = {"weight_angle": "angle(W, B) (degrees)", "norm_ratio": "‖B‖ / ‖W‖",
                     "gradient_angle": "angle(update, true gradient) (degrees)"}


def _zero_based(ax, metric: str, values) -> None:
    """Angles on 0..90+ degrees (90 = no alignment), ratios from 0, never an offset axis.

    Without this, bp's float-noise angles (1e-6 degrees) fill a whole panel.
    """
    top = float(np.nanmax(values)) if values is not None and len(values) else 0.0
    top = max(90.0, top * 1.05) if metric.endswith("angle") else max(1.1, top * 1.1)
    ax.set_ylim(-0.025 * top, top)  # a little below 0 so bp's line at 0 stays visible
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")


@_themed
def fig_alignment(alignment: pd.DataFrame, out: str | Path) -> Path:
    """Weight angle, norm ratio and gradient angle per epoch (rows), a column per setting.

    Each line averages the layers of a run, then the seeds (band ± 1 sd over seeds): how
    far each rule's feedback is from backpropagation as training goes. NaN values (DFA's
    B is not W-shaped; gradient angle when not measured) are dropped.
    """
    title = "Alignment with backpropagation during training"
    if alignment.empty or not set(ALIGNMENT_METRICS) & set(alignment.columns):
        return _placeholder(out, title, "no alignment measurements in this study")
    metrics_ = [m for m in ALIGNMENT_METRICS if m in alignment.columns]
    per_run = (alignment.groupby(KEYS + ["epoch"], sort=False)[metrics_]
               .mean().reset_index())  # mean over layers, NaN skipped
    frame = _labelled(per_run)
    settings, methods = _settings(frame), _methods(frame["method"])
    fig, axes = _grid(len(metrics_), len(settings), height=3.0, sharex="col")
    for row, metric in enumerate(metrics_):
        for col, setting in enumerate(settings):
            ax = axes[row][col]
            data = _setting_of(frame, setting).dropna(subset=[metric])
            if data.empty:
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            else:
                sns.lineplot(data=data, x="epoch", y=metric, errorbar="sd", ax=ax, legend=False,
                             **_hue(_methods(data["method"])))
            _zero_based(ax, metric, data[metric] if not data.empty else None)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set(xlabel="epoch" if row == len(metrics_) - 1 else "",
                   ylabel=ALIGNMENT_METRICS[metric] if col == 0 else "")
            if row == 0:
                ax.set_title(setting_label(*setting))
    _method_legend(fig, methods)
    fig.suptitle(f"{title} (mean over layers and seeds, band ± 1 sd over seeds)")
    fig.tight_layout()
    return save_figure(fig, out)


@_themed
def fig_alignment_layers(alignment: pd.DataFrame, out: str | Path) -> Path:
    """Angle between W and B per layer at the last epoch, bars by method (± 1 sd over seeds).

    The paper's alignment figure: which layers' feedback ends up pointing along W.
    """
    title = "Weight alignment per layer at the last epoch"
    if alignment.empty or "weight_angle" not in alignment.columns:
        return _placeholder(out, title, "no alignment measurements in this study")
    last = alignment[alignment["epoch"] == alignment.groupby(KEYS)["epoch"].transform("max")]
    frame = _labelled(last.dropna(subset=["weight_angle"]))
    if frame.empty:
        return _placeholder(out, title, "no weight angles measured (e.g. only DFA runs)")
    settings, methods = _settings(frame), _methods(frame["method"])
    n_layers = max(_setting_of(frame, s)["layer"].nunique() for s in settings)
    fig, axes = _grid(len(settings), 1, width=min(24.0, max(6.0, 0.22 * n_layers * len(methods))),
                      height=3.6)
    for ax, setting in zip(axes[:, 0], settings):
        data = _setting_of(frame, setting)
        present = _methods(data["method"])
        sns.barplot(data=data, x="layer", y="weight_angle", hue="Method",
                    hue_order=[method_label(m) for m in present],
                    palette={method_label(m): PALETTE.get(m, "#7f7f7f") for m in present},
                    order=list(dict.fromkeys(data["layer"])), errorbar="sd", ax=ax, legend=False)
        ax.set(title=setting_label(*setting), xlabel="layer (input to output)",
               ylabel="angle(W, B) (degrees)")
        _zero_based(ax, "weight_angle", data["weight_angle"])
        ax.tick_params(axis="x", rotation=60)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    handles = [plt.Rectangle((0, 0), 1, 1, color=PALETTE.get(m, "#7f7f7f"), label=method_label(m))
               for m in methods]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(f"{title} (mean over seeds, bar ± 1 sd; DFA has no W-shaped B)")
    fig.tight_layout()
    return save_figure(fig, out)


def _curve(ax, data: pd.DataFrame, x: str, method: str, ls: str = "-") -> None:
    """Mean robust accuracy (%) over seeds vs ``x``, band = mean of the seeds' 95% Wilson bounds."""
    curve = data.groupby(x)[["robust_acc", "ci_low", "ci_high"]].mean().sort_index() * 100
    if curve.empty:
        return
    color = PALETTE.get(method, "#7f7f7f")
    ax.plot(curve.index, curve["robust_acc"], color=color, ls=ls, marker="o", ms=3, lw=1.8)
    ax.fill_between(curve.index, curve["ci_low"], curve["ci_high"], color=color, alpha=0.12, lw=0)


def _load_robustness_reference(reference):
    if reference is None:
        return None
    return reference if isinstance(reference, pd.DataFrame) else _read_csv(Path(reference))


def _published_points(ax, reference, setting, attack: str, x: str) -> bool:
    """Stars at the BioTorch notebook's numbers (CIFAR-10 ResNet-20 only); True if drawn."""
    if reference is None or tuple(setting[:2]) != ("cifar10", "resnet20"):
        return False
    rows = reference[reference["attack"] == attack]
    for method, group in rows.groupby("method"):
        xs = [0.0] + group[x].astype(float).tolist()
        ys = [group["clean_acc"].iloc[0] * 100] + (group["robust_acc"] * 100).tolist()
        ax.scatter(xs, ys, marker="*", s=90, color=PALETTE.get(method, "#7f7f7f"),
                   edgecolor="black", linewidth=0.6, zorder=5)
    return len(rows) > 0


PUBLISHED_HANDLE = Line2D([], [], marker="*", ls="", color="#bbbbbb", markeredgecolor="black",
                          markersize=11, label="published (BioTorch notebook, 500 images)")


def _attack_settings(frame: pd.DataFrame) -> list[tuple]:
    return _settings(frame, with_optimizer=_has_optimizer(frame))


@_themed
def fig_robustness(attacks: pd.DataFrame, out: str | Path, reference=None) -> Path:
    """Robust accuracy vs eps for the white-box attacks and Square: a column per attack.

    Feedback-gradient attacks are solid, true-gradient attacks dashed, in the same panel:
    a rule robust only under the solid line is masking its gradient. Lines are the mean
    over seeds; the band is the mean of the seeds' 95% Wilson intervals. ``reference``
    (paper_robustness.csv) adds the published Square numbers as stars.
    """
    title = "Robust accuracy under white-box attacks and Square"
    frame = attacks[attacks["attack"].isin(ROBUSTNESS_ATTACKS)] if not attacks.empty else attacks
    if frame.empty:
        return _placeholder(out, title, "no white-box or square results in this study")
    reference = _load_robustness_reference(reference)
    names = _order(frame["attack"], ROBUSTNESS_ATTACKS)
    settings, methods = _attack_settings(frame), _methods(frame["method"])
    fig, axes = _grid(len(settings), len(names), sharey=True)
    gradients, published = set(), False
    for row, setting in enumerate(settings):
        for col, attack in enumerate(names):
            ax = axes[row][col]
            data = _setting_of(frame, setting)
            data = data[data["attack"] == attack]
            for method in _methods(data["method"]):
                for gradient, group in data[data["method"] == method].groupby("gradient"):
                    gradients.add(gradient)
                    _curve(ax, group, "eps", method, GRADIENT_STYLES.get(gradient, ":"))
            if attack == "square":
                published |= _published_points(ax, reference, setting, "square", "eps")
            if data.empty:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            queries = data["queries"].dropna()
            name = (f"Square ({int(queries.iloc[0])} queries)" if attack == "square" and len(queries)
                    else "Square" if attack == "square" else attack.upper())
            ax.set(title=f"{setting_label(*setting)}: {name}", xlabel="ε (L∞, images in [0, 1])",
                   ylabel="robust accuracy (%)" if col == 0 else "", ylim=(0, 100))
    solid = " / ".join(GRADIENT_LABELS[g] for g in ("feedback", "none") if g in gradients)
    extra = [Line2D([], [], color="#555555", ls=ls, label=label)
             for ls, label in (("-", solid), ("--", GRADIENT_LABELS["true"] if "true" in gradients
                                                    else "")) if label]
    if published:  # stars may show methods this study did not attack
        methods = _methods(list(methods) + list(reference["method"]))
    _method_legend(fig, methods, extra + ([PUBLISHED_HANDLE] if published else []), dash_kp=False)
    fig.suptitle(f"{title} (mean over seeds, band: 95% Wilson interval)")
    fig.tight_layout()
    return save_figure(fig, out)


@_themed
def _strength_figure(attacks, out, attack: str, x: str, xlabel: str, title: str,
                     reference=None) -> Path:
    frame = attacks[attacks["attack"] == attack] if not attacks.empty else attacks
    if frame.empty:
        return _placeholder(out, title, f"no {attack} results in this study")
    reference = _load_robustness_reference(reference)
    settings, methods = _attack_settings(frame), _methods(frame["method"])
    fig, axes = _grid(1, len(settings), sharey=True)
    published = False
    for ax, setting in zip(axes[0], settings):
        data = _setting_of(frame, setting)
        for method in _methods(data["method"]):
            _curve(ax, data[data["method"] == method], x, method,
                   "-" if method in PAPER_METHODS else "--")
        published |= _published_points(ax, reference, setting, attack, x)
        ax.set(title=setting_label(*setting), xlabel=xlabel, ylabel="robust accuracy (%)",
               ylim=(0, 100))
    if published:  # stars may show methods this study did not attack
        methods = _methods(list(methods) + list(reference["method"]))
    _method_legend(fig, methods, [PUBLISHED_HANDLE] if published else [])
    fig.suptitle(f"{title} (mean over seeds, band: 95% Wilson interval)")
    fig.tight_layout()
    return save_figure(fig, out)


def fig_onepixel(attacks: pd.DataFrame, out: str | Path, reference=None) -> Path:
    """Robust accuracy vs number of changed pixels (OnePixel, black box), a line per method.

    ``reference`` (paper_robustness.csv) adds the published 1- and 5-pixel numbers as stars.
    """
    return _strength_figure(attacks, out, "onepixel", "pixels", "pixels changed",
                            "Robust accuracy under the OnePixel attack", reference)


def fig_transfer(attacks: pd.DataFrame, out: str | Path) -> Path:
    """Robust accuracy vs eps when PGD examples crafted on a backpropagation model are fed
    to each rule's model: robustness that needs no gradient of the target at all."""
    return _strength_figure(attacks, out, "transfer", "eps", "ε (L∞, images in [0, 1])",
                            "Robust accuracy under transfer attacks from a bp model")


FIGURES = {"training": fig_training, "alignment": fig_alignment,
           "alignment_layers": fig_alignment_layers, "robustness": fig_robustness,
           "onepixel": fig_onepixel, "transfer": fig_transfer}


# ----------------------------------------------------------------------------- command line

def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{what} {path} does not exist")
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
    if args.name not in FIGURES:
        raise ValueError(f"unknown figure {args.name!r}; valid: {', '.join(FIGURES)}")
    frame = _read_csv(_existing(args.input, "input CSV"))
    if args.name in ("robustness", "onepixel", "transfer"):
        for column in ATTACK_COLUMNS:
            if column not in frame.columns:
                frame[column] = pd.Series(dtype=object)
    kwargs = {"reference": args.reference} if args.name in ("robustness", "onepixel") else {}
    if args.reference and not kwargs:
        raise ValueError(f"--reference applies to the robustness and onepixel figures, "
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
    p.add_argument("--optimizer", help="add an optimizer column with this value (sgd, adam)")
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
           "error_summary", "error_table", "write_table", "save_figure", "fig_training",
           "fig_alignment", "fig_alignment_layers", "fig_robustness", "fig_onepixel",
           "fig_transfer", "add_commands", "PALETTE", "METHOD_ORDER", "TABLE_LEGEND"]
