"""The paper's benchmark-table layout of the collected test errors (.md, .tex, .csv).

Methods down, settings across; each cell is 'reproduced (published)', the published
number from ``config/reference/paper_results.csv`` (see :data:`TABLE_LEGEND`). The published
numbers are of Xavier-initialized models (:data:`~biofa.study.names.PAPER_INIT`), so a
setting trained from several inits shows its PAPER_INIT runs there; :func:`init_table` sets
the inits side by side (see :data:`~biofa.study.names.INIT_TABLE_LEGEND`). A published
number whose checkpoint the paper selected on the test set (its ``selection`` column reads
``test``) carries :data:`SELECTED_ON_TEST`: biofa selects on a held-out validation split, so
such a number is optimistic next to the reproduced one.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..errors import UsageError
from . import io
from .names import (
    INIT_TABLE_LEGEND, OPTIMIZER_NAMES, PAPER_INIT, TABLE_LEGEND, method_label,
    multi_init_settings, ordered_methods, rows_of, setting_inits, setting_label, settings_of)

#: Marks a published number selected on the test set (``selection: test`` in the reference).
SELECTED_ON_TEST = "†"


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
    """Numbers behind :func:`error_table`: one row per setting, init and method, errors in %.

    Only seeds whose status is ``complete`` enter the mean and std (ddof 1), because a
    diverged run's best checkpoint is not the rule's result; the others are counted. An
    accuracy table without an ``init`` column (one made before the initialization axis)
    gets one of empty cells.
    """
    reference = load_reference(reference) if reference is not None else None
    if "init" not in accuracy.columns:
        accuracy = accuracy.assign(init=math.nan)
    rows = []
    for (dataset, model, optimizer, init, method), group in accuracy.groupby(
            ["dataset", "model", "optimizer", "init", "method"], sort=False, dropna=False):
        ok = group[group["status"] == "complete"]["top1_error"].astype(float) * 100
        published, published_optimizer, selection = math.nan, "", ""
        if reference is not None:
            same = reference[(reference["dataset"] == dataset) & (reference["model"] == model)
                             & (reference["method"] == method)]
            exact = same[same["optimizer"] == optimizer]
            if len(exact):
                hit = exact.iloc[0]
            elif len(same) == 1:  # e.g. ImageNet DFA: the paper reports its Adam run only
                hit = same.iloc[0]
                published_optimizer = hit["optimizer"]
            else:
                hit = None
            if hit is not None:
                published, selection = float(hit["top1_error"]), _selection(hit)
        rows.append({"dataset": dataset, "model": model, "optimizer": optimizer, "init": init,
                     "method": method, "n_seeds": len(group), "n_complete": len(ok),
                     "n_diverged": int((group["status"] == "diverged").sum()),
                     "mean": ok.mean() if len(ok) else math.nan,
                     "std": ok.std(ddof=1) if len(ok) > 1 else math.nan,
                     "published": published, "published_optimizer": published_optimizer,
                     "published_selection": selection})
    return pd.DataFrame(rows, columns=["dataset", "model", "optimizer", "init", "method",
                                       "n_seeds", "n_complete", "n_diverged", "mean", "std",
                                       "published", "published_optimizer",
                                       "published_selection"])


def _selection(row) -> str:
    """The split the paper selected this number's checkpoint on; '' when the file does not say."""
    value = row.get("selection", "")
    return "" if not isinstance(value, str) else value.strip().lower()


def _published(value: float, optimizer: str = "", selection: str = "") -> str:
    """'0.94†', '82.45, Adam' or '—': the published part of a cell."""
    if math.isnan(value):
        return "—"
    text = f"{value:.2f}" + (SELECTED_ON_TEST if selection == "test" else "")
    if optimizer:
        text += f", {OPTIMIZER_NAMES.get(optimizer, optimizer)}"
    return text


def _cell(row, published: bool = True) -> str:
    """'8.71 ± 0.12 (8.63)', plus ' [k/n diverged]' / ' [k/n unfinished]' when seeds are left
    out; without ``published``, the reproduced part and the counts only."""
    n, ok, diverged = row["n_seeds"], row["n_complete"], row["n_diverged"]
    if ok >= 2:
        reproduced = f"{row['mean']:.2f} ± {row['std']:.2f}"
    elif ok == 1:
        reproduced = f"{row['mean']:.2f}"
    else:
        reproduced = "diverged" if diverged else "unfinished"
    if published:
        reproduced += " (" + _published(row["published"], row["published_optimizer"],
                                         row["published_selection"]) + ")"
    notes = ""
    if diverged:
        notes += f" [{diverged}/{n} diverged]"
    if n - ok - diverged:
        notes += f" [{n - ok - diverged}/{n} unfinished]"
    return reproduced + notes


def _error_columns(summary: pd.DataFrame) -> list[tuple[tuple, str]]:
    """((dataset, model, optimizer, init), header) of each column of :func:`error_table`.

    A setting with :data:`PAPER_INIT` runs shows those, under the setting's name: the
    published numbers are of that init, and other inits' seeds are never averaged in. A
    setting trained only from other inits gets a column per init whose header names it.
    """
    columns = []
    for setting in settings_of(summary):
        inits = setting_inits(summary, setting)
        if not inits:  # an accuracy table without inits: the setting as it is
            columns.append((setting + (math.nan,), setting_label(*setting)))
        elif PAPER_INIT in inits:
            columns.append((setting + (PAPER_INIT,), setting_label(*setting)))
        else:
            columns += [(setting + (init,), setting_label(*setting, init)) for init in inits]
    return columns


