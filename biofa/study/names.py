"""The study's vocabulary: keys, names, orders and colours that every step shares.

Plain data and a few pure helpers, importing no matplotlib and no training or attack
code, so that the training, attack, table and figure steps (and the workflow) name things
one way.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where it is used: every biofa command reads this
    import pandas as pd  # module, and most of them (train, attack) never need pandas

from ..methods import METHODS, PAPER_METHODS

# ----------------------------------------------------------------------------- attacks

WHITE_BOX = ("fgsm", "pgd", "tpgd", "apgd")
#: AutoAttack (Croce & Hein 2020), torchattacks' standard L-inf ensemble (APGD-CE, APGD-T,
#: FAB-T, Square): a white-box attack under both gradients like :data:`WHITE_BOX`, with a
#: section of its own in a study's attacks (its images, steps and queries set its cost).
AUTOATTACK = "autoattack"
#: The attacks that follow one of :data:`GRADIENTS` (the ``gradient`` column).
GRADIENT_ATTACKS = WHITE_BOX + (AUTOATTACK,)
BLACK_BOX = ("square", "onepixel")
ATTACKS = GRADIENT_ATTACKS + BLACK_BOX + ("transfer",)
GRADIENTS = ("feedback", "true")

#: The paper's black-box settings: Square with 50 queries, OnePixel with DE steps 30, popsize 150.
PAPER_SQUARE_QUERIES = 50
ONEPIXEL_STEPS, ONEPIXEL_POPSIZE = 30, 150
#: torchattacks' standard AutoAttack: 10 iterations of APGD-CE, APGD-T and FAB-T (the
#: original code runs 100), Square with 5000 queries.
AUTOATTACK_STEPS, AUTOATTACK_QUERIES = 10, 5000
#: The query budget of each attack that has one, unless a command or config sets it.
DEFAULT_QUERIES = {"square": PAPER_SQUARE_QUERIES, AUTOATTACK: AUTOATTACK_QUERIES}

#: A row's run is keyed by method, model, dataset, optimizer, init and seed: SGD and Adam
#: models (or Xavier and Kaiming ones) of one architecture are different settings, never
#: seeds of one.
ATTACK_COLUMNS = ["method", "model", "dataset", "optimizer", "init", "seed", "attack", "gradient",
                  "eps", "pixels",
           "queries", "steps", "n_images", "clean_acc", "robust_acc", "ci_low", "ci_high", "source"]

# ----------------------------------------------------------------------------- runs and tables

KEYS = ["dataset", "model", "optimizer", "init", "method", "seed"]
TEXT_COLUMNS = ["dataset", "model", "optimizer", "init", "method", "attack", "gradient", "source",
                "status"]

#: The forward/backward initialization of the paper's tables (BioTorch's benchmark configs):
#: the published numbers are compared with runs of this init.
PAPER_INIT = "xavier"
#: The ``init`` of a run config whose ``layer.init`` is null: torch's own layer init, the
#: distribution that ``"default"`` draws from.
UNSET_INIT = "default"
ACCURACY_COLUMNS = KEYS + ["status", "epochs_done", "best_epoch", "top1_error", "n_images",
                           "in_paper", "run_dir"]

#: Rows of every table and legend: the paper's methods in its order, then every other
#: registered rule (kp, wm, drtp, dkp, then rules from entry points) in registry order.
#: Reading the names imports no plugin module.
METHOD_ORDER = tuple(PAPER_METHODS) + tuple(m for m in METHODS if m not in PAPER_METHODS)

#: The colour of a method that has none of its own (a rule from outside biofa).
FALLBACK_COLOUR = "#7f7f7f"
#: One colour per method, the same in every figure; every registered rule has one.
PALETTE = {"bp": "#222222", "fa": "#1f77b4", "dfa": "#ff7f0e", "usf": "#2ca02c",
           "brsf": "#d62728", "frsf": "#9467bd", "kp": "#8c564b", "wm": "#e377c2",
           "drtp": "#bcbd22", "dkp": "#17becf"}
PALETTE.update({m: FALLBACK_COLOUR for m in METHOD_ORDER if m not in PALETTE})

DATASET_NAMES = {"digits": "Digits", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST",
                 "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}
MODEL_NAMES = {"lenet_mnist": "LeNet", "lenet_mnist_tanh": "LeNet (tanh)", "lenet_cifar": "LeNet", "resnet18": "ResNet-18",
               "resnet20": "ResNet-20", "resnet32": "ResNet-32", "resnet44": "ResNet-44",
               "resnet56": "ResNet-56", "resnet110": "ResNet-110"}
OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam"}
INIT_NAMES = {"xavier": "Xavier", "default": "PyTorch default", "kaiming": "Kaiming"}

#: One colour per init, the same in every figure that sets inits side by side.
INIT_PALETTE = {"xavier": "#1b9e77", "default": "#7570b3", "kaiming": "#d95f02"}

FIGURE_NAMES = ("training", "initialization", "alignment", "alignment_layers",
                "alignment_per_layer", "robustness", "onepixel", "transfer")
ROBUSTNESS_ATTACKS = tuple(GRADIENT_ATTACKS) + ("square",)
GRADIENT_STYLES = {"feedback": "-", "true": "--", "none": "-", "transfer": "-"}
GRADIENT_LABELS = {"feedback": "feedback gradient (the rule's own)",
                   "true": "true gradient (exact backprop)",
                   "none": "Square: outputs only"}

#: How a cell's reproduced number is made, and what its bracketed counts say (every table).
SEEDS_LEGEND = "mean ± sample std over the seeds that completed (one number when one seed did)"
COUNTS_LEGEND = ("[k/n diverged] and [k/n unfinished] count seeds left out of the mean because "
                 "training diverged or is still running")
TABLE_LEGEND = (f"Top-1 test error (%): {SEEDS_LEGEND}; published value of Sanfiz & Akrout 2021 in "
                f"parentheses, — where the paper has none; {COUNTS_LEGEND}; "
                "† marks a published number selected on the test set (the paper's validation "
                "split there is its test set), where biofa selects on a held-out validation "
                "split, so a † number is optimistic next to the reproduced one. "
                f"Reproduced numbers are of runs from {INIT_NAMES[PAPER_INIT]} initialization, "
                "the paper's, wherever a setting has them; a header naming another init marks a "
                "setting trained only from that one.")
INIT_TABLE_LEGEND = ("Top-1 test error (%) by forward/backward initialization, for each setting "
                     f"trained from more than one init: {SEEDS_LEGEND}; — where a method was not "
                     f"run from that init; {COUNTS_LEGEND}. {INIT_NAMES[PAPER_INIT]} is the "
                     "init of the paper's tables; PyTorch default is torch's own layer init, "
                     "Kaiming He's normal (fan_in); W and B are drawn from the same scheme.")


def run_keys(config: dict) -> dict:
    """The :data:`KEYS` of the run a (validated) run config trains, as tables name them:
    the optimizer's name (not the study's key for it) and the init scheme."""
    return {"dataset": config["dataset"], "model": config["model"],
            "optimizer": config["optimizer"]["name"],
            "init": config.get("layer", {}).get("init") or UNSET_INIT,
            "method": config["method"], "seed": config["seed"]}


def method_label(method: str) -> str:
    """How a method appears in tables and legends: kp says it is not in the paper."""
    return method if method in PAPER_METHODS else f"{method} (not in paper)"


def setting_label(dataset: str, model: str, optimizer: str | None = None,
                  init: str | None = None) -> str:
    """Readable column/panel header such as 'CIFAR-10 ResNet-20 SGD' or, with an init,
    'CIFAR-10 ResNet-20 SGD, Kaiming'."""
    parts = [DATASET_NAMES.get(dataset, dataset), MODEL_NAMES.get(model, model)]
    if not _missing(optimizer):
        parts.append(OPTIMIZER_NAMES.get(optimizer, str(optimizer)))
    label = " ".join(parts)
    return label if _missing(init) else f"{label}, {INIT_NAMES.get(init, str(init))}"


def _missing(value) -> bool:
    """None or NaN: a key a setting (or an older table) does not have."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def order(values, preferred) -> list:
    """``values`` in ``preferred`` order, unknown ones after it, sorted."""
    values = list(dict.fromkeys(values))
    known = [v for v in preferred if v in values]
    return known + sorted((v for v in values if v not in preferred), key=str)


