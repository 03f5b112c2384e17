"""The study's figures (PNG, and PDF for papers): training curves, alignment, robustness.

Apart from the tables so that only the commands that draw pay for matplotlib.

Each figure comes as a pair: ``draw_NAME(frame, ...)`` returns the matplotlib Figure, and
``fig_NAME(frame, out, ...)`` draws it and writes the PNG and PDF. The Figure is what a caller
(or a test) can inspect or restyle: its panels, lines, colours and labels. Figures are
made without pyplot (``matplotlib.figure.Figure`` draws to files on its own), so
importing this module selects no backend and leaves a notebook's or GUI's alone. A frame
without the rows or the columns a figure reads raises ``UsageError`` saying what is missing:
the workflow asks only for the figures its study has data for
(:func:`biofa.study.names.study_figures`), so an empty input is a wrong one, and a figure
that says "no data" would be an empty page in the report.

A setting (dataset, model, optimizer) trained from several forward/backward inits is drawn
as one setting per init ("CIFAR-10 ResNet-20 SGD, Kaiming"), never averaged across them; a
table without the ``init`` column (one made before the initialization axis) draws as before.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from . import io
from ..errors import UsageError
from ..methods import PAPER_METHODS
from .collect import read_csv
from .names import (
    AUTOATTACK, FIGURE_FORMATS, GRADIENT_LABELS, GRADIENT_STYLES, INIT_NAMES, INIT_PALETTE, KEYS,
    PALETTE, PAPER_INIT, ROBUSTNESS_ATTACKS, method_label, multi_init_settings, order,
    ordered_methods, rows_of, setting_inits, setting_label, settings_of)


# ----------------------------------------------------------------------------- figures

def _themed(draw):
    """Draw under seaborn's whitegrid theme without changing matplotlib's global settings."""
    import functools

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context({**sns.axes_style("whitegrid"), **sns.plotting_context("notebook")}):
            return draw(*args, **kwargs)
    return wrapper


def figure_paths(out: str | Path) -> dict[str, Path]:
    """Where :func:`save_figure` writes each of :data:`FIGURE_FORMATS` for ``out``.

    ``out`` itself gets the PNG (the PDF when it ends in ``.pdf``); the other format goes
    beside it under the same name with its own suffix, so ``x.png`` also gives ``x.pdf``.
    """
    out = Path(out)
    paths = {fmt: out.with_suffix(f".{fmt}") for fmt in FIGURE_FORMATS}
    paths["pdf" if out.suffix == ".pdf" else "png"] = out
    return paths


def save_figure(fig, out: str | Path) -> Path:
    """Write ``fig`` as a 150-dpi PNG and, from the same Figure, as a vector PDF for papers
    (see :func:`figure_paths`); returns ``out``.

    Each file is written atomically (temp file in the same folder, then rename). The PDF
    carries no creation date, so redrawing the same data gives the same bytes.
    """
    for fmt, path in figure_paths(out).items():
        with io.atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight",
                        metadata={"CreationDate": None} if fmt == "pdf" else None)
    return Path(out)


def _nonempty(frame: pd.DataFrame, figure: str, what: str) -> None:
    """Refuse a frame without rows: there is nothing to draw, and a study without ``what``
    does not make this figure (see :func:`biofa.study.names.study_figures`)."""
    if frame.empty:
        raise UsageError(f"the {figure} figure has nothing to draw: its input holds no {what}")


def _require(frame: pd.DataFrame, columns, figure: str) -> None:
    """Refuse rows without the columns ``figure`` reads, naming the missing ones."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise UsageError(f"the {figure} figure needs the column(s) {', '.join(missing)}, "
                         f"missing from its input (columns: {', '.join(map(str, frame.columns))})")


