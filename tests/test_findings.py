"""The paper's findings (Sanfiz & Akrout 2021), reproduced by the quick default study.

One reduced copy of ``config/config.yaml`` (no kp, PGD only, nothing but the three tables
the assertions read) runs through the Snakemake workflow; every assertion reads the
study's output tables (``tables/accuracy.csv``, ``alignment.csv``, ``robustness.csv``),
never run folders, and compares methods with the spread of their seeds rather than
against fixed numbers:

(a) test error: bp and the sign-symmetric rules (usf, brsf, frsf) well below fa and dfa;
(b) the optimizer effect of the paper's CIFAR-10 rows (Adam helps fa and dfa) does not
    hold on digits in 10 epochs: an xfail below that says so if it ever starts to;
(c) fa's angle(W, B) falls well below 90 degrees while it trains (on digits in 10 epochs
    in the output layer only: the earlier ones stay within a few degrees of 90);
(d) gradient masking: fa and dfa resist PGD through their own feedback gradient far
    better than PGD through the true gradient.

Training and attacks are deterministic (``run.deterministic``, fixed attack seed), so the
outcome is the same on every run of the same code; the margins below are what makes it
a finding rather than the luck of three seeds.
"""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.findings

#: the reduced study: every paper method (kp is not in the paper), Adam only where (b) looks
METHODS = ["bp", "fa", "dfa", "usf", "brsf", "frsf"]
SIGN_RULES = ["usf", "brsf", "frsf"]
GOOD, POOR = ["bp", *SIGN_RULES], ["fa", "dfa"]
EPS = [0, 0.05, 0.1]
TABLES = ("accuracy", "alignment", "robustness")
#: one-sided 95 % quantiles of Student's t by degrees of freedom (no scipy needed)
T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833}