def ordered_methods(values) -> list[str]:
    return order(values, METHOD_ORDER)


def settings_of(frame: pd.DataFrame, with_optimizer: bool = True,
                by_init: bool = False) -> list[tuple]:
    """The (dataset, model[, optimizer]) combinations of ``frame``, in a stable reading order.

    ``by_init``: every setting as (dataset, model, optimizer, init), so that a setting
    ``frame`` trains from several inits becomes one per init (in :data:`INIT_NAMES` order)
    and is never averaged across them; init is None in a setting of one init (or of a table
    without the column), optimizer None without ``with_optimizer``. :func:`rows_of` reads
    either kind back, :func:`setting_label` names it.
    """
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

    settings = sorted(combos, key=rank)
    if not by_init:
        return settings
    split = []
    for setting in settings:
        base = setting if with_optimizer else setting + (None,)
        inits = setting_inits(frame, setting)
        split += [base + (init,) for init in inits] if len(inits) > 1 else [base + (None,)]
    return split


def rows_of(frame: pd.DataFrame, setting: tuple) -> pd.DataFrame:
    """The rows of ``frame`` in ``setting`` (dataset, model[, optimizer[, init]]), as
    :func:`settings_of` gives it: a None key matches every row, a NaN one the empty cells."""
    import pandas as pd

    mask = pd.Series(True, index=frame.index)
    for column, value in zip(["dataset", "model", "optimizer", "init"], setting):
        if value is not None:
            mask &= frame[column].isna() if _missing(value) else frame[column] == value
    return frame[mask]


def setting_inits(frame: pd.DataFrame, setting: tuple) -> list[str]:
    """The inits ``frame``'s runs of ``setting`` are trained from, in :data:`INIT_NAMES`
    order; none for a table without the column (one made before the initialization axis)."""
    if "init" not in frame.columns:
        return []
    return order(rows_of(frame, setting)["init"].dropna(), INIT_NAMES)


