"""``biofa report``: collecting runs and attack CSVs, the error table, every figure, the CLI hook.

Everything is synthetic (run folders and attack CSVs written here), so no training runs.
"""

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib import pyplot as plt
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from biofa.errors import RunError
from biofa.study import cli, collect, figures, names, tables
from biofa.study.names import ATTACK_COLUMNS as COLUMNS
from biofa.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "config" / "reference" / "paper_results.csv"
ROBUSTNESS = ROOT / "config" / "reference" / "paper_robustness.csv"
LAYERS = ["conv1", "conv2", "fc1", "fc2", "fc3"]


def make_run(root, dataset="cifar10", model="resnet20", method="bp", seed=0, optimizer="sgd",
             error=0.1, status="complete", epochs=3, test=True, init="xavier"):
    """A run folder as biofa train + biofa evaluate leave it (``init``: its layer.init)."""
    run = root / f"{dataset}-{model}-{optimizer}-{init}-{method}-{seed}"
    run.mkdir(parents=True)
    config = {"dataset": dataset, "model": model, "method": method, "seed": seed,
              "optimizer": {"name": optimizer, "lr": 0.1}, "epochs": epochs,
              "layer": {"init": init}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    done = epochs if status == "complete" else epochs - 1
    state = {"status": status, "epoch": epochs, "best_epoch": done, "best_val_acc1": 0.9}
    (run / "status.json").write_text(json.dumps(state))
    if test:
        (run / "test.json").write_text(json.dumps({
            "split": "test", "n_images": 10000, "top1_error": error, "top1_acc": 1 - error,
            "best_epoch": done, "status": status, "dataset": dataset, "model": model,
            "method": method, "seed": seed}))
    rng = np.random.default_rng(seed)
    pd.DataFrame({"epoch": range(1, done + 1), "train_loss": rng.random(done),
                  "val_acc1": np.linspace(0.5, 1 - error, done), "lr": 0.1}
                 ).to_csv(run / "metrics.csv", index=False)
    rows = [{"epoch": e, "layer": layer, "method": method,
             "weight_angle": math.nan if method == "dfa" else 80 - 10 * e + i,
             "norm_ratio": math.nan if method == "dfa" else 1 + 0.1 * i,
             "gradient_angle": 60 - 5 * e + i} for e in range(done + 1) for i, layer in enumerate(LAYERS)]
    pd.DataFrame(rows).to_csv(run / "alignment.csv", index=False)
    return run


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    return [make_run(root, method="bp", seed=0, error=0.10),
            make_run(root, method="bp", seed=1, error=0.12),
            make_run(root, method="fa", seed=0, error=0.30),
            make_run(root, method="fa", seed=1, error=0.90, status="diverged"),
            make_run(root, method="dfa", seed=0, error=0.40),
            make_run(root, method="kp", seed=0, error=0.11),
            make_run(root, dataset="digits", model="lenet_mnist", method="bp", error=0.05),
            make_run(root, dataset="mnist", model="lenet_mnist", method="usf", error=0.01)]


@pytest.fixture
def init_runs(tmp_path):
    """CIFAR-10 LeNet SGD from Xavier and Kaiming (usf from Kaiming only), CIFAR-10 ResNet-20
    SGD from Xavier only, MNIST LeNet SGD from Kaiming only."""
    root = tmp_path / "init_runs"
    lenet = dict(model="lenet_cifar")
    return [make_run(root, **lenet, method="bp", seed=0, error=0.30),
            make_run(root, **lenet, method="bp", seed=1, error=0.32),
            make_run(root, **lenet, method="fa", seed=0, error=0.50),
            make_run(root, **lenet, method="fa", seed=1, error=0.90, status="diverged"),
            make_run(root, **lenet, method="bp", seed=0, error=0.40, init="kaiming"),
            make_run(root, **lenet, method="bp", seed=1, error=0.44, init="kaiming"),
            make_run(root, **lenet, method="fa", seed=0, error=0.60, init="kaiming"),
            make_run(root, **lenet, method="fa", seed=1, error=0.64, init="kaiming"),
            make_run(root, **lenet, method="usf", seed=0, error=0.70, init="kaiming"),
            make_run(root, method="bp", error=0.10),
            make_run(root, dataset="mnist", model="lenet_mnist", method="bp", error=0.02,
                     init="kaiming")]


INIT_SETTINGS = ["MNIST LeNet SGD", "CIFAR-10 LeNet SGD, Xavier", "CIFAR-10 LeNet SGD, Kaiming",
                 "CIFAR-10 ResNet-20 SGD"]


def attack_frame(methods=("bp", "fa", "dfa", "kp"), seeds=(0, 1)):
    rows = []
    base = dict(model="resnet20", dataset="cifar10", optimizer="sgd", init="xavier", n_images=500,
                steps=10, source="")
    for method in methods:
        for seed in seeds:
            clean = 0.9 - 0.1 * methods.index(method)
            for attack in ("fgsm", "pgd", "square", "transfer"):
                gradients = {"square": ["none"], "transfer": ["transfer"]}.get(attack, ["feedback", "true"])
                for gradient in gradients:
                    for eps in (0.0, 0.01, 0.03):
                        acc = clean * (1 - 10 * eps * (1.5 if gradient == "true" else 1))
                        rows.append({**base, "method": method, "seed": seed, "attack": attack,
                                     "gradient": gradient, "eps": eps, "pixels": math.nan,
                                     "queries": 50 if attack == "square" else math.nan,
                                     "clean_acc": clean, "robust_acc": acc,
                                     "ci_low": acc - 0.04, "ci_high": acc + 0.04})
            for pixels in (0, 1, 5):
                acc = clean * (1 - 0.1 * pixels)
                rows.append({**base, "method": method, "seed": seed, "attack": "onepixel",
                             "gradient": "none", "eps": math.nan, "pixels": pixels,
                             "queries": math.nan, "clean_acc": clean, "robust_acc": acc,
                             "ci_low": acc - 0.04, "ci_high": acc + 0.04})
    return pd.DataFrame(rows, columns=COLUMNS)


def assert_png(path):
    path = Path(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- collect

def test_collect_runs_rows_and_keys(runs):
    frames = collect.collect_runs(runs)
    accuracy = frames["accuracy"]
    assert list(accuracy.columns[:12]) == ["dataset", "model", "optimizer", "init", "method",
                                           "seed", "status", "epochs_done", "best_epoch", "top1_error",
                                           "n_images", "in_paper"]
    assert len(accuracy) == len(runs)
    fa1 = accuracy[(accuracy.method == "fa") & (accuracy.seed == 1)].iloc[0]
    assert fa1.status == "diverged" and fa1.epochs_done == 2 and fa1.optimizer == "sgd"
    assert not accuracy.set_index("method").loc["kp", "in_paper"]
    assert accuracy.set_index("method").loc["dfa", "in_paper"]

    training = frames["training"]
    assert list(training.columns[:len(names.KEYS)]) == names.KEYS
    assert len(training) == 3 * 7 + 2  # 7 complete runs x 3 epochs, the diverged one 2
    alignment = frames["alignment"]
    assert list(alignment.columns[:len(names.KEYS)]) == names.KEYS
    assert len(alignment) == (4 * 7 + 3) * len(LAYERS)
    assert alignment.loc[alignment.method == "dfa", "weight_angle"].isna().all()


def test_collect_accepts_files_inside_runs_and_writes_csvs(runs, tmp_path):
    frames = collect.collect_runs([run / "test.json" for run in runs[:2]])
    assert list(frames["accuracy"].seed) == [0, 1]
    paths = collect.write_collected(frames, tmp_path / "out")
    assert [p.name for p in paths] == ["accuracy.csv", "training.csv", "alignment.csv"]
    assert len(pd.read_csv(paths[0])) == 2


def test_missing_test_json_names_run_and_fix(tmp_path):
    run = make_run(tmp_path, test=False)
    with pytest.raises(RunError, match=rf"{run}.*biofa evaluate {run}"):
        collect.collect_runs([run])


def test_same_setting_twice_is_refused(tmp_path):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b")
    with pytest.raises(ValueError, match="same setting"):
        collect.collect_runs([a, b])


def test_collect_attacks_concatenates(tmp_path):
    frame = attack_frame()
    frame.iloc[:10].to_csv(tmp_path / "a.csv", index=False)
    frame.iloc[10:].to_csv(tmp_path / "b.csv", index=False)
    pd.DataFrame(columns=COLUMNS).to_csv(tmp_path / "empty.csv", index=False)
    both = collect.collect_attacks([tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "empty.csv"])
    assert len(both) == len(frame) and list(both.columns) == COLUMNS
    # a CSV of a biofa that did not record the optimizer gets it only when named
    frame.iloc[:10].drop(columns="optimizer").to_csv(tmp_path / "old.csv", index=False)
    with pytest.raises(ValueError, match="does not say which optimizer"):
        collect.collect_attacks([tmp_path / "old.csv"])
    tagged = collect.collect_attacks([tmp_path / "old.csv"], optimizer="sgd")
    assert (tagged.optimizer == "sgd").all() and list(tagged.columns) == COLUMNS
    with pytest.raises(ValueError, match="does not exist"):
        collect.collect_attacks([tmp_path / "nope.csv"])


# ----------------------------------------------------------------------------- table

def test_reference_file_has_every_paper_number():
    ref = pd.read_csv(REFERENCE)
    assert len(ref) == 6 * (2 + 6 + 1)
    assert set(ref.method) == {"bp", "fa", "dfa", "usf", "brsf", "frsf"}
    assert not ref.duplicated(["dataset", "model", "optimizer", "method"]).any()
    cell = ref[(ref.dataset == "cifar10") & (ref.model == "resnet56") & (ref.optimizer == "adam")
               & (ref.method == "bp")]
    assert cell.top1_error.item() == 7.83
    assert ref[(ref.dataset == "imagenet") & (ref.method == "dfa")].optimizer.item() == "adam"
    robust = pd.read_csv(ROBUSTNESS)
    assert len(robust) == 6 * (30 + 5) and set(robust.attack) == {"square", "onepixel"}


def test_error_table_cells(runs):
    accuracy = collect.collect_runs(runs)["accuracy"]
    table = tables.error_table(accuracy, REFERENCE)
    assert list(table.index) == ["bp", "fa", "dfa", "usf", "kp (not in paper)"]
    assert list(table.columns) == ["Digits LeNet SGD", "MNIST LeNet SGD", "CIFAR-10 ResNet-20 SGD"]
    column = table["CIFAR-10 ResNet-20 SGD"]
    assert column["bp"] == "11.00 ± 1.41 (8.63)"
    assert column["fa"] == "30.00 (32.16) [1/2 diverged]"
    assert column["dfa"] == "40.00 (45.94)"
    assert column["kp (not in paper)"] == "11.00 (—)"
    assert column["usf"] == "— (10.05)"  # not run here: the published number only
    assert table.loc["bp", "Digits LeNet SGD"] == "5.00 (—)"
    assert table.loc["usf", "MNIST LeNet SGD"] == "1.00 (0.94†)"  # selected on test


def test_all_seeds_diverged_and_other_optimizer_reference(tmp_path):
    root = tmp_path / "runs"
    runs = [make_run(root, method="fa", seed=s, status="diverged", error=0.9) for s in (0, 1)]
    runs.append(make_run(root, dataset="imagenet", model="resnet18", method="dfa", error=0.8))
    table = tables.error_table(collect.collect_runs(runs)["accuracy"], REFERENCE)
    assert table.loc["fa", "CIFAR-10 ResNet-20 SGD"] == "diverged (32.16) [2/2 diverged]"
    assert table.loc["dfa", "ImageNet ResNet-18 SGD"] == "80.00 (82.45†, Adam)"


def test_write_table(runs, tmp_path):
    table = tables.error_table(collect.collect_runs(runs)["accuracy"], REFERENCE)
    paths = tables.write_table(table, tmp_path / "tables" / "error_table")
    assert [p.name for p in paths] == ["error_table.md", "error_table.tex", "error_table.csv"]
    for path in paths:
        text = path.read_text()
        for method in ("bp", "fa", "dfa", "usf", "kp (not in paper)"):
            assert method in text
    assert "11.00 ± 1.41 (8.63)" in paths[0].read_text()
    assert r"11.00 $\pm$ 1.41 (8.63)" in paths[1].read_text()
    assert r"\begin{tabular}" in paths[1].read_text()
    assert pd.read_csv(paths[2]).columns[0] == "method"


def test_error_table_shows_the_paper_init_and_names_another(init_runs):
    """Like with like: a setting's Xavier runs next to the published (Xavier) numbers, never
    averaged with its Kaiming ones; a setting trained only from Kaiming says so."""
    table = tables.error_table(collect.collect_runs(init_runs)["accuracy"], REFERENCE)
    assert list(table.columns) == ["MNIST LeNet SGD, Kaiming", "CIFAR-10 LeNet SGD",
                                   "CIFAR-10 ResNet-20 SGD"]
    assert list(table.index) == ["bp", "fa", "usf"]
    lenet = table["CIFAR-10 LeNet SGD"]
    assert lenet["bp"] == "31.00 ± 1.41 (14.23)"  # the Xavier seeds only, not 30/32/40/44
    assert lenet["fa"] == "50.00 (46.69) [1/2 diverged]"
    assert lenet["usf"] == "— (16.22)"  # run from Kaiming only: not in the Xavier column
    assert table.loc["bp", "MNIST LeNet SGD, Kaiming"] == "2.00 (0.91†)"
    assert table.loc["bp", "CIFAR-10 ResNet-20 SGD"] == "10.00 (8.63)"
    summary = tables.error_summary(collect.collect_runs(init_runs)["accuracy"])
    assert len(summary[(summary.model == "lenet_cifar") & (summary.method == "bp")]) == 2


def test_error_table_of_an_accuracy_table_without_inits(runs):
    accuracy = collect.collect_runs(runs)["accuracy"]
    assert tables.error_table(accuracy.drop(columns="init"), REFERENCE).equals(
        tables.error_table(accuracy, REFERENCE))


def test_init_table_cells(init_runs):
    table = tables.init_table(collect.collect_runs(init_runs)["accuracy"])
    assert list(table.columns) == ["CIFAR-10 LeNet SGD, Xavier", "CIFAR-10 LeNet SGD, Kaiming"]
    assert list(table.index) == ["bp", "fa", "usf"]
    assert table.to_dict("list") == {  # the error table's cells, without a published number
        "CIFAR-10 LeNet SGD, Xavier": ["31.00 ± 1.41", "50.00 [1/2 diverged]", "—"],
        "CIFAR-10 LeNet SGD, Kaiming": ["42.00 ± 2.83", "62.00 ± 2.83", "70.00"]}


def test_init_table_columns_follow_the_init_order(tmp_path):
    root = tmp_path / "runs"
    runs = [make_run(root, method="bp", init=init, error=error, optimizer=optimizer)
            for optimizer in ("adam", "sgd")
            for init, error in (("kaiming", 0.3), ("xavier", 0.1), ("default", 0.2))]
    runs.append(make_run(root, method="kp", init="default", error=0.5, status="running"))
    table = tables.init_table(collect.collect_runs(runs)["accuracy"])
    assert list(table.columns) == [f"CIFAR-10 ResNet-20 {o}, {i}" for o in ("SGD", "Adam")
                                   for i in ("Xavier", "PyTorch default", "Kaiming")]
    assert list(table.loc["bp"])[:3] == ["10.00", "20.00", "30.00"]
    assert table.loc["kp (not in paper)", "CIFAR-10 ResNet-20 SGD, PyTorch default"] == \
        "unfinished [1/1 unfinished]"


def test_init_table_needs_two_inits_in_a_setting(runs, init_runs):
    accuracy = collect.collect_runs(runs)["accuracy"]
    with pytest.raises(UsageError, match="more than one init.*inits xavier"):
        tables.init_table(accuracy)
    with pytest.raises(UsageError, match="no init column"):
        tables.init_table(accuracy.drop(columns="init"))
    # two inits, but in different settings (MNIST Kaiming, ResNet-20 Xavier): nothing to compare
    alone = collect.collect_runs(init_runs[-2:])["accuracy"]
    with pytest.raises(UsageError, match="more than one init"):
        tables.init_table(alone)


def test_write_init_table(init_runs, tmp_path):
    table = tables.init_table(collect.collect_runs(init_runs)["accuracy"])
    md, tex, csv = tables.write_table(table, tmp_path / "init_table", kind="init")
    assert names.INIT_TABLE_LEGEND in md.read_text() and names.TABLE_LEGEND not in md.read_text()
    assert "| 42.00 ± 2.83 " in md.read_text()
    assert r"\label{tab:top1-error-init}" in tex.read_text()
    assert r"42.00 $\pm$ 2.83" in tex.read_text()
    assert list(pd.read_csv(csv).columns) == ["method", *table.columns]


# ----------------------------------------------------------------------------- figures
#
# What is drawn, not only that a PNG exists: a figure that lost a panel, a method, a
# colour or the solid/dashed distinction must fail here. The Figure is taken from
# ``save_figure`` as ``fig_*`` writes it, so these are the files' contents.

SETTINGS = ["Digits LeNet SGD", "MNIST LeNet SGD", "CIFAR-10 ResNet-20 SGD"]
EPS_LABEL = "ε (L∞, images in [0, 1])"
ROBUST_LABEL = "robust accuracy (%)"


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """``drawn(name, frame, **kwargs)``: run ``figures.FIGURES[name]``, return its Figure."""
    saved = []
    real = figures.save_figure

    def capture(fig, out):
        saved.append(fig)
        return real(fig, out)

    monkeypatch.setattr(figures, "save_figure", capture)

    def draw(name, frame, **kwargs):
        saved.clear()
        path = figures.FIGURES[name](frame, tmp_path / f"{name}.png", **kwargs)
        assert_png(path)
        assert len(saved) == 1, f"{name}: {len(saved)} figures saved"
        return saved[0]
    return draw


def colour(method):
    return to_hex(names.PALETTE[method])


def lines_of(ax):
    """(colour, line style) of each drawn line, in drawing order."""
    return [(to_hex(line.get_color()), line.get_linestyle()) for line in ax.lines]


def line_of(ax, method, ls="-"):
    found = [line for line in ax.lines
             if to_hex(line.get_color()) == colour(method) and line.get_linestyle() == ls]
    assert len(found) == 1, f"{ax.get_title()}: {len(found)} {ls} lines of {method}"
    return found[0]


def legend_of(fig):
    """Labels, colours and line styles of the figure's one legend."""
    assert len(fig.legends) == 1
    legend = fig.legends[0]
    labels = [text.get_text() for text in legend.get_texts()]
    handles = {label: handle for label, handle in zip(labels, legend.legend_handles)}
    return labels, handles


def assert_method_legend(fig, methods, dashed_kp=True):
    labels, handles = legend_of(fig)
    assert labels[:len(methods)] == [names.method_label(m) for m in methods]
    for method in methods:
        handle = handles[names.method_label(method)]
        face = handle.get_color() if isinstance(handle, Line2D) else handle.get_facecolor()
        assert to_hex(face) == colour(method), method
        if isinstance(handle, Line2D):
            dashed = dashed_kp and method == "kp"
            assert handle.get_linestyle() == ("--" if dashed else "-"), method
    return labels


def assert_no_placeholder(fig):
    for ax in fig.axes:
        assert not [t.get_text() for t in ax.texts if t.get_text().startswith("no ")]


def test_training_figure(runs, drawn):
    fig = drawn("training", collect.collect_runs(runs)["training"])
    assert_no_placeholder(fig)
    assert [ax.get_title() for ax in fig.axes] == SETTINGS  # a panel per setting
    assert fig.get_suptitle().startswith("Validation top-1 error during training")
    for ax in fig.axes:
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "validation top-1 error (%)")
    digits, mnist, cifar = fig.axes
    assert lines_of(digits) == [(colour("bp"), "-")]
    assert lines_of(mnist) == [(colour("usf"), "-")]
    assert lines_of(cifar) == [(colour("bp"), "-"), (colour("fa"), "-"), (colour("dfa"), "-"),
                               (colour("kp"), "--")]  # kp: not in the paper
    bp = line_of(cifar, "bp")  # mean over the two seeds of 100 (1 - val_acc1)
    np.testing.assert_allclose(bp.get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(bp.get_ydata(), [50, 30.5, 11])
    assert len(cifar.collections) == 4  # a ± 1 sd band per method
    assert_method_legend(fig, ["bp", "fa", "dfa", "usf", "kp"])


def test_alignment_figure(runs, drawn):
    fig = drawn("alignment", collect.collect_runs(runs)["alignment"])
    assert_no_placeholder(fig)
    assert len(fig.axes) == 3 * 3  # a row per metric, a column per setting
    rows = np.array(fig.axes).reshape(3, 3)
    assert [ax.get_title() for ax in rows[0]] == SETTINGS
    assert [ax.get_ylabel() for ax in rows[:, 0]] == list(figures.ALIGNMENT_METRICS.values())
    assert all(ax.get_ylabel() == "" for ax in rows[:, 1:].flat)
    assert [ax.get_xlabel() for ax in rows[-1]] == ["epoch"] * 3
    weight, ratio, gradient = rows[:, 2]  # CIFAR-10: bp, fa, dfa, kp
    no_dfa = [(colour("bp"), "-"), (colour("fa"), "-"), (colour("kp"), "--")]
    assert lines_of(weight) == no_dfa and lines_of(ratio) == no_dfa  # DFA's B is not W-shaped
    assert lines_of(gradient) == [(colour("bp"), "-"), (colour("fa"), "-"),
                                  (colour("dfa"), "-"), (colour("kp"), "--")]
    bp = line_of(weight, "bp")  # mean over layers of 80 - 10 epoch + layer index
    np.testing.assert_allclose(bp.get_xdata(), [0, 1, 2, 3])
    np.testing.assert_allclose(bp.get_ydata(), [82, 72, 62, 52])
    np.testing.assert_allclose(line_of(ratio, "bp").get_ydata(), [1.2] * 4)
    assert weight.get_ylim()[1] >= 90  # angles on 0..90 degrees
    assert_method_legend(fig, ["bp", "fa", "dfa", "usf", "kp"])


def test_alignment_layers_figure(runs, drawn):
    fig = drawn("alignment_layers", collect.collect_runs(runs)["alignment"])
    assert_no_placeholder(fig)
    assert [ax.get_title() for ax in fig.axes] == SETTINGS  # a row per setting
    for ax in fig.axes:
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("layer (input to output)",
                                                       "angle(W, B) (degrees)")
        assert [t.get_text() for t in ax.get_xticklabels()] == LAYERS
    cifar = fig.axes[2]
    bars = [p for p in cifar.patches if p.get_height() > 0]
    assert len(bars) == 3 * len(LAYERS)  # bp, fa, kp; no bar for dfa (no weight angle)
    by_colour = {}
    for bar in bars:  # the bars carry the legend's colours, not a desaturated variant
        by_colour.setdefault(to_hex(bar.get_facecolor()), []).append(bar)
    assert set(by_colour) == {colour("bp"), colour("fa"), colour("kp")}
    # each run's last epoch, 80 - 10 epoch + layer index: 3, but 2 for fa's diverged seed
    for method, first in (("bp", 50), ("fa", 55), ("kp", 50)):
        heights = [b.get_height() for b in sorted(by_colour[colour(method)], key=lambda b: b.get_x())]
        np.testing.assert_allclose(heights, first + np.arange(len(LAYERS)))
    assert {to_hex(p.get_facecolor()) for p in fig.axes[1].patches} == {colour("usf")}
    assert_method_legend(fig, ["bp", "fa", "usf", "kp"])


def test_alignment_per_layer_figure(runs, drawn):
    fig = drawn("alignment_per_layer", collect.collect_runs(runs)["alignment"])
    assert fig.get_suptitle() == ("Alignment of W with B per layer during training "
                                  "(mean over seeds; dfa: no W-shaped B, not shown)")
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    grid = np.array(panels).reshape(2 * 3, 3)  # two rows per setting; CIFAR-10 has 3 methods
    visible = [[ax.get_visible() for ax in row] for row in grid]
    assert visible == [[True, False, False]] * 4 + [[True, True, True]] * 2
    assert [ax.get_title() for ax in grid[0::2].flat if ax.get_visible()] == [
        "Digits LeNet SGD: bp", "MNIST LeNet SGD: usf", "CIFAR-10 ResNet-20 SGD: bp",
        "CIFAR-10 ResNet-20 SGD: fa", "CIFAR-10 ResNet-20 SGD: kp (not in paper)"]
    assert [ax.get_ylabel() for ax in grid[:, 0]] == ["angle(W, B) (degrees)", "‖B‖ / ‖W‖"] * 3
    assert [ax.get_xlabel() for ax in grid[-1]] == ["epoch"] * 3
    assert [ax.get_xlabel() for ax in grid[-2]] == [""] * 3
    cmap = figures.DEPTH_CMAP
    expected = [to_hex(cmap(i / (len(LAYERS) - 1))) for i in range(len(LAYERS))]
    for ax in grid.flat:
        if ax.get_visible():  # a line per layer, input to output along the colormap
            assert [line.get_label() for line in ax.lines] == LAYERS
            assert [to_hex(line.get_color()) for line in ax.lines] == expected
    fa_angle, fa_ratio = grid[4, 1], grid[5, 1]
    # fa seed 0 has epochs 0..3, its diverged seed 1 epochs 0..2: 80 - 10 epoch + layer index
    for i, line in enumerate(fa_angle.lines):
        np.testing.assert_allclose(line.get_xdata(), [0, 1, 2, 3])
        np.testing.assert_allclose(line.get_ydata(), 80 - 10 * np.arange(4) + i)
    for i, line in enumerate(fa_ratio.lines):
        np.testing.assert_allclose(line.get_ydata(), [1 + 0.1 * i] * 4)
    assert fa_angle.get_ylim()[0] < 0 and fa_angle.get_ylim()[1] >= 90  # angles on 0..90
    assert fa_ratio.get_ylim()[0] < 0
    assert len(bars) == 3  # one depth scale per setting, naming the first and last layer
    for bar in bars:
        assert bar.get_ylabel() == "layer depth (input → output)"
        assert [t.get_text() for t in bar.get_yticklabels()] == [LAYERS[0], LAYERS[-1]]


def test_alignment_per_layer_takes_the_seed_mean(drawn):
    rows = [{"dataset": "cifar10", "model": "resnet56", "optimizer": "adam", "method": "fa",
             "seed": seed, "epoch": epoch, "layer": layer,
             "weight_angle": 90 - epoch * (depth + 1) + seed, "norm_ratio": 1 + seed + depth,
             "gradient_angle": math.nan}
            for seed in (0, 1, 2) for epoch in (0, 1) for depth, layer in
            enumerate(["conv1", "layer1.0.conv1", "fc"])]
    fig = drawn("alignment_per_layer", pd.DataFrame(rows))
    angle, ratio, bar = fig.axes
    assert angle.get_title() == "CIFAR-10 ResNet-56 Adam: fa"
    assert [line.get_label() for line in angle.lines] == ["conv1", "layer1.0.conv1", "fc"]
    np.testing.assert_allclose([line.get_ydata() for line in angle.lines],
                               [[91, 90], [91, 89], [91, 88]])
    np.testing.assert_allclose([line.get_ydata() for line in ratio.lines],
                               [[2, 2], [3, 3], [4, 4]])
    assert [t.get_text() for t in bar.get_yticklabels()] == ["conv1", "fc"]
    assert fig.get_suptitle().endswith("(mean over seeds)")


def test_alignment_per_layer_without_weight_angles_is_an_error(runs, tmp_path):
    alignment = collect.collect_runs(runs)["alignment"]
    with pytest.raises(UsageError, match="no weight angles"):
        figures.fig_alignment_per_layer(alignment[alignment.method == "dfa"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_robustness_figure(drawn):
    fig = drawn("robustness", attack_frame(), reference=ROBUSTNESS)
    assert_no_placeholder(fig)
    assert [ax.get_title() for ax in fig.axes] == [  # a panel per attack present
        "CIFAR-10 ResNet-20 SGD: FGSM", "CIFAR-10 ResNet-20 SGD: PGD",
        "CIFAR-10 ResNet-20 SGD: Square (50 queries)"]
    assert fig.get_suptitle().startswith("Robust accuracy under white-box attacks and Square")
    assert [ax.get_ylabel() for ax in fig.axes] == [ROBUST_LABEL, "", ""]
    for ax in fig.axes:
        assert ax.get_xlabel() == EPS_LABEL and ax.get_ylim() == (0, 100)
    methods = ["bp", "fa", "dfa", "kp"]
    for ax in fig.axes[:2]:  # feedback gradient solid, true gradient dashed, same colour
        assert lines_of(ax) == [(colour(m), ls) for m in methods for ls in ("-", "--")]
        assert not ax.collections[len(ax.lines):]  # no published stars but on Square
    fgsm = fig.axes[0]
    np.testing.assert_allclose(line_of(fgsm, "bp", "-").get_ydata(), [90, 81, 63])
    np.testing.assert_allclose(line_of(fgsm, "bp", "--").get_ydata(), [90, 76.5, 49.5])
    np.testing.assert_allclose(line_of(fgsm, "fa", "-").get_xdata(), [0, 0.01, 0.03])
    square = fig.axes[2]
    assert lines_of(square) == [(colour(m), "-") for m in methods]  # outputs only: one line
    stars = [c for c in square.collections if c.get_paths() and len(c.get_offsets()) == 30]
    assert {to_hex(c.get_facecolor()[0]) for c in stars} == {
        colour(m) for m in ("bp", "fa", "dfa", "usf", "brsf", "frsf")}  # the published six
    labels = assert_method_legend(fig, ["bp", "fa", "dfa", "usf", "brsf", "frsf", "kp"],
                                  dashed_kp=False)  # here dashes mean the true gradient
    _, handles = legend_of(fig)
    gradient = labels[7:]
    assert gradient[:2] == [f"{names.GRADIENT_LABELS['feedback']} / {names.GRADIENT_LABELS['none']}",
                            names.GRADIENT_LABELS["true"]]
    assert [handles[g].get_linestyle() for g in gradient[:2]] == ["-", "--"]
    assert gradient[2] == figures.PUBLISHED_HANDLE.get_label()


def test_robustness_figure_splits_by_optimizer(drawn):
    frame = pd.concat([attack_frame(("bp", "fa"), (0,)).assign(optimizer=o) for o in ("sgd", "adam")])
    fig = drawn("robustness", frame[frame.attack.isin(["pgd", "square"])], reference=ROBUSTNESS)
    assert [ax.get_title() for ax in fig.axes] == [
        "CIFAR-10 ResNet-20 SGD: PGD", "CIFAR-10 ResNet-20 SGD: Square (50 queries)",
        "CIFAR-10 ResNet-20 Adam: PGD", "CIFAR-10 ResNet-20 Adam: Square (50 queries)"]
    assert [ax.get_ylabel() for ax in fig.axes] == [ROBUST_LABEL, ""] * 2
    for ax in fig.axes:  # each optimizer's own lines: one per method (and gradient)
        assert len(ax.lines) == (2 if "Square" in ax.get_title() else 4)

    def stars(ax):
        return [c for c in ax.collections if c.get_paths() and len(c.get_offsets()) == 30]

    # the published Square numbers are of SGD models: starred on the SGD row only
    assert len(stars(fig.axes[1])) == 6 and stars(fig.axes[3]) == []


def autoattack_frame(methods=("bp", "fa")):
    """pgd rows and AutoAttack rows under both gradients: AutoAttack lower than PGD, the true
    gradient lower than the feedback one for fa only."""
    frame = attack_frame(methods, (0, 1))
    pgd = frame[frame.attack == "pgd"]
    auto = pgd.assign(attack="autoattack", queries=5000.0)
    masked = (auto.method == "fa") & (auto.gradient == "feedback")
    auto["robust_acc"] = np.where(masked, auto.clean_acc, auto.robust_acc * 0.5)
    auto["ci_low"], auto["ci_high"] = auto.robust_acc - 0.04, auto.robust_acc + 0.04
    return pd.concat([pgd, auto], ignore_index=True)


def test_robustness_figure_draws_autoattack(drawn):
    fig = drawn("robustness", autoattack_frame())
    assert_no_placeholder(fig)
    assert [ax.get_title() for ax in fig.axes] == [
        "CIFAR-10 ResNet-20 SGD: PGD",
        "CIFAR-10 ResNet-20 SGD: AutoAttack\n(10 steps, 5000 queries)"]
    pgd, auto = fig.axes
    assert auto.get_xlabel() == EPS_LABEL and auto.get_ylim() == (0, 100)
    # each rule under the feedback (solid) and the true gradient (dashed), as PGD
    assert lines_of(auto) == [(colour(m), ls) for m in ("bp", "fa") for ls in ("-", "--")]
    np.testing.assert_allclose(line_of(auto, "bp", "-").get_xdata(), [0, 0.01, 0.03])
    np.testing.assert_allclose(line_of(auto, "bp", "--").get_ydata(),
                               0.5 * line_of(pgd, "bp", "--").get_ydata())
    np.testing.assert_allclose(line_of(auto, "fa", "-").get_ydata(), [80, 80, 80])  # masked
    assert (line_of(auto, "fa", "--").get_ydata()[1:] < 80).all()
    labels, _ = legend_of(fig)
    assert names.GRADIENT_LABELS["true"] in labels


def test_autoattack_alone_makes_the_robustness_figure():
    assert "robustness" in names.study_figures(["bp", "fa"], ["autoattack"])


@pytest.mark.parametrize("name, x, xlabel, title, ys", [
    ("onepixel", [0, 1, 5], "pixels changed", "Robust accuracy under the OnePixel attack",
     [90, 81, 45]),
    ("transfer", [0, 0.01, 0.03], EPS_LABEL,
     "Robust accuracy under transfer attacks from a bp model", [90, 81, 63])])
def test_strength_figures(drawn, name, x, xlabel, title, ys):
    kwargs = {"reference": ROBUSTNESS} if name == "onepixel" else {}
    fig = drawn(name, attack_frame(), **kwargs)
    assert_no_placeholder(fig)
    (ax,) = fig.axes
    assert fig.get_suptitle().startswith(title)
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("CIFAR-10 ResNet-20 SGD", xlabel,
                                                                   ROBUST_LABEL)
    assert lines_of(ax) == [(colour("bp"), "-"), (colour("fa"), "-"), (colour("dfa"), "-"),
                            (colour("kp"), "--")]
    bp = line_of(ax, "bp")
    np.testing.assert_allclose(bp.get_xdata(), x)
    np.testing.assert_allclose(bp.get_ydata(), ys)
    stars = [c for c in ax.collections if type(c).__name__ == "PathCollection"]
    if name == "onepixel":  # 1 to 5 pixels of the six published rules
        assert len(stars) == 6 and all(len(c.get_offsets()) == 5 for c in stars)
        assert_method_legend(fig, ["bp", "fa", "dfa", "usf", "brsf", "frsf", "kp"])
        assert legend_of(fig)[0][-1] == figures.PUBLISHED_HANDLE.get_label()
    else:
        assert not stars
        assert_method_legend(fig, ["bp", "fa", "dfa", "kp"])
        assert len(legend_of(fig)[0]) == 4


def bars_of(ax):
    """The bar groups of a panel, one per ``ax.bar`` call: {label: [(x centre, height)]}."""
    from matplotlib.container import BarContainer
    return {bars.get_label(): [(b.get_x() + b.get_width() / 2, b.get_height()) for b in bars]
            for bars in ax.containers if isinstance(bars, BarContainer)}


def test_initialization_figure(init_runs, drawn):
    fig = drawn("initialization", collect.collect_runs(init_runs)["accuracy"])
    assert_no_placeholder(fig)
    (ax,) = fig.axes  # one panel: the only setting trained from two inits
    assert ax.get_title() == "CIFAR-10 LeNet SGD"
    assert fig.get_suptitle().startswith("Top-1 test error by initialization")
    assert ax.get_ylabel() == "top-1 test error (%)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["bp", "fa", "usf"]
    bars = bars_of(ax)
    assert list(bars) == ["Xavier", "Kaiming"]
    # the mean over the completed seeds (fa's diverged Xavier seed left out); usf: Kaiming only
    np.testing.assert_allclose(bars["Xavier"], [(-0.2, 31), (0.8, 50)])
    np.testing.assert_allclose(bars["Kaiming"], [(0.2, 42), (1.2, 62), (2.2, 70)])
    from matplotlib.container import BarContainer, ErrorbarContainer
    for group in ax.containers:  # each init its colour
        if isinstance(group, BarContainer):
            init = {"Xavier": "xavier", "Kaiming": "kaiming"}[group.get_label()]
            assert {to_hex(b.get_facecolor()) for b in group} == {names.INIT_PALETTE[init]}
    spans = [[round(high - low, 2) for (_, low), (_, high) in group.lines[2][0].get_segments()]
             for group in ax.containers if isinstance(group, ErrorbarContainer)]
    assert spans == [[2.83, 0], [5.66, 5.66, 0]]  # ± 1 sd over the seeds; 0 for one seed
    dots = [c.get_offsets() for c in ax.collections if type(c).__name__ == "PathCollection"]
    np.testing.assert_allclose(dots[0], [[-0.2, 30], [-0.2, 32], [0.8, 50]])
    np.testing.assert_allclose(dots[1], [[0.2, 40], [0.2, 44], [1.2, 60], [1.2, 64], [2.2, 70]])
    labels, handles = legend_of(fig)
    assert labels == ["Xavier", "Kaiming", "one seed"]
    assert to_hex(handles["Kaiming"].get_facecolor()) == names.INIT_PALETTE["kaiming"]


def test_initialization_figure_a_panel_per_setting(tmp_path, drawn):
    root = tmp_path / "runs"
    runs = [make_run(root, method=method, init=init, optimizer=optimizer, seed=seed,
                     error=0.1 * (1 + seed) + (0.2 if init == "default" else 0))
            for optimizer in ("sgd", "adam") for init in ("default", "xavier", "kaiming")
            for method in ("bp", "kp") for seed in (0, 1)]
    fig = drawn("initialization", collect.collect_runs(runs)["accuracy"])
    assert [ax.get_title() for ax in fig.axes] == ["CIFAR-10 ResNet-20 SGD",
                                                   "CIFAR-10 ResNet-20 Adam"]
    for ax in fig.axes:
        bars = bars_of(ax)
        assert list(bars) == ["Xavier", "PyTorch default", "Kaiming"]
        np.testing.assert_allclose([h for _, h in bars["PyTorch default"]], [35, 35])
        np.testing.assert_allclose([h for _, h in bars["Xavier"]], [15, 15])
        assert [t.get_text() for t in ax.get_xticklabels()] == ["bp", "kp (not in paper)"]
    assert legend_of(fig)[0] == ["Xavier", "PyTorch default", "Kaiming", "one seed"]


def test_initialization_figure_without_two_inits_is_an_error(runs, tmp_path):
    with pytest.raises(UsageError, match="the initialization figure has nothing to draw.*"
                                         "more than one init"):
        figures.fig_initialization(collect.collect_runs(runs)["accuracy"], tmp_path / "x.png")
    assert not list(tmp_path.glob("x.*"))


def test_training_figure_keeps_inits_apart(init_runs, drawn):
    training = collect.collect_runs(init_runs)["training"]
    fig = drawn("training", training)
    assert [ax.get_title() for ax in fig.axes] == INIT_SETTINGS  # a panel per init
    _, xavier, kaiming, _ = fig.axes
    np.testing.assert_allclose(line_of(xavier, "bp").get_ydata(), [50, 40.5, 31])
    np.testing.assert_allclose(line_of(kaiming, "bp").get_ydata(), [50, 46, 42])
    assert lines_of(xavier) == [(colour("bp"), "-"), (colour("fa"), "-")]
    assert lines_of(kaiming) == [(colour(m), "-") for m in ("bp", "fa", "usf")]
    # an older table without the init column: one panel per setting, as before
    older = figures.draw_training(training.drop(columns="init"))
    assert [ax.get_title() for ax in older.axes] == ["MNIST LeNet SGD", "CIFAR-10 LeNet SGD",
                                                     "CIFAR-10 ResNet-20 SGD"]
    plt.close(older)


@pytest.mark.parametrize("name", ["alignment", "alignment_layers", "alignment_per_layer"])
def test_alignment_figures_keep_inits_apart(init_runs, drawn, name):
    alignment = collect.collect_runs(init_runs)["alignment"]
    fig = drawn(name, alignment)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.get_title()]
    titles = list(dict.fromkeys(ax.get_title().split(": ")[0] for ax in panels))
    assert titles == INIT_SETTINGS
    if name == "alignment":  # bp's mean over layers: the same in both inits' panels here,
        weight = np.array(fig.axes).reshape(3, 4)[0]  # but from its own two seeds each
        for ax in weight[1:3]:
            np.testing.assert_allclose(line_of(ax, "bp").get_ydata(), [82, 72, 62, 52])
    older = figures.DRAW[name](alignment.drop(columns="init"))
    older_titles = {ax.get_title().split(": ")[0] for ax in older.axes if ax.get_title()}
    assert older_titles == {"MNIST LeNet SGD", "CIFAR-10 LeNet SGD", "CIFAR-10 ResNet-20 SGD"}
    plt.close(older)


def test_attack_figures_keep_inits_apart(drawn):
    xavier = attack_frame(("bp", "fa"), (0,))
    kaiming = xavier.assign(init="kaiming", robust_acc=xavier.robust_acc / 2)
    frame = pd.concat([xavier, kaiming], ignore_index=True)
    fig = drawn("robustness", frame[frame.attack.isin(["pgd", "square"])], reference=ROBUSTNESS)
    assert [ax.get_title() for ax in fig.axes] == [
        "CIFAR-10 ResNet-20 SGD, Xavier: PGD", "CIFAR-10 ResNet-20 SGD, Xavier: Square (50 queries)",
        "CIFAR-10 ResNet-20 SGD, Kaiming: PGD",
        "CIFAR-10 ResNet-20 SGD, Kaiming: Square (50 queries)"]
    np.testing.assert_allclose(line_of(fig.axes[0], "bp").get_ydata(), [90, 81, 63])
    np.testing.assert_allclose(line_of(fig.axes[2], "bp").get_ydata(), [45, 40.5, 31.5])

    def stars(ax):
        return [c for c in ax.collections if c.get_paths() and len(c.get_offsets()) == 30]

    # the published Square numbers are of Xavier models: starred on the Xavier row only
    assert len(stars(fig.axes[1])) == 6 and stars(fig.axes[3]) == []
    for name in ("onepixel", "transfer"):
        fig = drawn(name, frame, **({"reference": ROBUSTNESS} if name == "onepixel" else {}))
        assert [ax.get_title() for ax in fig.axes] == ["CIFAR-10 ResNet-20 SGD, Xavier",
                                                       "CIFAR-10 ResNet-20 SGD, Kaiming"]


def test_draw_returns_the_figure_fig_writes(runs, tmp_path):
    training = collect.collect_runs(runs)["training"]
    assert set(figures.DRAW) == set(figures.FIGURES) == set(names.FIGURE_NAMES)
    fig = figures.draw_training(training)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    plt.close(fig)
    assert not list(tmp_path.glob("*.png"))
    assert_png(figures.fig_training(training, tmp_path / "training.png"))


@pytest.mark.parametrize("name", names.FIGURE_NAMES)
def test_figures_from_empty_frames_are_an_error(tmp_path, name):
    """A study without these results does not make the figure (names.study_figures), so an
    empty input is a wrong one: no placeholder is drawn."""
    empty = pd.DataFrame(columns=COLUMNS if names.FIGURE_TABLES[name] == names.ATTACK_TABLE
                         else names.KEYS)
    with pytest.raises(UsageError, match=rf"the {name} figure has nothing to draw"):
        figures.FIGURES[name](empty, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("methods, attacks, left_out", [
    (["bp", "fa"], ["pgd", "square", "transfer"], ["onepixel"]),
    (["bp", "fa"], ["onepixel"], ["robustness", "transfer"]),
    (["bp", "fa"], ["fgsm", "square", "onepixel", "transfer"], []),
    (["dfa"], ["square"], ["alignment_layers", "alignment_per_layer", "onepixel", "transfer"]),
    (["bp", "dfa"], [], ["robustness", "onepixel", "transfer"])])
def test_study_figures_are_those_with_data(methods, attacks, left_out):
    assert names.study_figures(methods, attacks) == [  # no runs given: no init figure
        name for name in names.FIGURE_NAMES if name not in left_out + ["initialization"]]
    one_init = [{"dataset": "cifar10", "model": "resnet20", "optimizer": "sgd", "init": "xavier",
                 "method": m, "seed": 0} for m in methods]
    # the workflow's runs: an init figure only when some setting has more than one init
    assert names.study_figures(methods, attacks, one_init) == names.study_figures(methods, attacks)
    other = [{**run, "init": "kaiming"} for run in one_init]
    other_setting = [{**run, "optimizer": "adam"} for run in other]
    assert "initialization" not in names.study_figures(methods, attacks, one_init + other_setting)
    assert names.study_figures(methods, attacks, one_init + other) == [
        name for name in names.FIGURE_NAMES if name not in left_out]


def run_frames(runs):
    frames = collect.collect_runs(runs)
    return {"training": frames["training"], "initialization": frames["accuracy"],
            "alignment": frames["alignment"],
            "alignment_layers": frames["alignment"], "alignment_per_layer": frames["alignment"]}


@pytest.mark.parametrize("name, old, new", [
    ("training", "val_acc1", "val_acc"),
    ("training", "epoch", "step"),
    ("initialization", "top1_error", "error"),
    ("initialization", "init", "initialization"),
    ("alignment", "epoch", "ep"),
    ("alignment_layers", "weight_angle", "w_angle"),
    ("alignment_layers", "layer", "name"),
    ("alignment_per_layer", "norm_ratio", "ratio"),
    ("alignment_per_layer", "layer", "name"),
    ("robustness", "robust_acc", "robust_accuracy"),
    ("robustness", "gradient", "grad"),
    ("onepixel", "pixels", "n_pixels"),
    ("transfer", "eps", "epsilon"),
    ("transfer", "method", "rule")])
def test_a_renamed_column_is_an_error_naming_it(runs, tmp_path, name, old, new):
    frame = run_frames(runs)[name] if names.FIGURE_TABLES[name] != names.ATTACK_TABLE \
        else attack_frame()
    with pytest.raises(UsageError, match=rf"the {name} figure needs the column\(s\) {old}\b"):
        figures.FIGURES[name](frame.rename(columns={old: new}), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("name, old", [("robustness", "robust_acc"), ("onepixel", "pixels"),
                                       ("transfer", "eps")])
def test_cli_figure_of_a_csv_with_a_renamed_column_is_an_error(tmp_path, name, old):
    """The command fills absent attack columns with empty ones; those must not plot."""
    attack_frame().rename(columns={old: "renamed"}).to_csv(tmp_path / "a.csv", index=False)
    args = parser().parse_args(["report", "figure", name, "--input", str(tmp_path / "a.csv"),
                                "--out", str(tmp_path / "x.png")])
    with pytest.raises(UsageError, match=rf"the {name} figure: the column\(s\) {old} hold no values"):
        args.run(args)
    assert not (tmp_path / "x.png").exists()


def test_alignment_without_any_metric_is_an_error(runs, tmp_path):
    alignment = collect.collect_runs(runs)["alignment"]
    renamed = alignment.rename(columns={m: m + "_deg" for m in figures.ALIGNMENT_METRICS})
    with pytest.raises(UsageError, match="weight_angle, norm_ratio, gradient_angle"):
        figures.fig_alignment(renamed, tmp_path / "x.png")


# ----------------------------------------------------------------------------- CLI hook

def parser():
    top = argparse.ArgumentParser(prog="biofa")
    sub = top.add_subparsers(dest="command", required=True)
    cli._add_report_commands(sub)
    return top


def test_cli_collect_table_figure(runs, tmp_path):
    out = tmp_path / "report"
    args = parser().parse_args(["report", "collect", "--runs", *map(str, runs), "--out-dir", str(out)])
    assert args.run(args) == 0
    args = parser().parse_args(["report", "table", "--accuracy", str(out / "accuracy.csv"),
                                "--reference", str(REFERENCE), "--prefix", str(out / "error_table")])
    assert args.run(args) == 0
    assert "11.00 ± 1.41 (8.63)" in (out / "error_table.md").read_text()
    assert (out / "error_table.tex").exists() and (out / "error_table.csv").exists()
    args = parser().parse_args(["report", "figure", "alignment_layers", "--input",
                                str(out / "alignment.csv"), "--out", str(out / "layers.png")])
    assert args.run(args) == 0
    assert_png(out / "layers.png")


def test_cli_init_table_and_figure(init_runs, runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli.main(["report", "collect", "--runs", *map(str, init_runs), "--out-dir", str(out)]) == 0
    assert cli.main(["report", "init-table", "--accuracy", str(out / "accuracy.csv"),
                     "--prefix", str(out / "init_table")]) == 0
    assert "| 42.00 ± 2.83 " in (out / "init_table.md").read_text()
    assert (out / "init_table.tex").exists() and (out / "init_table.csv").exists()
    assert cli.main(["report", "figure", "initialization", "--input", str(out / "accuracy.csv"),
                     "--out", str(out / "initialization.png")]) == 0
    assert_png(out / "initialization.png")
    assert (out / "initialization.pdf").exists()
    one = tmp_path / "one"
    assert cli.main(["report", "collect", "--runs", *map(str, runs), "--out-dir", str(one)]) == 0
    capsys.readouterr()
    assert cli.main(["report", "init-table", "--accuracy", str(one / "accuracy.csv"),
                     "--prefix", str(one / "init_table")]) == 2
    assert "more than one init" in capsys.readouterr().err
    assert not list(one.glob("init_table*"))


def test_cli_attacks_and_attack_figure(tmp_path):
    attack_frame().to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame(columns=COLUMNS).to_csv(tmp_path / "empty.csv", index=False)
    args = parser().parse_args(["report", "attacks", "--csv", str(tmp_path / "a.csv"),
                                str(tmp_path / "empty.csv"), "--out", str(tmp_path / "all.csv")])
    assert args.run(args) == 0
    args = parser().parse_args(["report", "figure", "transfer", "--input", str(tmp_path / "all.csv"),
                                "--out", str(tmp_path / "t.png")])
    assert args.run(args) == 0
    assert_png(tmp_path / "t.png")
    args = parser().parse_args(["report", "figure", "transfer", "--input", str(tmp_path / "empty.csv"),
                                "--out", str(tmp_path / "e.png")])
    with pytest.raises(UsageError, match="nothing to draw"):
        args.run(args)
    args = parser().parse_args(["report", "figure", "training", "--input", str(tmp_path / "no.csv"),
                                "--out", str(tmp_path / "x.png")])
    with pytest.raises(ValueError, match="does not exist"):
        args.run(args)
    with pytest.raises(SystemExit):
        parser().parse_args(["report", "figure", "nope", "--input", "a", "--out", "b"])


def test_a_gradient_column_of_only_true_stays_text(tmp_path):
    path = tmp_path / "pgd-true.csv"
    frame = pd.DataFrame([{c: None for c in COLUMNS}])
    frame.loc[0, ["method", "attack", "gradient", "eps", "n_images"]] = ["fa", "pgd", "true", 0.1, 10]
    frame.to_csv(path, index=False)
    assert collect.collect_attacks([path])["gradient"].tolist() == ["true"]


def test_training_figure_wraps_many_settings_into_rows():
    """The paper's study has 17 settings: their panels wrap at figures.MAX_COLUMNS a row
    instead of one figure tens of thousands of pixels wide."""
    rows = [{"dataset": "cifar10", "model": model, "optimizer": optimizer, "init": "xavier",
             "method": "bp", "seed": 0, "epoch": epoch, "val_acc1": 0.5 + 0.1 * epoch}
            for model in ("lenet_cifar", "resnet20", "resnet56")
            for optimizer in ("sgd", "adam") for epoch in (1, 2)]
    fig = figures.draw_training(pd.DataFrame(rows))
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(shown) == 6
    assert len({round(ax.get_position().y0, 3) for ax in shown}) == 2  # two rows
    assert max(sum(1 for b in shown if abs(b.get_position().y0 - a.get_position().y0) < 1e-3)
               for a in shown) == figures.MAX_COLUMNS
    assert fig.get_size_inches()[0] <= 4.6 * figures.MAX_COLUMNS + 1e-9


def test_alignment_figure_wraps_settings_into_blocks_of_metric_rows():
    rows = [{"dataset": "cifar10", "model": model, "optimizer": optimizer, "init": "xavier",
             "method": "fa", "seed": 0, "epoch": epoch, "layer": "fc",
             "weight_angle": 90 - epoch, "norm_ratio": 1.0, "gradient_angle": 80.0}
            for model in ("lenet_cifar", "resnet20", "resnet56")
            for optimizer in ("sgd", "adam") for epoch in (0, 1, 2)]
    fig = figures.draw_alignment(pd.DataFrame(rows))
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 6 * 3  # a panel per setting and metric
    titled = [ax for ax in shown if ax.get_title()]
    assert sorted(ax.get_title() for ax in titled) == sorted(
        names.setting_label("cifar10", m, o) for m in ("lenet_cifar", "resnet20", "resnet56")
        for o in ("sgd", "adam"))
    assert len(fig.axes) == 2 * 3 * figures.MAX_COLUMNS  # two blocks of three metric rows
    angles = [ax for ax in shown if ax.get_ylabel().startswith("angle(W, B)")]
    assert len(angles) == 2  # the first column of each block is labelled