def _cells(summary: pd.DataFrame, columns, missing, published: bool = True) -> pd.DataFrame:
    """Methods down, ``columns`` ((setting, header) pairs) across: each cell :func:`_cell`
    of the summary row of that setting (with init) and method, ``missing(setting, method)``
    where there is none."""
    methods = ordered_methods(summary["method"])
    table = pd.DataFrame(index=pd.Index([method_label(m) for m in methods], name="method"),
                         columns=[header for _, header in columns], dtype=object)
    for setting, header in columns:
        rows = rows_of(summary, setting)
        for method in methods:
            match = rows[rows["method"] == method]
            table.loc[method_label(method), header] = (
                _cell(match.iloc[0], published) if len(match) else missing(setting, method))
    return table


def error_table(accuracy: pd.DataFrame, reference=None) -> pd.DataFrame:
    """The paper's benchmark-table layout: methods down, settings across, text cells.

    Each cell is 'reproduced (published)', see :data:`TABLE_LEGEND`; a method not run
    in a setting reads '— (published)', or '—' without a published number. ``reference`` is a
    frame or a CSV path. Runs of several inits are never averaged: see :func:`_error_columns`.
    """
    summary = error_summary(accuracy, reference)
    reference = load_reference(reference) if reference is not None else None

    def missing(setting, method):
        published, selection = math.nan, ""
        if reference is not None:
            hit = reference[(reference["dataset"] == setting[0])
                            & (reference["model"] == setting[1])
                            & (reference["optimizer"] == setting[2])
                            & (reference["method"] == method)]
            if len(hit):
                published, selection = float(hit["top1_error"].iloc[0]), _selection(hit.iloc[0])
        return "—" if math.isnan(published) else f"— ({_published(published, '', selection)})"

    return _cells(summary, _error_columns(summary), missing)


def init_table(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Top-1 error by init and method: for each (dataset, model, optimizer) setting trained
    from more than one init, a column per init (in :data:`~biofa.study.names.INIT_NAMES`
    order, headed e.g. 'CIFAR-10 LeNet SGD, Kaiming'), methods down.

    Cells are :func:`error_table`'s reproduced part, mean ± std over the completed seeds with
    the diverged and unfinished counts, without a published number (the paper trained one
    init); '—' where a method was not run from an init. See
    :data:`~biofa.study.names.INIT_TABLE_LEGEND`. Refuses an accuracy table in which no
    setting has two inits: there is nothing to compare.
    """
    settings = multi_init_settings(accuracy)
    if not settings:
        found = "no init column" if "init" not in accuracy.columns else (
            f"inits {', '.join(map(str, accuracy['init'].dropna().unique())) or 'none'}")
        raise UsageError("the initialization table needs a setting (dataset, model, optimizer) "
                         "trained from more than one init, and the accuracy table has none "
                         f"({len(accuracy)} runs, {found}); train one with a list of inits "
                         "in an experiment's layer.init")
    summary = error_summary(accuracy)
    columns = [(setting + (init,), setting_label(*setting, init))
               for setting in settings for init in setting_inits(summary, setting)]
    return _cells(summary, columns, lambda setting, method: "—", published=False)


def _markdown(table: pd.DataFrame) -> str:
    frame = table.reset_index()
    try:
        return frame.to_markdown(index=False)
    except ImportError:  # tabulate missing: the same table by hand
        header = "| " + " | ".join(map(str, frame.columns)) + " |"
        rule = "|" + "|".join("---" for _ in frame.columns) + "|"
        body = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
        return "\n".join([header, rule, *body])


def _latex(table: pd.DataFrame, legend: str = TABLE_LEGEND, label: str = "tab:top1-error") -> str:
    frame = table.reset_index()
    try:
        text = frame.to_latex(index=False, escape=True, column_format="l" + "c" * (frame.shape[1] - 1),
                              caption=legend.replace("%", r"\%").replace("&", r"\&"),
                              label=label)
    except ImportError:  # jinja2 missing: a plain tabular by hand
        def escape(value):
            return str(value).replace("\\", r"\textbackslash{}").replace("&", r"\&") \
                .replace("%", r"\%").replace("_", r"\_").replace("#", r"\#")
        lines = [r"\begin{table}", r"\centering", rf"\caption{{{escape(legend)}}}",
                 rf"\label{{{label}}}",
                 rf"\begin{{tabular}}{{l{'c' * (frame.shape[1] - 1)}}}", r"\toprule",
                 " & ".join(escape(c) for c in frame.columns) + r" \\", r"\midrule"]
        lines += [" & ".join(escape(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        text = "\n".join(lines) + "\n"
    return text.replace("±", r"$\pm$").replace("—", "---").replace(SELECTED_ON_TEST, r"$^\dagger$")


#: The legend and LaTeX label of each table :func:`write_table` writes, by its name.
TABLE_STYLES = {"error": (TABLE_LEGEND, "tab:top1-error"),
                "init": (INIT_TABLE_LEGEND, "tab:top1-error-init")}


def write_table(table: pd.DataFrame, prefix: str | Path, kind: str = "error") -> list[Path]:
    """prefix.md (with the legend), prefix.tex (booktabs) and prefix.csv of one table.

    ``kind``, one of :data:`TABLE_STYLES`, picks the legend and label: ``"error"`` for
    :func:`error_table`, ``"init"`` for :func:`init_table`.
    """
    legend, label = TABLE_STYLES[kind]
    prefix = Path(prefix)
    paths = [prefix.with_name(prefix.name + ext) for ext in (".md", ".tex", ".csv")]
    io.write_text(paths[0], _markdown(table) + "\n\n" + legend + "\n")
    io.write_text(paths[1], _latex(table, legend, label))
    io.write_csv(paths[2], table.reset_index())
    return paths