def reduced_study(config: dict) -> dict:
    """``config`` with fewer methods and attacks; epochs, seeds, optimizers, learning
    rates and layer settings stay as the quick study has them, since the findings
    depend on them."""
    config = {**config, "results": "results", "data_root": "data"}
    experiment = config["experiments"][0]
    experiment["methods"] = METHODS
    for key, optimizer in experiment["optimizers"].items():
        keep = [m for m in optimizer.get("methods", METHODS) if m in METHODS]
        if optimizer["name"] == "adam":
            keep = [m for m in keep if m in POOR]
        optimizer["methods"] = keep
        if isinstance(optimizer["lr"], dict):
            optimizer["lr"] = {m: lr for m, lr in optimizer["lr"].items()
                               if m == "default" or m in keep}
    config["attacks"].update(
        targets=[t for t in config["attacks"]["targets"] if t["optimizer"] == "sgd"],
        n_images=360, batch_size=360,
        white_box={**config["attacks"]["white_box"], "attacks": ["pgd"],
                   "gradients": ["feedback", "true"], "eps": EPS},
        square={"eps": []}, onepixel={"pixels": []}, transfer={"eps": []})
    return config


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, pd.DataFrame]:
    project = tmp_path_factory.mktemp("findings")
    shutil.copytree(ROOT / "workflow", project / "workflow")
    shutil.copytree(ROOT / "config", project / "config")
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    (project / "config" / "findings.yaml").write_text(yaml.safe_dump(reduced_study(config)))
    targets = [f"results/tables/{name}.csv" for name in TABLES]
    result = subprocess.run(["snakemake", *targets, "--cores", "2", "--configfile",
                             "config/findings.yaml"], cwd=project, capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {name: pd.read_csv(project / "results" / "tables" / f"{name}.csv",
                              dtype={"gradient": str, "optimizer": str, "method": str})
            for name in TABLES}


def errors(accuracy: pd.DataFrame, optimizer: str = "sgd") -> dict[str, np.ndarray]:
    """Test error (%) of each method's seeds under ``optimizer``, seeds in order."""
    frame = accuracy[(accuracy.optimizer == optimizer) & (accuracy.dataset == "digits")]
    assert (frame.status == "complete").all(), frame[["method", "seed", "status"]]
    return {m: 100 * g.sort_values("seed").top1_error.to_numpy()
            for m, g in frame.groupby("method")}


def pooled_sd(*samples: np.ndarray) -> float:
    """Pooled sample standard deviation of several groups."""
    dof = sum(len(s) - 1 for s in samples)
    return float(np.sqrt(sum((len(s) - 1) * np.var(s, ddof=1) for s in samples) / dof))


def t_statistic(worse: np.ndarray, better: np.ndarray) -> float:
    """Two-sample t of ``worse.mean() - better.mean()`` with the pooled standard deviation."""
    scale = pooled_sd(worse, better) * np.sqrt(1 / len(worse) + 1 / len(better))
    return float((worse.mean() - better.mean()) / scale)


def test_sign_rules_match_bp_and_beat_feedback_alignment(tables):
    """(a) bp ≈ usf, brsf, frsf < fa, dfa: every seed of a poor rule is worse than every
    seed of a good one, each poor-good difference of means passes a one-sided t-test at
    5 % (pooled over the seeds), and each sign rule lies nearer bp than fa and dfa do by
    a factor of two."""
    error = errors(tables["accuracy"])
    assert set(METHODS) <= set(error), sorted(error)
    for good in GOOD:
        for poor in POOR:
            assert error[poor].min() > error[good].max(), (poor, good, error[poor], error[good])
            dof = len(error[poor]) + len(error[good]) - 2
            assert t_statistic(error[poor], error[good]) > T95[dof], (poor, good, error[poor],
                                                                     error[good])
    bp, nearest_poor = error["bp"].mean(), min(error[m].mean() for m in POOR)
    for sign in SIGN_RULES:
        assert abs(error[sign].mean() - bp) < (nearest_poor - bp) / 2, (sign, error[sign], bp)


@pytest.mark.xfail(reason="does not hold on digits: at each rule's best Adam learning rate "
                   "fa and dfa end no better than with SGD (fa worse); strict, so the day it holds "
                   "this test fails and the README's account of it must change", strict=True)
def test_adam_helps_feedback_alignment(tables):
    """(b) the paper's CIFAR-10 rows: Adam gives fa and dfa a lower error than SGD (LeNet
    fa 46.7 -> 40.7, dfa 54.2 -> 37.6), here by a one-sided t-test at 5 % over the seeds."""
    sgd, adam = errors(tables["accuracy"], "sgd"), errors(tables["accuracy"], "adam")
    for method in POOR:
        dof = len(sgd[method]) + len(adam[method]) - 2
        assert t_statistic(sgd[method], adam[method]) > T95[dof], (method, sgd[method],
                                                                   adam[method])


def test_feedback_alignment_aligns_weights_with_feedback(tables):
    """(c) fa's angle(W, B) starts at 90 degrees (W and B independent) and falls well
    below it in the layer that aligns most (on digits the output layer; the earlier ones
    barely move in 10 epochs): in every seed to at least 5 degrees below orthogonal, by
    more than 3 standard deviations of where the seeds start (the chance level)."""
    alignment = tables["alignment"]
    fa = alignment[(alignment.method == "fa") & (alignment.optimizer == "sgd")]
    first, last = fa.epoch.min(), fa.epoch.max()
    assert first == 0 and last > 0
    angle = fa.pivot_table(index=["seed", "layer"], columns="epoch", values="weight_angle")
    start, end = angle[first].unstack("layer"), angle[last].unstack("layer")
    assert (start.sub(90).abs() < 8).all().all(), start  # independent at initialisation
    top = (start - end).mean().idxmax()
    assert (end[top] < 85).all(), (top, start[top].to_list(), end[top].to_list())
    assert ((start[top] - end[top]) > 3 * start[top].std(ddof=1)).all(), \
        (top, start[top].to_list(), end[top].to_list())


def test_feedback_gradient_masks_the_true_gradient(tables):
    """(d) at every eps > 0, fa and dfa keep more accuracy under PGD through their own
    feedback gradient than under PGD through the true gradient: in every seed with the
    two 95 % confidence intervals (Wilson, over the attacked images) apart; bp, whose
    feedback is the true gradient, shows no gap."""
    robust = tables["robustness"]
    pgd = robust[(robust.attack == "pgd") & (robust.optimizer == "sgd")]
    by = pgd.pivot_table(index=["method", "seed", "eps"], columns="gradient",
                         values=["robust_acc", "ci_low", "ci_high"])
    for method in POOR:
        for eps in EPS[1:]:
            rows = by.xs(method, level="method").xs(eps, level="eps")
            assert (rows["ci_low", "feedback"] > rows["ci_high", "true"]).all(), (method, eps, rows)
    bp = by.xs("bp", level="method")["robust_acc"]
    assert np.allclose(bp["feedback"], bp["true"]), bp