def multi_init_settings(runs) -> list[tuple]:
    """The (dataset, model, optimizer) settings that ``runs`` (a frame such as accuracy.csv,
    or dicts of the run keys, as the workflow has them) train from more than one init: the
    initialization study's, in :func:`settings_of` order."""
    import pandas as pd

    frame = runs if isinstance(runs, pd.DataFrame) else pd.DataFrame(list(runs))
    if frame.empty or "init" not in frame.columns:
        return []
    return [setting for setting in settings_of(frame) if len(setting_inits(frame, setting)) > 1]


# ----------------------------------------------------------------------------- the workflow's files
#
# Names the Snakemake workflow builds its paths from, kept here so that a renamed table,
# folder or figure input changes the commands and the workflow together.

#: A run's folder below the results' ``runs/``, one level per key of :data:`KEYS`.
RUN_FOLDER = "{dataset}/{model}/{optimizer}/{init}/{method}/seed{seed}"

#: The tables ``biofa report collect`` writes from the run folders (``NAME.csv``).
RUN_TABLES = ("accuracy", "training", "alignment")
#: The table ``biofa report attacks`` writes from the attack CSVs.
ATTACK_TABLE = "robustness"

#: The table each figure is drawn from (``tables/NAME.csv``).
FIGURE_TABLES = {"training": "training", "initialization": "accuracy", "alignment": "alignment",
                 "alignment_layers": "alignment", "alignment_per_layer": "alignment",
                 "robustness": ATTACK_TABLE,
                 "onepixel": ATTACK_TABLE, "transfer": ATTACK_TABLE}
# NO_WEIGHT_SHAPED_FEEDBACK: the methods whose feedback matrix is not shaped like W
# (the direct rules, ``Rule.direct``: DFA's B goes from the output to each layer), so
# they have no angle(W, B) or norm ratio. Read from the rule classes when first asked
# for (``__getattr__`` below), so that importing this module imports no plugin.


def no_weight_shaped_feedback() -> tuple[str, ...]:
    return tuple(m for m in METHOD_ORDER if METHODS[m].direct)


def __getattr__(name: str):
    if name == "NO_WEIGHT_SHAPED_FEEDBACK":
        return no_weight_shaped_feedback()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
#: Figures drawn from angle(W, B) alone: nothing to draw when every method is in
#: :data:`NO_WEIGHT_SHAPED_FEEDBACK`.
WEIGHT_ALIGNMENT_FIGURES = ("alignment_layers", "alignment_per_layer")
#: The attacks each attack figure draws (it has data when the study runs any of them).
FIGURE_ATTACKS = {"robustness": ROBUSTNESS_ATTACKS, "onepixel": ("onepixel",),
                  "transfer": ("transfer",)}


#: Figures that set the inits of a setting side by side: made only for a study that trains
#: some setting from more than one (:func:`multi_init_settings`).
INIT_FIGURES = ("initialization",)


def study_figures(methods, attacks, runs=None) -> list[str]:
    """The figures, of :data:`FIGURE_NAMES`, that a study training ``methods`` and running
    ``attacks`` (their names, on at least one target) has data for.

    ``runs`` (dicts of the run keys, or a frame of them) tells whether the study trains some
    setting from more than one init, as :data:`INIT_FIGURES` need; without it they are left
    out. The workflow makes only these, so its report never shows an empty figure, and a
    figure asked to draw a table without rows can refuse rather than draw a placeholder.
    """
    methods, attacks = set(methods), set(attacks)
    weight_shaped = bool(methods - set(no_weight_shaped_feedback()))
    several_inits = runs is not None and bool(multi_init_settings(runs))
    return [name for name in FIGURE_NAMES
            if (name not in WEIGHT_ALIGNMENT_FIGURES or weight_shaped)
            and (name not in FIGURE_ATTACKS or attacks & set(FIGURE_ATTACKS[name]))
            and (name not in INIT_FIGURES or several_inits)]


#: Figures that draw the published numbers too (``biofa report figure --reference``).
REFERENCE_FIGURES = ("robustness", "onepixel")
#: The file formats of every figure: a PNG to look at and a vector PDF for papers.
FIGURE_FORMATS = ("png", "pdf")

#: The ``gradient`` column of an attack's rows: white-box attacks follow one of
#: :data:`GRADIENTS`, black-box attacks no gradient, transfer attacks the gradient of
#: another run.
BLACK_BOX_GRADIENT, TRANSFER_GRADIENT = "none", "transfer"
THREAT_MODELS = GRADIENTS + (BLACK_BOX_GRADIENT, TRANSFER_GRADIENT)
#: The one ``gradient`` value of each attack that takes none of :data:`GRADIENTS`.
FIXED_THREAT_MODEL = {**dict.fromkeys(BLACK_BOX, BLACK_BOX_GRADIENT), "transfer": TRANSFER_GRADIENT}
#: The method of the run transfer attacks craft their examples on.
TRANSFER_SOURCE = "bp"
