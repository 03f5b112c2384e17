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

from biofa import figures, report
from biofa.attack import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "config" / "reference" / "paper_results.csv"
ROBUSTNESS = ROOT / "config" / "reference" / "paper_robustness.csv"
LAYERS = ["conv1", "conv2", "fc1", "fc2", "fc3"]


def make_run(root, dataset="cifar10", model="resnet20", method="bp", seed=0, optimizer="sgd",
             error=0.1, status="complete", epochs=3, test=True):
    """A run folder as biofa train + biofa evaluate leave it."""
    run = root / f"{dataset}-{model}-{optimizer}-{method}-{seed}"
    run.mkdir(parents=True)
    config = {"dataset": dataset, "model": model, "method": method, "seed": seed,
              "optimizer": {"name": optimizer, "lr": 0.1}, "epochs": epochs}
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


def attack_frame(methods=("bp", "fa", "dfa", "kp"), seeds=(0, 1)):
    rows = []
    base = dict(model="resnet20", dataset="cifar10", n_images=500, steps=10, source="")
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
    frames = report.collect_runs(runs)
    accuracy = frames["accuracy"]
    assert list(accuracy.columns[:11]) == ["dataset", "model", "optimizer", "method", "seed",
                                           "status", "epochs_done", "best_epoch", "top1_error",
                                           "n_images", "in_paper"]
    assert len(accuracy) == len(runs)
    fa1 = accuracy[(accuracy.method == "fa") & (accuracy.seed == 1)].iloc[0]
    assert fa1.status == "diverged" and fa1.epochs_done == 2 and fa1.optimizer == "sgd"
    assert not accuracy.set_index("method").loc["kp", "in_paper"]
    assert accuracy.set_index("method").loc["dfa", "in_paper"]

    training = frames["training"]
    assert list(training.columns[:5]) == report.KEYS
    assert len(training) == 3 * 7 + 2  # 7 complete runs x 3 epochs, the diverged one 2
    alignment = frames["alignment"]
    assert list(alignment.columns[:5]) == report.KEYS
    assert len(alignment) == (4 * 7 + 3) * len(LAYERS)
    assert alignment.loc[alignment.method == "dfa", "weight_angle"].isna().all()


def test_collect_accepts_files_inside_runs_and_writes_csvs(runs, tmp_path):
    frames = report.collect_runs([run / "test.json" for run in runs[:2]])
    assert list(frames["accuracy"].seed) == [0, 1]
    paths = report.write_collected(frames, tmp_path / "out")
    assert [p.name for p in paths] == ["accuracy.csv", "training.csv", "alignment.csv"]
    assert len(pd.read_csv(paths[0])) == 2


def test_missing_test_json_names_run_and_fix(tmp_path):
    run = make_run(tmp_path, test=False)
    with pytest.raises(ValueError, match=rf"{run}.*biofa evaluate {run}"):
        report.collect_runs([run])


def test_same_setting_twice_is_refused(tmp_path):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b")
    with pytest.raises(ValueError, match="same setting"):
        report.collect_runs([a, b])


def test_collect_attacks_concatenates(tmp_path):
    frame = attack_frame()
    frame.iloc[:10].to_csv(tmp_path / "a.csv", index=False)
    frame.iloc[10:].to_csv(tmp_path / "b.csv", index=False)
    pd.DataFrame(columns=COLUMNS).to_csv(tmp_path / "empty.csv", index=False)
    both = report.collect_attacks([tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "empty.csv"])
    assert len(both) == len(frame) and list(both.columns) == COLUMNS
    tagged = report.collect_attacks([tmp_path / "a.csv"], optimizer="sgd")
    assert (tagged.optimizer == "sgd").all()
    with pytest.raises(ValueError, match="does not exist"):
        report.collect_attacks([tmp_path / "nope.csv"])


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
    assert len(robust) == 18 and set(robust.attack) == {"square", "onepixel"}


