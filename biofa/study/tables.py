"""The paper's benchmark-table layout of the collected test errors (.md, .tex, .csv).

Methods down, settings across; each cell is 'reproduced (published)', the published
number from ``config/reference/paper_results.csv`` (see :data:`TABLE_LEGEND`). A published
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
from .names import OPTIMIZER_NAMES, TABLE_LEGEND, method_label, ordered_methods, settings_of, setting_label

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
    """Numbers behind :func:`error_table`: one row per setting and method, errors in %.

    Only seeds whose status is ``complete`` enter the mean and std (ddof 1), because a
    diverged run's best checkpoint is not the rule's result; the others are counted.
    """
    reference = load_reference(reference) if reference is not None else None
    rows = []
    for (dataset, model, optimizer, method), group in accuracy.groupby(
            ["dataset", "model", "optimizer", "method"], sort=False):
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
        rows.append({"dataset": dataset, "model": model, "optimizer": optimizer, "method": method,
                     "n_seeds": len(group), "n_complete": len(ok),
                     "n_diverged": int((group["status"] == "diverged").sum()),
                     "mean": ok.mean() if len(ok) else math.nan,
                     "std": ok.std(ddof=1) if len(ok) > 1 else math.nan,
                     "published": published, "published_optimizer": published_optimizer,
                     "published_selection": selection})
    return pd.DataFrame(rows, columns=["dataset", "model", "optimizer", "method", "n_seeds",
                                       "n_complete", "n_diverged", "mean", "std", "published",
                                       "published_optimizer", "published_selection"])


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


def _cell(row) -> str:
    """'8.71 ± 0.12 (8.63)', plus ' [k/n diverged]' / ' [k/n unfinished]' when seeds are left out."""
    n, ok, diverged = row["n_seeds"], row["n_complete"], row["n_diverged"]
    if ok >= 2:
        reproduced = f"{row['mean']:.2f} ± {row['std']:.2f}"
    elif ok == 1:
        reproduced = f"{row['mean']:.2f}"
    else:
        reproduced = "diverged" if diverged else "unfinished"
    published = _published(row["published"], row["published_optimizer"], row["published_selection"])
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
    settings = settings_of(summary)
    methods = ordered_methods(summary["method"])
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
                published, selection = math.nan, ""
                if reference is not None:
                    hit = reference[(reference["dataset"] == setting[0])
                                    & (reference["model"] == setting[1])
                                    & (reference["optimizer"] == setting[2])
                                    & (reference["method"] == method)]
                    if len(hit):
                        published, selection = float(hit["top1_error"].iloc[0]), _selection(hit.iloc[0])
                text = "—" if math.isnan(published) else f"— ({_published(published, '', selection)})"
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
    return text.replace("±", r"$\pm$").replace("—", "---").replace(SELECTED_ON_TEST, r"$^\dagger$")


def write_table(table: pd.DataFrame, prefix: str | Path) -> list[Path]:
    """prefix.md (with the legend), prefix.tex (booktabs) and prefix.csv of one table."""
    prefix = Path(prefix)
    paths = [prefix.with_name(prefix.name + ext) for ext in (".md", ".tex", ".csv")]
    io.write_text(paths[0], _markdown(table) + "\n\n" + TABLE_LEGEND + "\n")
    io.write_text(paths[1], _latex(table))
    io.write_csv(paths[2], table.reset_index())
    return paths


