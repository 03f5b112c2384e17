"""The published numbers in config/reference/ and how the report shows them.

The robustness points must be the paper's whole black-box study on the grid that
config/paper.yaml attacks, so each published star lands on a reproduced point; the error
table must tell a published number selected on the test set from one selected on a
validation split, from the reference file's ``selection`` column.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from biofa.study import figures, names, tables
from biofa.study.names import ATTACK_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "config" / "reference" / "paper_results.csv"
ROBUSTNESS = ROOT / "config" / "reference" / "paper_robustness.csv"
PAPER = ROOT / "config" / "paper.yaml"
METHODS = {"bp", "fa", "dfa", "usf", "brsf", "frsf"}
NOISE = 0.01  # 5 of the 500 attacked images: the attacks are random, curves wobble by that much


@pytest.fixture(scope="module")
def robust():
    return pd.read_csv(ROBUSTNESS)


@pytest.fixture(scope="module")
def paper_attacks():
    return yaml.safe_load(PAPER.read_text())["attacks"]


# ----------------------------------------------------------------------------- robustness points

def test_robustness_file_holds_both_black_box_notebooks(robust):
    assert list(robust.columns) == ["method", "attack", "eps", "pixels", "queries", "clean_acc",
                                    "robust_acc", "source"]
    assert len(robust) == 6 * (30 + 5)
    assert not robust.duplicated(["method", "attack", "eps", "pixels"]).any()
    for attack, notebook in (("square", "Black-Box_Square-Attack_CIFAR10.ipynb"),
                             ("onepixel", "Black-Box_OnePixel-Attack_CIFAR10.ipynb")):
        sources = set(robust.loc[robust.attack == attack, "source"])
        assert sources == {f"jsalbert/biotorch@74fad0d:notebooks/adversarial_attacks/{notebook}"}
    assert robust[["clean_acc", "robust_acc"]].stack().between(0, 1).all()


def test_square_is_six_methods_on_the_notebook_grid(robust):
    square = robust[robust.attack == "square"]
    assert set(square.method) == METHODS and (square.queries == 50).all()
    assert square.pixels.isna().all()
    grid = np.linspace(0, 0.1, 30)
    for method, group in square.groupby("method"):
        np.testing.assert_allclose(group.eps.sort_values(), grid, atol=5e-7, rtol=0)
    zero = square[square.eps == 0]  # strength 0 is the clean accuracy
    assert len(zero) == 6 and (zero.robust_acc == zero.clean_acc).all()


def test_onepixel_is_six_methods_at_one_to_five_pixels(robust):
    onepixel = robust[robust.attack == "onepixel"]
    assert set(onepixel.method) == METHODS
    assert onepixel.eps.isna().all() and onepixel.queries.isna().all()
    for method, group in onepixel.groupby("method"):
        assert sorted(group.pixels.astype(int)) == [1, 2, 3, 4, 5]


def test_curves_fall_and_clean_accuracy_is_one_per_method(robust):
    for (method, attack), group in robust.groupby(["method", "attack"]):
        curve = group.sort_values("eps" if attack == "square" else "pixels").robust_acc.to_numpy()
        assert (np.diff(curve) <= NOISE).all(), (method, attack, curve)
        assert curve[-1] < group.clean_acc.iloc[0] - 0.2, (method, attack)  # the attack bites
    for method, group in robust.groupby("method"):  # the same 500 images, the same model
        assert group.clean_acc.nunique() == 1, method
        assert (group.robust_acc <= group.clean_acc).all()
    clean = robust.groupby("method").clean_acc.first()
    assert clean["bp"] == 0.920 and clean["dfa"] == 0.542


@pytest.mark.parametrize("method, attack, strength, value", [
    ("bp", "square", 0.031034, 0.464), ("frsf", "square", 0.1, 0.022),
    ("dfa", "square", 0.003448, 0.510), ("usf", "onepixel", 2, 0.440),
    ("brsf", "onepixel", 5, 0.380), ("fa", "onepixel", 1, 0.478)])
def test_points_as_the_notebooks_print_them(robust, method, attack, strength, value):
    column = "eps" if attack == "square" else "pixels"
    row = robust[(robust.method == method) & (robust.attack == attack)
                 & np.isclose(robust[column], strength)]
    assert row.robust_acc.item() == value


def test_paper_config_attacks_on_the_published_grids(robust, paper_attacks):
    square = robust[robust.attack == "square"]
    assert paper_attacks["square"]["eps"] == sorted(square.eps.unique().tolist())
    assert paper_attacks["square"]["queries"] == 50 == square.queries.iloc[0]
    onepixel = robust[robust.attack == "onepixel"]
    assert paper_attacks["onepixel"]["pixels"] == sorted(onepixel.pixels.astype(int).unique()) \
        == [1, 2, 3, 4, 5]
    assert paper_attacks["n_images"] == 500
    assert {"dataset": "cifar10", "model": "resnet20", "optimizer": "sgd", "init": "xavier"} \
        in paper_attacks["targets"]


def _attack_frame(attack, strengths, methods=("bp", "fa")):
    """What the attack jobs of config/paper.yaml write for ``attack``: a row per strength."""
    rows = []
    for method in methods:
        for strength in strengths:
            square = attack == "square"
            rows.append({"dataset": "cifar10", "model": "resnet20", "optimizer": "sgd",
                         "method": method, "seed": 2021, "attack": attack, "gradient": "none",
                         "eps": strength if square else np.nan,
                         "pixels": np.nan if square else strength,
                         "steps": np.nan, "queries": 50 if square else np.nan, "n_images": 500,
                         "clean_acc": 0.9, "robust_acc": 0.5, "ci_low": 0.45, "ci_high": 0.55,
                         "source": ""})
    return pd.DataFrame(rows, columns=ATTACK_COLUMNS)


def _stars(ax):
    return [c for c in ax.collections if type(c).__name__ == "PathCollection"]


def test_robustness_stars_sit_on_the_paper_configs_eps(robust, paper_attacks):
    eps = paper_attacks["square"]["eps"]
    fig = figures.draw_robustness(_attack_frame("square", eps), reference=ROBUSTNESS)
    (ax,) = fig.axes
    stars = _stars(ax)
    assert len(stars) == 6
    reproduced = ax.lines[0].get_xdata()
    np.testing.assert_array_equal(reproduced, eps)
    published = robust[robust.attack == "square"]
    for star in stars:
        xs, ys = star.get_offsets().T
        np.testing.assert_array_equal(xs, reproduced)  # each star on a reproduced eps
        assert any(np.allclose(ys, group.sort_values("eps").robust_acc * 100)
                   for _, group in published.groupby("method"))


def test_onepixel_stars_sit_on_the_paper_configs_pixels(paper_attacks):
    pixels = paper_attacks["onepixel"]["pixels"]
    fig = figures.draw_onepixel(_attack_frame("onepixel", pixels), reference=ROBUSTNESS)
    (ax,) = fig.axes
    stars = _stars(ax)
    assert len(stars) == 6
    for star in stars:
        np.testing.assert_array_equal(star.get_offsets()[:, 0], pixels)


# ----------------------------------------------------------------------------- published errors

def _accuracy(*settings):
    """One complete run per (dataset, model, optimizer, method, error)."""
    return pd.DataFrame([{"dataset": d, "model": m, "optimizer": o, "method": method, "seed": 0,
                          "status": "complete", "top1_error": e} for d, m, o, method, e in settings])


def test_results_say_where_each_number_was_selected():
    ref = pd.read_csv(RESULTS)
    assert set(ref.selection) == {"test", "validation"}
    by_dataset = ref.groupby("dataset").selection.unique().map(list).to_dict()
    assert by_dataset["mnist"] == by_dataset["fashion_mnist"] == ["test"]
    assert by_dataset["cifar10"] == ["validation"]


def test_table_marks_numbers_selected_on_test():
    accuracy = _accuracy(("mnist", "lenet_mnist", "sgd", "bp", 0.01),
                         ("cifar10", "resnet20", "sgd", "bp", 0.09),
                         ("cifar10", "resnet20", "sgd", "fa", 0.30))
    table = tables.error_table(accuracy, RESULTS)
    marker = tables.SELECTED_ON_TEST
    assert table.loc["bp", "MNIST LeNet SGD"] == f"1.00 (0.91{marker})"
    assert table.loc["bp", "CIFAR-10 ResNet-20 SGD"] == "9.00 (8.63)"
    assert table.loc["fa", "MNIST LeNet SGD"] == f"— (1.70{marker})"  # not run: published only
    assert table.loc["fa", "CIFAR-10 ResNet-20 SGD"] == "30.00 (32.16)"
    summary = tables.error_summary(accuracy, RESULTS)
    assert summary.groupby("dataset").published_selection.unique().map(list).to_dict() == {
        "mnist": ["test"], "cifar10": ["validation"]}


def test_the_marker_follows_the_selection_column():
    ref = pd.read_csv(RESULTS)
    flipped = ref.assign(selection=np.where(ref.dataset == "cifar10", "test", "validation"))
    accuracy = _accuracy(("mnist", "lenet_mnist", "sgd", "bp", 0.01),
                         ("cifar10", "resnet20", "sgd", "bp", 0.09))
    table = tables.error_table(accuracy, flipped)
    assert table.loc["bp", "MNIST LeNet SGD"] == "1.00 (0.91)"
    assert table.loc["bp", "CIFAR-10 ResNet-20 SGD"] == f"9.00 (8.63{tables.SELECTED_ON_TEST})"
    unmarked = tables.error_table(accuracy, ref.drop(columns="selection"))  # an older file
    assert tables.SELECTED_ON_TEST not in "".join(unmarked.stack())


def test_legend_explains_the_marker(tmp_path):
    legend = names.TABLE_LEGEND
    assert f"{tables.SELECTED_ON_TEST} marks a published number selected on the test set" in legend
    assert "held-out validation split" in legend
    accuracy = _accuracy(("mnist", "lenet_mnist", "sgd", "bp", 0.01))
    md, tex, _ = tables.write_table(tables.error_table(accuracy, RESULTS), tmp_path / "t")
    assert "1.00 (0.91†)" in md.read_text() and legend in md.read_text()
    assert r"1.00 (0.91$^\dagger$)" in tex.read_text() and "†" not in tex.read_text()
