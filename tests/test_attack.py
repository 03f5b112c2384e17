"""``biofa attack`` on small trained digits models: every attack, both gradients, transfer."""

import math
from pathlib import Path

import pandas as pd
import pytest

from biofa.attack import ATTACKS, COLUMNS, attack_run, wilson
from biofa.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "examples" / "digits_lenet.yaml"
N = 60


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A bp and an fa LeNet trained for 4 epochs on digits."""
    root = tmp_path_factory.mktemp("runs")
    for method, lr in (("bp", 0.01), ("fa", 0.001)):
        assert main(["train", str(EXAMPLE), "--out", str(root / method), "--set", f"method={method}",
                     "--set", f"optimizer.lr={lr}", "--set", "epochs=4",
                     "--set", "schedule.milestones=[3]"]) == 0
    return root


def test_wilson_interval_matches_the_formula():
    low, high = wilson(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == pytest.approx(1.0)


@pytest.mark.parametrize("attack", [a for a in ATTACKS if a != "onepixel"])
def test_every_attack_lowers_accuracy_and_never_raises_it(runs, attack, tmp_path):
    out = tmp_path / f"{attack}.csv"
    extra = ["--source", str(runs / "bp")] if attack == "transfer" else []
    assert main(["attack", str(runs / "bp"), "--attack", attack, "--eps", "0,0.3", "--n", str(N),
                 "--out", str(out), "--queries", "200", *extra]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == COLUMNS
    assert (frame["n_images"] == N).all()
    assert (frame["robust_acc"] <= frame["clean_acc"]).all()
    assert (frame["ci_low"] <= frame["robust_acc"]).all() and (frame["robust_acc"] <= frame["ci_high"]).all()
    clean = frame[frame["eps"] == 0]
    assert (clean["robust_acc"] == clean["clean_acc"]).all()
    strong = frame[frame["eps"] == 0.3]
    assert (strong["robust_acc"] < 0.5 * strong["clean_acc"]).all(), strong
    expected = {"transfer": {"transfer"}, "square": {"none"}}.get(attack, {"feedback", "true"})
    assert set(frame["gradient"]) == expected


def test_onepixel_counts_pixels(runs):
    frame = attack_run(runs / "bp", "onepixel", [0, 5], n=8, batch_size=8)
    assert frame["pixels"].tolist() == [0, 5] and frame["eps"].isna().all()
    assert frame["robust_acc"].iloc[1] <= frame["robust_acc"].iloc[0] == frame["clean_acc"].iloc[0]


def test_feedback_and_true_gradients_differ_for_fa_and_agree_for_bp(runs):
    fa = attack_run(runs / "fa", "pgd", [0.1], n=N).set_index("gradient")["robust_acc"]
    bp = attack_run(runs / "bp", "pgd", [0.1], n=N).set_index("gradient")["robust_acc"]
    assert bp["feedback"] == bp["true"]
    assert fa["true"] < fa["feedback"]  # FA's own gradient is a weaker attack: gradient masking


def test_transfer_uses_the_source_models_examples(runs):
    white = attack_run(runs / "bp", "pgd", [0.1], n=N, gradients=("feedback",))
    transfer = attack_run(runs / "bp", "transfer", [0.1], n=N, source=runs / "bp")
    assert transfer["robust_acc"].item() == white["robust_acc"].item()
    onto_fa = attack_run(runs / "fa", "transfer", [0.1], n=N, source=runs / "bp")
    assert onto_fa["method"].item() == "fa" and onto_fa["source"].item() == str(runs / "bp")


def test_attacks_are_deterministic(runs):
    first = attack_run(runs / "fa", "apgd", [0.1], n=N)
    second = attack_run(runs / "fa", "apgd", [0.1], n=N)
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.parametrize("kwargs, message", [
    (dict(attack="transfer", strengths=[0.1]), "--source BP_RUN_DIR"),
    (dict(attack="pgd", strengths=[0.1], gradients=("feedbak",)), "unknown gradient"),
    (dict(attack="pgd", strengths=[1.5]), "must lie in \\[0, 1\\]"),
    (dict(attack="onepixel", strengths=[1.5]), "whole numbers"),
    (dict(attack="cw", strengths=[0.1]), "unknown attack 'cw'"),
    (dict(attack="pgd", strengths=[0.1], n=10_000), "more than the 360 test images"),
])
def test_bad_requests_are_explained(runs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        attack_run(runs / "fa", **{"n": N, **kwargs})


def test_missing_checkpoint_fails_cleanly(tmp_path, capsys):
    out = tmp_path / "a.csv"
    assert main(["attack", str(tmp_path / "none"), "--attack", "pgd", "--eps", "0.1",
                 "--out", str(out)]) == 2
    assert "train it first" in capsys.readouterr().err and not out.exists()
    assert math.isnan(wilson(0, 0)[0])