#: The columns each figure reads (``optimizer`` is optional for the attack figures).
RUN_COLUMNS = ["dataset", "model", "optimizer", "method", "epoch"]
ATTACK_BASE = ["dataset", "model", "method", "attack", "robust_acc", "ci_low", "ci_high"]
REQUIRED = {"training": RUN_COLUMNS + ["val_acc1"],
            "initialization": ["dataset", "model", "optimizer", "init", "method", "seed",
                               "status", "top1_error"],
            "alignment": RUN_COLUMNS + ["seed"],
            "alignment_layers": RUN_COLUMNS + ["seed", "layer", "weight_angle"],
            "alignment_per_layer": RUN_COLUMNS + ["seed", "layer", "weight_angle", "norm_ratio"],
            "robustness": ATTACK_BASE + ["gradient", "eps", "queries"],
            "onepixel": ATTACK_BASE + ["pixels"],
            "transfer": ATTACK_BASE + ["eps"]}


def _grid(n_rows: int, n_cols: int, width: float = 4.6, height: float = 3.4, **kwargs):
    fig = Figure(figsize=(width * n_cols, height * n_rows))
    return fig, fig.subplots(n_rows, n_cols, squeeze=False, **kwargs)


#: Panels per row of a figure with a panel per setting: the paper's study has 17 settings.
MAX_COLUMNS = 4