def test_error_table_cells(runs):
    accuracy = report.collect_runs(runs)["accuracy"]
    table = report.error_table(accuracy, REFERENCE)
    assert list(table.index) == ["bp", "fa", "dfa", "usf", "kp (not in paper)"]
    assert list(table.columns) == ["Digits LeNet SGD", "MNIST LeNet SGD", "CIFAR-10 ResNet-20 SGD"]
    column = table["CIFAR-10 ResNet-20 SGD"]
    assert column["bp"] == "11.00 ± 1.41 (8.63)"
    assert column["fa"] == "30.00 (32.16) [1/2 diverged]"
    assert column["dfa"] == "40.00 (45.94)"
    assert column["kp (not in paper)"] == "11.00 (—)"
    assert column["usf"] == "— (10.05)"  # not run here: the published number only
    assert table.loc["bp", "Digits LeNet SGD"] == "5.00 (—)"
    assert table.loc["usf", "MNIST LeNet SGD"] == "1.00 (0.94)"


def test_all_seeds_diverged_and_other_optimizer_reference(tmp_path):
    root = tmp_path / "runs"
    runs = [make_run(root, method="fa", seed=s, status="diverged", error=0.9) for s in (0, 1)]
    runs.append(make_run(root, dataset="imagenet", model="resnet18", method="dfa", error=0.8))
    table = report.error_table(report.collect_runs(runs)["accuracy"], REFERENCE)
    assert table.loc["fa", "CIFAR-10 ResNet-20 SGD"] == "diverged (32.16) [2/2 diverged]"
    assert table.loc["dfa", "ImageNet ResNet-18 SGD"] == "80.00 (82.45, Adam)"


def test_write_table(runs, tmp_path):
    table = report.error_table(report.collect_runs(runs)["accuracy"], REFERENCE)
    paths = report.write_table(table, tmp_path / "tables" / "error_table")
    assert [p.name for p in paths] == ["error_table.md", "error_table.tex", "error_table.csv"]
    for path in paths:
        text = path.read_text()
        for method in ("bp", "fa", "dfa", "usf", "kp (not in paper)"):
            assert method in text
    assert "11.00 ± 1.41 (8.63)" in paths[0].read_text()
    assert r"11.00 $\pm$ 1.41 (8.63)" in paths[1].read_text()
    assert r"\begin{tabular}" in paths[1].read_text()
    assert pd.read_csv(paths[2]).columns[0] == "method"


# ----------------------------------------------------------------------------- figures

def test_run_figures(runs, tmp_path):
    frames = report.collect_runs(runs)
    assert_png(figures.fig_training(frames["training"], tmp_path / "training.png"))
    assert_png(figures.fig_alignment(frames["alignment"], tmp_path / "alignment.png"))
    assert_png(figures.fig_alignment_layers(frames["alignment"], tmp_path / "layers.png"))


def test_attack_figures(tmp_path):
    frame = attack_frame()
    assert_png(figures.fig_robustness(frame, tmp_path / "robustness.png", reference=ROBUSTNESS))
    assert_png(figures.fig_onepixel(frame, tmp_path / "onepixel.png", reference=ROBUSTNESS))
    assert_png(figures.fig_transfer(frame, tmp_path / "transfer.png"))


@pytest.mark.parametrize("name", report.FIGURE_NAMES)
def test_figures_from_empty_frames(tmp_path, name):
    empty = pd.DataFrame(columns=COLUMNS if name in ("robustness", "onepixel", "transfer")
                         else report.KEYS)
    assert_png(figures.FIGURES[name](empty, tmp_path / f"{name}.png"))


# ----------------------------------------------------------------------------- CLI hook

def parser():
    top = argparse.ArgumentParser(prog="biofa")
    sub = top.add_subparsers(dest="command", required=True)
    report.add_commands(sub)
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


def test_cli_attacks_and_attack_figure(tmp_path):
    attack_frame().to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame(columns=COLUMNS).to_csv(tmp_path / "empty.csv", index=False)
    args = parser().parse_args(["report", "attacks", "--csv", str(tmp_path / "a.csv"),
                                str(tmp_path / "empty.csv"), "--out", str(tmp_path / "all.csv")])
    assert args.run(args) == 0
    args = parser().parse_args(["report", "figure", "transfer", "--input", str(tmp_path / "empty.csv"),
                                "--out", str(tmp_path / "t.png")])
    assert args.run(args) == 0
    assert_png(tmp_path / "t.png")
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
    assert report.collect_attacks([path])["gradient"].tolist() == ["true"]