def _wrapped(n_panels: int, **kwargs):
    """A figure of ``n_panels`` panels in rows of at most :data:`MAX_COLUMNS`, the unused
    places of the last row left blank: (figure, the panels' axes in reading order)."""
    columns = min(n_panels, MAX_COLUMNS)
    rows = -(-n_panels // columns)
    fig, axes = _grid(rows, columns, **kwargs)
    flat = list(axes.flat)
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return fig, flat[:n_panels]


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


def _settings(frame: pd.DataFrame, with_optimizer: bool = True) -> list[tuple]:
    """The panels' settings: one per init where ``frame`` trains a setting from several."""
    return settings_of(frame, with_optimizer, by_init=True)


_setting_of = rows_of  # a setting's rows, as _settings gives it


def _run_keys(frame: pd.DataFrame) -> list[str]:
    """The :data:`KEYS` ``frame`` has: an older table has no init column."""
    return [key for key in KEYS if key in frame.columns]


def _has_optimizer(frame: pd.DataFrame) -> bool:
    return "optimizer" in frame.columns and frame["optimizer"].notna().any()


@_themed
def draw_training(training: pd.DataFrame) -> Figure:
    """Validation top-1 error per epoch: mean over seeds, band ± 1 sd; a panel per setting.

    Shows how fast and how far each rule learns, and where a run diverged (its line stops).
    """
    title = "Validation top-1 error during training"
    _nonempty(training, "training", "training metrics")
    _require(training, REQUIRED["training"], "training")
    frame = _labelled(training)
    frame["val_error"] = 100 * (1 - frame["val_acc1"].astype(float))
    settings, methods = _settings(frame), ordered_methods(frame["method"])
    fig, axes = _wrapped(len(settings))
    for ax, setting in zip(axes, settings):
        sns.lineplot(data=_setting_of(frame, setting), x="epoch", y="val_error",
                     errorbar="sd", ax=ax, legend=False, **_hue(methods))
        ax.set(title=setting_label(*setting), xlabel="epoch", ylabel="validation top-1 error (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _method_legend(fig, methods)
    fig.suptitle(f"{title} (mean over seeds, band ± 1 sd)")
    fig.tight_layout()
    return fig


def _init_colour(init) -> str:
    return INIT_PALETTE.get(init, "#7f7f7f")


@_themed
def draw_initialization(accuracy: pd.DataFrame) -> Figure:
    """Top-1 test error by forward/backward init: a panel per (dataset, model, optimizer)
    setting trained from more than one init, methods along x, a bar per init (its colour of
    :data:`~biofa.study.names.INIT_PALETTE`) at the mean over the completed seeds, ± 1 sd,
    each completed seed a dot.

    The numbers of :func:`biofa.study.tables.init_table` (the same summary), drawn: whether
    a rule's error depends on how W and B start. Diverged and unfinished seeds are left out,
    as in the table; a method none of whose seeds completed from an init gets no bar.
    """
    from .tables import error_summary  # the tables' numbers, so bars and cells agree

    title = "Top-1 test error by initialization"
    _nonempty(accuracy, "initialization", "runs")
    _require(accuracy, REQUIRED["initialization"], "initialization")
    settings = multi_init_settings(accuracy)
    if not settings:
        raise UsageError("the initialization figure has nothing to draw: its input holds no "
                         "setting (dataset, model, optimizer) trained from more than one init")
    summary = error_summary(accuracy)
    complete = accuracy[accuracy["status"] == "complete"]
    n_bars = max(len(setting_inits(accuracy, s)) * rows_of(accuracy, s)["method"].nunique()
                 for s in settings)
    n_cols = min(2, len(settings))
    n_rows = -(-len(settings) // n_cols)
    fig, axes = _grid(n_rows, n_cols, width=max(4.6, 0.32 * n_bars + 1.5), height=3.8)
    for ax in axes.flat[len(settings):]:
        ax.remove()
    drawn_inits = []
    for ax, setting in zip(axes.flat, settings):
        inits = setting_inits(accuracy, setting)
        methods = ordered_methods(rows_of(accuracy, setting)["method"])
        width = 0.8 / len(inits)
        for i, init in enumerate(inits):
            rows = rows_of(summary, setting + (init,)).set_index("method")
            rows = rows.reindex([m for m in methods if m in rows.index])
            x = np.array([methods.index(m) for m in rows.index]) - 0.4 + width * (i + 0.5)
            ax.bar(x, rows["mean"].to_numpy(float), width=width * 0.92,
                   color=_init_colour(init), label=INIT_NAMES.get(init, init))
            ax.errorbar(x, rows["mean"].to_numpy(float),
                        yerr=rows["std"].fillna(0).to_numpy(float), fmt="none",
                        ecolor="#222222", elinewidth=1, capsize=2.5)
            seeds = rows_of(complete, setting + (init,))
            dots = [(xi, e) for xi, m in zip(x, rows.index)
                    for e in seeds.loc[seeds["method"] == m, "top1_error"].astype(float) * 100]
            if dots:
                ax.scatter(*zip(*dots), s=12, color="white", edgecolor="#222222",
                           linewidth=0.8, zorder=3)
            drawn_inits.append(init)
        ax.set_xticks(range(len(methods)), [method_label(m) for m in methods])
        ax.tick_params(axis="x", rotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
        ax.set(title=setting_label(*setting), xlabel="", ylabel="top-1 test error (%)",
               xlim=(-0.6, len(methods) - 0.4))
        ax.set_ylim(bottom=0)
    handles = [Rectangle((0, 0), 1, 1, color=_init_colour(init), label=INIT_NAMES.get(init, init))
               for init in order(drawn_inits, INIT_NAMES)]
    handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="white",
                          markeredgecolor="#222222", label="one seed"))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(f"{title} (bar: mean over completed seeds ± 1 sd; dots: seeds)")
    fig.tight_layout()
    return fig


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
def draw_alignment(alignment: pd.DataFrame) -> Figure:
    """Weight angle, norm ratio and gradient angle per epoch (rows), a column per setting.

    Each line averages the layers of a run, then the seeds (band ± 1 sd over seeds): how
    far each rule's feedback is from backpropagation as training goes. NaN values (DFA's
    B is not W-shaped; gradient angle when not measured) are dropped.
    """
    title = "Alignment with backpropagation during training"
    _nonempty(alignment, "alignment", "alignment measurements")
    _require(alignment, REQUIRED["alignment"], "alignment")
    if not set(ALIGNMENT_METRICS) & set(alignment.columns):
        raise UsageError(f"the alignment figure needs at least one of the columns "
                         f"{', '.join(ALIGNMENT_METRICS)}, missing from its input "
                         f"(columns: {', '.join(map(str, alignment.columns))})")
    metrics_ = [m for m in ALIGNMENT_METRICS if m in alignment.columns]
    per_run = (alignment.groupby(_run_keys(alignment) + ["epoch"], sort=False, dropna=False)[metrics_]
               .mean().reset_index())  # mean over layers, NaN skipped
    frame = _labelled(per_run)
    settings, methods = _settings(frame), ordered_methods(frame["method"])
    # settings in blocks of MAX_COLUMNS columns, a row per metric in each block
    columns = min(len(settings), MAX_COLUMNS)
    blocks = -(-len(settings) // columns)
    fig, axes = _grid(blocks * len(metrics_), columns, height=3.0)
    for index in range(len(settings), blocks * columns):
        for row in range(len(metrics_)):
            axes[(blocks - 1) * len(metrics_) + row][index % columns].set_visible(False)
    for row, metric in enumerate(metrics_):
        for index, setting in enumerate(settings):
            col = index % columns
            ax = axes[(index // columns) * len(metrics_) + row][col]
            data = _setting_of(frame, setting).dropna(subset=[metric])
            if data.empty:
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            else:
                sns.lineplot(data=data, x="epoch", y=metric, errorbar="sd", ax=ax, legend=False,
                             **_hue(ordered_methods(data["method"])))
            _zero_based(ax, metric, data[metric] if not data.empty else None)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set(xlabel="epoch" if row == len(metrics_) - 1 else "",
                   ylabel=ALIGNMENT_METRICS[metric] if col == 0 else "")
            if row == 0:
                ax.set_title(setting_label(*setting))
    _method_legend(fig, methods)
    fig.suptitle(f"{title} (mean over layers and seeds, band ± 1 sd over seeds)")
    fig.tight_layout()
    return fig


@_themed
def draw_alignment_layers(alignment: pd.DataFrame) -> Figure:
    """Angle between W and B per layer at the last epoch, bars by method (± 1 sd over seeds).

    The paper's alignment figure: which layers' feedback ends up pointing along W.
    """
    title = "Weight alignment per layer at the last epoch"
    _nonempty(alignment, "alignment_layers", "alignment measurements")
    _require(alignment, REQUIRED["alignment_layers"], "alignment_layers")
    last = alignment[alignment["epoch"] == alignment.groupby(_run_keys(alignment), dropna=False)[
        "epoch"].transform("max")]
    frame = _labelled(last.dropna(subset=["weight_angle"]))
    _nonempty(frame, "alignment_layers", "weight angles (DFA's B is not W-shaped)")
    settings, methods = _settings(frame), ordered_methods(frame["method"])
    n_layers = max(_setting_of(frame, s)["layer"].nunique() for s in settings)
    fig, axes = _grid(len(settings), 1, width=min(24.0, max(6.0, 0.22 * n_layers * len(methods))),
                      height=3.6)
    for ax, setting in zip(axes[:, 0], settings):
        data = _setting_of(frame, setting)
        present = ordered_methods(data["method"])
        sns.barplot(data=data, x="layer", y="weight_angle", hue="Method",
                    hue_order=[method_label(m) for m in present],
                    palette={method_label(m): PALETTE.get(m, "#7f7f7f") for m in present},
                    order=list(dict.fromkeys(data["layer"])), errorbar="sd", ax=ax, legend=False,
                    saturation=1)  # the legend's colours; seaborn desaturates bars by default
        ax.set(title=setting_label(*setting), xlabel="layer (input to output)",
               ylabel="angle(W, B) (degrees)")
        _zero_based(ax, "weight_angle", data["weight_angle"])
        ax.tick_params(axis="x", rotation=60)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    handles = [Rectangle((0, 0), 1, 1, color=PALETTE.get(m, "#7f7f7f"), label=method_label(m))
               for m in methods]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(f"{title} (mean over seeds, bar ± 1 sd; DFA has no W-shaped B)")
    fig.tight_layout()
    return fig


#: The colormap of layer depth, green at the input to dark violet at the classifier:
#: viridis without its palest yellows, which barely show on white.
DEPTH_CMAP = ListedColormap(matplotlib.colormaps["viridis_r"](np.linspace(0.2, 1.0, 256)),
                            name="layer_depth")
DEPTH_LABEL = "layer depth (input → output)"
PER_LAYER_METRICS = ("weight_angle", "norm_ratio")


def depth_colours(layers) -> dict:
    """A colour per layer along :data:`DEPTH_CMAP`, ``layers`` listed input to output."""
    n = len(layers)
    return {layer: DEPTH_CMAP(i / (n - 1) if n > 1 else 1.0) for i, layer in enumerate(layers)}


@_themed
def draw_alignment_per_layer(alignment: pd.DataFrame) -> Figure:
    """angle(W, B) (upper row) and ‖B‖/‖W‖ (lower row) per epoch, a line per layer coloured
    by depth, a column per method; two rows of panels per setting, mean over seeds.

    The paper's alignment figure: feedback alignment does not align every layer alike (with
    FA the classifier's W turns towards B much further than the convolutions'), which an
    average over layers hides. Methods whose B is not W-shaped (DFA) are left out, and the
    title says so. Layers are in the order they first appear in a run (input to output).
    """
    title = "Alignment of W with B per layer during training"
    _nonempty(alignment, "alignment_per_layer", "alignment measurements")
    _require(alignment, REQUIRED["alignment_per_layer"], "alignment_per_layer")
    measured = alignment.dropna(subset=["weight_angle"])
    left_out = [m for m in ordered_methods(alignment["method"]) if m not in set(measured["method"])]
    _nonempty(measured, "alignment_per_layer", "weight angles (DFA's B is not W-shaped)")
    settings = _settings(measured)
    columns = max(measured.pipe(_setting_of, s)["method"].nunique() for s in settings)
    fig = Figure(figsize=(3.8 * columns + 1.2, 2.9 * 2 * len(settings)), layout="constrained")
    axes = fig.subplots(2 * len(settings), columns, squeeze=False)
    for block, setting in enumerate(settings):
        data = _setting_of(measured, setting)
        layers = list(dict.fromkeys(data["layer"]))
        colours = depth_colours(layers)
        methods = ordered_methods(data["method"])
        for row, metric in enumerate(PER_LAYER_METRICS):
            for col in range(columns):
                ax = axes[2 * block + row][col]
                if col >= len(methods):
                    ax.set_visible(False)
                    continue
                method = methods[col]
                rows = data[data["method"] == method]
                drawn = []
                for layer in layers:
                    curve = (rows[rows["layer"] == layer].groupby("epoch")[metric].mean()
                             .dropna().sort_index())  # mean over seeds
                    if len(curve):
                        ax.plot(curve.index, curve.to_numpy(), color=colours[layer], lw=1.4,
                                label=layer)
                        drawn.extend(curve.tolist())
                _zero_based(ax, metric, drawn)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set(xlabel="epoch" if row == 1 else "",
                       ylabel=ALIGNMENT_METRICS[metric] if col == 0 else "")
                if row == 0:
                    ax.set_title(f"{setting_label(*setting)}: {method_label(method)}")
        scale = ScalarMappable(norm=Normalize(0, max(len(layers) - 1, 1)),
                               cmap=DEPTH_CMAP)
        bar = fig.colorbar(scale, ax=list(axes[2 * block:2 * block + 2].flat), shrink=0.9,
                           ticks=[0, max(len(layers) - 1, 1)])
        bar.set_label(DEPTH_LABEL)
        bar.ax.set_yticklabels([layers[0], layers[-1]] if len(layers) > 1 else layers * 2)
        bar.ax.invert_yaxis()  # the input at the top, as a network is usually drawn
    note = f"; {', '.join(left_out)}: no W-shaped B, not shown" if left_out else ""
    fig.suptitle(f"{title} (mean over seeds{note})")
    return fig


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
    return reference if isinstance(reference, pd.DataFrame) else read_csv(Path(reference))


def _published_points(ax, reference, setting, attack: str, x: str) -> bool:
    """Stars at the BioTorch notebook's numbers (CIFAR-10 ResNet-20, SGD); True if drawn.

    One star per published point and none elsewhere: the notebooks' clean accuracy is their
    strength-0 point where they attacked at 0 (Square), and OnePixel has no 0-pixel point,
    so a star always marks a strength the paper measured (and config/paper.yaml attacks).
    """
    dataset, model, optimizer, init = (tuple(setting) + (None, None))[:4]
    if reference is None or (dataset, model) != ("cifar10", "resnet20") \
            or optimizer not in (None, "sgd") \
            or init not in (None, PAPER_INIT):  # the notebooks attacked Xavier SGD models
        return False
    rows = reference[reference["attack"] == attack]
    for method, group in rows.groupby("method"):
        group = group.sort_values(x)
        xs = group[x].astype(float).tolist()
        ys = (group["robust_acc"] * 100).tolist()
        ax.scatter(xs, ys, marker="*", s=90, color=PALETTE.get(method, "#7f7f7f"),
                   edgecolor="black", linewidth=0.6, zorder=5)
    return len(rows) > 0


PUBLISHED_HANDLE = Line2D([], [], marker="*", ls="", color="#bbbbbb", markeredgecolor="black",
                          markersize=11, label="published (BioTorch notebook, 500 images)")


def _attack_settings(frame: pd.DataFrame) -> list[tuple]:
    return _settings(frame, with_optimizer=_has_optimizer(frame))


def _attack_rows(attacks: pd.DataFrame, names, figure: str, x: str) -> pd.DataFrame:
    """The rows of ``names``' attacks, once the columns ``figure`` reads are there.

    The plotted columns (``x`` and robust_acc) must hold numbers: ``biofa report figure``
    adds absent attack columns as empty ones, and a renamed column would otherwise draw
    empty panels.
    """
    if attacks.empty:
        return attacks
    _require(attacks, REQUIRED[figure], figure)
    frame = attacks[attacks["attack"].isin(names)]
    empty = [column for column in (x, "robust_acc")
             if not frame.empty and frame[column].isna().all()]
    if empty:
        raise UsageError(f"the {figure} figure: the column(s) {', '.join(empty)} hold no values "
                         f"in the {', '.join(order(frame['attack'], names))} rows")
    return frame


def _attack_title(attack: str, rows: pd.DataFrame) -> str:
    """A robustness panel's attack, with the budget that sets its strength beyond eps."""
    queries = rows["queries"].dropna()
    steps = rows["steps"].dropna() if "steps" in rows.columns else ()
    if attack == "square":
        return f"Square ({int(queries.iloc[0])} queries)" if len(queries) else "Square"
    if attack == AUTOATTACK:
        budget = ([f"{int(steps.iloc[0])} steps"] if len(steps) else []) + (
            [f"{int(queries.iloc[0])} queries"] if len(queries) else [])
        # its budget on a line of its own: one line is wider than the panel
        return "AutoAttack" + (f"\n({', '.join(budget)})" if budget else "")
    return attack.upper()


@_themed
def draw_robustness(attacks: pd.DataFrame, reference=None) -> Figure:
    """Robust accuracy vs eps for the white-box attacks, AutoAttack and Square: a column per
    attack.

    Feedback-gradient attacks are solid, true-gradient attacks dashed, in the same panel:
    a rule robust only under the solid line is masking its gradient. Lines are the mean
    over seeds; the band is the mean of the seeds' 95% Wilson intervals. ``reference``
    (paper_robustness.csv) adds the published Square curve (30 ε, 50 queries) as stars.
    """
    title = "Robust accuracy under white-box attacks and Square"
    frame = _attack_rows(attacks, ROBUSTNESS_ATTACKS, "robustness", "eps")
    _nonempty(frame, "robustness", "white-box, AutoAttack or Square results")
    reference = _load_robustness_reference(reference)
    names = order(frame["attack"], ROBUSTNESS_ATTACKS)
    settings, methods = _attack_settings(frame), ordered_methods(frame["method"])
    fig, axes = _grid(len(settings), len(names), sharey=True)
    gradients, published = set(), False
    for row, setting in enumerate(settings):
        for col, attack in enumerate(names):
            ax = axes[row][col]
            data = _setting_of(frame, setting)
            data = data[data["attack"] == attack]
            for method in ordered_methods(data["method"]):
                for gradient, group in data[data["method"] == method].groupby("gradient"):
                    gradients.add(gradient)
                    _curve(ax, group, "eps", method, GRADIENT_STYLES.get(gradient, ":"))
            if attack == "square":
                published |= _published_points(ax, reference, setting, "square", "eps")
            if data.empty:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            ax.set(title=f"{setting_label(*setting)}: {_attack_title(attack, data)}", xlabel="ε (L∞, images in [0, 1])",
                   ylabel="robust accuracy (%)" if col == 0 else "", ylim=(0, 100))
    solid = " / ".join(GRADIENT_LABELS[g] for g in ("feedback", "none") if g in gradients)
    extra = [Line2D([], [], color="#555555", ls=ls, label=label)
             for ls, label in (("-", solid), ("--", GRADIENT_LABELS["true"] if "true" in gradients
                                                    else "")) if label]
    if published:  # stars may show methods this study did not attack
        methods = ordered_methods(list(methods) + list(reference["method"]))
    _method_legend(fig, methods, extra + ([PUBLISHED_HANDLE] if published else []), dash_kp=False)
    fig.suptitle(f"{title} (mean over seeds, band: 95% Wilson interval)")
    fig.tight_layout()
    return fig


@_themed
def _strength_figure(attacks, attack: str, x: str, xlabel: str, title: str,
                     reference=None) -> Figure:
    frame = _attack_rows(attacks, (attack,), attack, x)
    _nonempty(frame, attack, f"{attack} results")
    reference = _load_robustness_reference(reference)
    settings, methods = _attack_settings(frame), ordered_methods(frame["method"])
    fig, axes = _grid(1, len(settings), sharey=True)
    published = False
    for ax, setting in zip(axes[0], settings):
        data = _setting_of(frame, setting)
        for method in ordered_methods(data["method"]):
            _curve(ax, data[data["method"] == method], x, method,
                   "-" if method in PAPER_METHODS else "--")
        published |= _published_points(ax, reference, setting, attack, x)
        ax.set(title=setting_label(*setting), xlabel=xlabel, ylabel="robust accuracy (%)",
               ylim=(0, 100))
    if published:  # stars may show methods this study did not attack
        methods = ordered_methods(list(methods) + list(reference["method"]))
    _method_legend(fig, methods, [PUBLISHED_HANDLE] if published else [])
    fig.suptitle(f"{title} (mean over seeds, band: 95% Wilson interval)")
    fig.tight_layout()
    return fig


def draw_onepixel(attacks: pd.DataFrame, reference=None) -> Figure:
    """Robust accuracy vs number of changed pixels (OnePixel, black box), a line per method.

    ``reference`` (paper_robustness.csv) adds the published numbers at 1 to 5 pixels as stars.
    """
    return _strength_figure(attacks, "onepixel", "pixels", "pixels changed",
                            "Robust accuracy under the OnePixel attack", reference)


def draw_transfer(attacks: pd.DataFrame) -> Figure:
    """Robust accuracy vs eps when PGD examples crafted on a backpropagation model are fed
    to each rule's model: robustness that needs no gradient of the target at all."""
    return _strength_figure(attacks, "transfer", "eps", "ε (L∞, images in [0, 1])",
                            "Robust accuracy under transfer attacks from a bp model")


#: ``draw_*`` by figure name: each returns the Figure without writing it.
DRAW = {"training": draw_training, "initialization": draw_initialization,
        "alignment": draw_alignment,
        "alignment_layers": draw_alignment_layers,
        "alignment_per_layer": draw_alignment_per_layer, "robustness": draw_robustness,
        "onepixel": draw_onepixel, "transfer": draw_transfer}


def _writer(name: str, draw):
    """``fig_NAME(frame, out, **options)``: ``draw`` written to ``out`` (PNG and PDF).

    It draws and saves under the same theme, so the files look like the Figure.
    """
    @_themed
    def write(frame: pd.DataFrame, out: str | Path, **options) -> Path:
        return save_figure(draw(frame, **options), out)

    write.__name__ = write.__qualname__ = f"fig_{name}"
    write.__doc__ = f":func:`{draw.__name__}` written to ``out`` (PNG and PDF); returns the path."
    return write


#: ``fig_*`` by figure name, what ``biofa report figure NAME`` runs.
FIGURES = {name: _writer(name, draw) for name, draw in DRAW.items()}
fig_training, fig_alignment = FIGURES["training"], FIGURES["alignment"]
fig_initialization = FIGURES["initialization"]
fig_alignment_layers, fig_alignment_per_layer = (FIGURES["alignment_layers"],
                                                 FIGURES["alignment_per_layer"])
fig_robustness, fig_onepixel, fig_transfer = (FIGURES["robustness"], FIGURES["onepixel"],
                                              FIGURES["transfer"])
