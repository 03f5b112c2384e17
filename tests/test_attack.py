"""``biofa attack`` on small trained digits models: every attack, both gradients, transfer."""

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from biofa.study.attack import attack_run, wilson
from biofa.study.names import ATTACK_COLUMNS as COLUMNS
from biofa.study.names import ATTACKS
from biofa.study.cli import main

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


# ----------------------------------------------------------------------------- AutoAttack

#: A cheap AutoAttack: few steps and queries, so that the tests stay fast on a CPU.
CHEAP = dict(steps=3, queries=60)


@pytest.fixture(scope="module")
def autoattacked(runs):
    """AutoAttack at eps 0 and 0.1 under both gradients, on the bp and the fa run."""
    return {method: attack_run(runs / method, "autoattack", [0, 0.1], n=24, batch_size=12, **CHEAP)
            for method in ("bp", "fa")}


@pytest.mark.parametrize("method", ["bp", "fa"])
def test_autoattack_rows_under_both_gradients(autoattacked, method):
    frame = autoattacked[method]
    assert list(frame.columns) == COLUMNS and len(frame) == 4
    assert frame["gradient"].tolist() == ["feedback", "feedback", "true", "true"]
    assert (frame["attack"] == "autoattack").all() and (frame["method"] == method).all()
    assert (frame["steps"] == 3).all() and (frame["queries"] == 60).all()
    assert (frame["n_images"] == 24).all() and frame["pixels"].isna().all()
    assert (frame["robust_acc"] <= frame["clean_acc"]).all()
    assert (frame["ci_low"] <= frame["robust_acc"]).all() and (frame["robust_acc"] <= frame["ci_high"]).all()
    clean = frame[frame["eps"] == 0]
    assert (clean["robust_acc"] == clean["clean_acc"]).all()


def test_true_gradient_autoattack_lowers_a_bp_models_accuracy(autoattacked):
    bp = autoattacked["bp"].set_index(["gradient", "eps"])
    assert bp.loc[("true", 0.1), "robust_acc"] < bp.loc[("true", 0), "robust_acc"]
    # bp's feedback gradient is the true one: the same attack, the same images
    assert bp.loc[("true", 0.1), "robust_acc"] == bp.loc[("feedback", 0.1), "robust_acc"]


def test_autoattack_is_at_least_as_strong_as_its_apgd(runs):
    """AutoAttack's first attack is APGD-CE with the same steps; the others only add."""
    auto = attack_run(runs / "bp", "autoattack", [0.05], n=24, gradients=("true",), **CHEAP)
    apgd = attack_run(runs / "bp", "apgd", [0.05], n=24, gradients=("true",), steps=3)
    assert auto["robust_acc"].item() <= apgd["robust_acc"].item()


def test_autoattack_follows_the_threat_models_gradient(runs, monkeypatch):
    """Every attack inside AutoAttack computes its gradients in true_gradient mode under
    ``true`` and through the rule's feedback under ``feedback``."""
    from biofa.layers import feedback_layers
    from biofa.study import attack as attack_module

    seen = []
    build = attack_module._autoattack

    def spying(torchattacks, model, eps, **kwargs):
        atk = build(torchattacks, model, eps, **kwargs)
        for inner in atk._autoattack.attacks:
            def forward(*args, _inner=inner, _forward=inner.forward):
                modes = {bool(layer.__dict__.get("plain_backward"))
                         for _, layer in feedback_layers(model)}
                seen.append((type(_inner).__name__, modes))
                return _forward(*args)
            inner.forward = forward
        return atk

    monkeypatch.setattr(attack_module, "_autoattack", spying)
    for gradient in ("feedback", "true"):
        seen.clear()
        # eps 0.01: most images survive APGD-CE, so the later attacks run too
        attack_run(runs / "fa", "autoattack", [0.01], n=12, gradients=(gradient,), steps=2,
                   queries=20)
        assert seen and {name for name, _ in seen} <= {"APGD", "APGDT", "FAB", "Square"}
        assert all(modes == {gradient == "true"} for _, modes in seen), seen


def test_autoattack_leaves_out_an_attack_the_rule_has_no_feedback_for():
    """drtp reads its target from a cross-entropy error, so APGD-T's targeted DLR loss has
    no feedback gradient under drtp (SignalError): AutoAttack runs the other three."""
    import torch
    import torchattacks

    import biofa
    from biofa.errors import SignalError
    from biofa.models import build
    from biofa.study.attack import make_attack

    torch.manual_seed(0)
    model = build("lenet_mnist", num_classes=10, in_channels=1)
    biofa.convert(model, "drtp", input_size=(1, 32, 32))
    model.eval()
    x = torch.rand(6, 1, 32, 32)
    y = model(x).argmax(1)
    with pytest.raises(SignalError):
        torchattacks.APGDT(model, eps=0.1, steps=2)(x, y)
    atk = make_attack("autoattack", model, 0.1, steps=2, queries=10, classes=10)
    ran = []
    for inner in atk._autoattack.attacks:
        inner.forward = (lambda forward, name: lambda *a: ran.append(name) or forward(*a))(
            inner.forward, type(inner).__name__)
    adversarial = atk(x, y)
    assert adversarial.shape == x.shape and (adversarial - x).abs().max() <= 0.1 + 1e-6
    assert ran[0] == "APGD" and "APGDT" in ran  # tried, left out, and on to the next


def test_an_attack_without_feedback_for_its_loss_leaves_the_images(runs, tmp_path):
    """TPGD's KL loss under drtp's feedback (SignalError): the images stay as they are,
    while through the true gradient TPGD attacks as ever."""
    drtp = tmp_path / "drtp"
    assert main(["train", str(EXAMPLE), "--out", str(drtp), "--set", "method=drtp",
                 "--set", "optimizer.lr=0.001", "--set", "epochs=1",
                 "--set", "schedule.milestones=[1]"]) == 0
    frame = attack_run(drtp, "tpgd", [0.3], n=N).set_index("gradient")
    assert frame.loc["feedback", "robust_acc"] == frame.loc["feedback", "clean_acc"] > 0
    assert frame.loc["true", "robust_acc"] < frame.loc["true", "clean_acc"]


def test_autoattack_is_torchattacks_standard_version_with_its_budget_set():
    import torch
    import torchattacks

    from biofa.study.attack import make_attack

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    atk = make_attack("autoattack", model, 0.1, steps=7, queries=90, seed=3, classes=4)
    assert isinstance(atk, torchattacks.AutoAttack) and atk.version == "standard"
    assert atk.norm == "Linf" and atk.eps == 0.1
    inner = {type(a).__name__: a for a in atk._autoattack.attacks}
    assert list(inner) == ["APGD", "APGDT", "FAB", "Square"]
    assert [inner[name].steps for name in ("APGD", "APGDT", "FAB")] == [7, 7, 7]
    assert inner["Square"].n_queries == 90
    assert {a.seed for a in inner.values()} == {3}  # not the clock's
    # targeted attacks aim at every wrong class of a 4-class model; at most 9 (standard)
    assert inner["APGDT"].n_target_classes == inner["FAB"].n_target_classes == 3
    wide = make_attack("autoattack", model, 0.1, classes=100)
    assert {type(a).__name__: a for a in wide._autoattack.attacks}["APGDT"].n_target_classes == 9


def test_autoattack_queries_default_to_the_standard_versions(runs, tmp_path):
    out = tmp_path / "auto.csv"
    assert main(["attack", str(runs / "bp"), "--attack", "autoattack", "--eps", "0", "--n", "8",
                 "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert (frame["queries"] == 5000).all() and (frame["steps"] == 10).all()
    assert (frame["robust_acc"] == frame["clean_acc"]).all()


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


def test_rows_name_the_optimizer_so_sgd_and_adam_models_stay_apart(runs, tmp_path):
    """SGD and Adam models of one architecture are two settings, never two seeds of one."""
    from biofa.study.collect import collect_attacks

    adam = tmp_path / "adam"
    assert main(["train", str(EXAMPLE), "--out", str(adam), "--set", "method=bp",
                 "--set", "optimizer={name: adam, lr: 0.001}", "--set", "epochs=1",
                 "--set", "schedule.milestones=[1]"]) == 0
    csvs = []
    for name, run in (("sgd", runs / "bp"), ("adam", adam)):
        csvs.append(tmp_path / f"{name}.csv")
        assert main(["attack", str(run), "--attack", "pgd", "--eps", "0,0.1", "--n", str(N),
                     "--gradient", "feedback", "--out", str(csvs[-1])]) == 0
        assert pd.read_csv(csvs[-1])["optimizer"].tolist() == [name, name]
    frame = collect_attacks(csvs)
    assert list(frame.columns) == COLUMNS
    per_setting = frame.groupby(["method", "model", "dataset", "optimizer", "eps"]).size()
    assert per_setting.tolist() == [1, 1, 1, 1]  # four settings of one row, not two of two


def test_an_attack_csv_without_the_optimizer_needs_it_named(runs, tmp_path):
    from biofa.errors import UsageError
    from biofa.study.collect import collect_attacks

    old = tmp_path / "old.csv"
    attack_run(runs / "bp", "fgsm", [0.1], n=8).drop(columns="optimizer").to_csv(old, index=False)
    with pytest.raises(UsageError, match="does not say which optimizer"):
        collect_attacks([old])
    assert collect_attacks([old], optimizer="sgd")["optimizer"].tolist() == ["sgd", "sgd"]


def _other_run(runs, tmp_path, key, value):
    """A copy of the bp run whose config names another data set or architecture."""
    other = tmp_path / f"other-{key}"
    other.mkdir()
    for path in (runs / "bp").iterdir():
        (other / path.name).write_bytes(path.read_bytes())
    config = yaml.safe_load((other / "config.yaml").read_text())
    config[key] = value
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    return other


@pytest.mark.parametrize("arguments, message", [
    (["--attack", "pgd", "--eps", "0,1.5"], "each must lie in [0, 1], got [0.0, 1.5]"),
    (["--attack", "pgd", "--eps", "-0.1"], "each must lie in [0, 1]"),
    (["--attack", "pgd"], "give at least one strength"),
    (["--attack", "pgd", "--eps", "0.1", "--n", "0"], "--n must be a whole number of at least 1, got 0"),
    (["--attack", "pgd", "--eps", "0.1", "--n", "361"], "--n 361 is more than the 360 test images of digits; give --n 360 or fewer"),
    (["--attack", "pgd", "--eps", "0.1", "--steps", "0"], "--steps must be a whole number of at least 1"),
    (["--attack", "square", "--eps", "0.1", "--queries", "0"], "--queries must be a whole number of at least 1"),
    (["--attack", "pgd", "--eps", "0.1", "--batch-size", "-4"], "--batch-size must be a whole number of at least 1"),
    (["--attack", "pgd", "--eps", "0.1", "--gradient", "feedbak"], "unknown gradient(s) ['feedbak']"),
    (["--attack", "onepixel", "--pixels", "1.5"], "pixels must be whole numbers"),
    (["--attack", "transfer", "--eps", "0.1"], "--source BP_RUN_DIR"),
    (["--attack", "transfer", "--eps", "0.1", "--source", "{other-dataset}"],
     "has dataset 'mnist', the target 'digits'; craft the examples on a bp run of the same dataset"),
    (["--attack", "transfer", "--eps", "0.1", "--source", "{other-model}"],
     "has model 'resnet20', the target 'lenet_mnist'"),
    (["--attack", "transfer", "--eps", "0.1", "--source", "{missing}"], "holds no trained run"),
])
def test_bad_attack_options_are_one_named_error_and_write_nothing(runs, tmp_path, capsys,
                                                                  arguments, message):
    others = {"{other-dataset}": lambda: _other_run(runs, tmp_path, "dataset", "mnist"),
              "{other-model}": lambda: _other_run(runs, tmp_path, "model", "resnet20"),
              "{missing}": lambda: tmp_path / "missing"}
    arguments = [str(others[a]()) if a in others else a for a in arguments]
    out = tmp_path / "out.csv"
    assert main(["attack", str(runs / "fa"), *arguments, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("biofa attack: error: "), err
    assert message in err[0]
    assert not out.exists()


# ----------------------------------------------------------------------------- a study's plan

CONFIG = EXAMPLE.parents[1]


def _section(name):
    return yaml.safe_load((CONFIG / name).read_text())["attacks"]


def test_the_plan_of_the_quick_study():
    """config/config.yaml: its white-box attacks through both gradients, Square, and transfer
    with the white-box steps; an attack whose strengths are empty (onepixel there) is left out."""
    from biofa.study.attack import plan, plan_files

    section = _section("config.yaml")
    white = section["white_box"]
    expected = {(attack, gradient): {"eps": white["eps"], "steps": white["steps"]}
                for attack in white["attacks"] for gradient in white["gradients"]}
    if section["square"]["eps"]:
        expected["square", "none"] = {"eps": section["square"]["eps"],
                                      "queries": section["square"]["queries"]}
    if section["onepixel"]["pixels"]:
        expected["onepixel", "none"] = {"pixels": section["onepixel"]["pixels"]}
    if section["transfer"]["eps"]:
        expected["transfer", "transfer"] = {"eps": section["transfer"]["eps"], "steps": white["steps"]}
    assert plan(section) == expected and list(plan(section)) == list(expected)
    assert ("pgd", "true") in expected and len(expected) >= 3  # the file still plans attacks
    assert plan_files(section) == [f"{a}-{g}.csv" for a, g in expected]


def test_the_plan_of_the_paper_study():
    from biofa.study.attack import plan, plan_files
    from biofa.study.names import FIXED_THREAT_MODEL, GRADIENTS, WHITE_BOX

    section = _section("paper.yaml")
    planned = plan(section)
    white = section["white_box"]
    auto = section["autoattack"]
    assert list(planned) == ([(a, g) for a in white["attacks"] for g in white["gradients"]]
                             + [("autoattack", g) for g in auto["gradients"]]
                             + list(FIXED_THREAT_MODEL.items()))
    assert tuple(auto["gradients"]) == GRADIENTS and auto["eps"] == white["eps"]
    for gradient in GRADIENTS:  # torchattacks' standard settings, on every attacked image
        assert planned["autoattack", gradient] == {"eps": white["eps"], "steps": 10,
                                                    "queries": 5000}
    assert set(white["attacks"]) == set(WHITE_BOX) and tuple(white["gradients"]) == GRADIENTS
    for attack in WHITE_BOX:
        assert planned[attack, "true"] == {"eps": white["eps"], "steps": white["steps"]}
    assert planned["square", "none"] == section["square"]
    assert planned["onepixel", "none"] == {"pixels": [1, 2, 3, 4, 5]}
    assert planned["transfer", "transfer"] == {**section["transfer"], "steps": white["steps"]}
    assert plan_files(section) == [f"{a}-{g}.csv" for a, g in planned]


def test_the_plan_fills_defaults_and_leaves_out_attacks_without_strengths():
    from biofa.study.attack import plan as planned
    from biofa.study.study_config import validate_attacks

    def plan(section):
        return planned(validate_attacks(section))

    section = {"white_box": {"attacks": ["fgsm"], "eps": [0.1], "steps": 3},
               "square": {"eps": [0.1]}, "onepixel": {"pixels": []}, "transfer": {"eps": []}}
    assert plan(section) == {("fgsm", "feedback"): {"eps": [0.1], "steps": 3},
                             ("fgsm", "true"): {"eps": [0.1], "steps": 3},
                             ("square", "none"): {"eps": [0.1], "queries": 50}}
    assert plan({}) == {}
    assert plan({"white_box": {"attacks": ["pgd"], "gradients": [], "eps": [0.1]}}) == {}
    assert section["square"] == {"eps": [0.1]}  # the caller's section is not changed


@pytest.mark.parametrize("section, message", [
    ({"white_box": {"attacks": ["pgd"], "epss": [0.1]}},
     "unknown config key 'attacks.white_box.epss'; allowed keys under 'attacks.white_box': "
     "attacks, gradients, eps, steps"),
    ({"white_box": {"attacks": ["cw"], "eps": [0.1]}},
     "config key 'attacks.white_box.attacks[0]': got \"cw\"; allowed: one of fgsm, pgd, tpgd, apgd"),
    ({"square": {"eps": [0.1], "queries": 0}},
     "config key 'attacks.square.queries': got 0; allowed: an integer >= 1"),
    ({"transfer": {"eps": [2]}}, "config key 'attacks.transfer.eps[0]': got 2"),
    ({"white_box": {"attacks": ["pgd"]}}, "config key 'attacks.white_box.eps' is missing"),
    ([1, 2], "an attacks section is a mapping"),
    ({"n_images": 10, "autoattack": {"eps": [0.1], "n_images": 20}},
     "config key 'attacks.autoattack.n_images': got 20, more than the 10 of attacks.n_images"),
    ({"autoattack": {"eps": [0.1], "queries": 0}},
     "config key 'attacks.autoattack.queries': got 0; allowed: an integer >= 1"),
])
def test_a_bad_plan_is_one_named_error(runs, tmp_path, capsys, section, message):
    from biofa.errors import ConfigError
    from biofa.study.study_config import validate_attacks

    with pytest.raises(ConfigError, match="^" + __import__("re").escape(message)):
        validate_attacks(section)
    path = tmp_path / "attacks.yaml"
    path.write_text(yaml.safe_dump(section))
    out = tmp_path / "out"
    assert main(["attack", str(runs / "bp"), "--plan", str(path), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"biofa attack: error: {path}"), err
    assert message in err[0] and not out.exists()


@pytest.mark.parametrize("arguments, message", [
    (["--plan", "{plan}", "--out-dir", "{out}"], "--source BP_RUN_DIR"),
    (["--plan", "{plan}", "--out-dir", "{out}", "--source", "{bp}", "--eps", "0.1"],
     "--plan takes each attack's options from ATTACKS.yaml; drop --eps"),
    (["--plan", "{plan}", "--source", "{bp}"], "give --out-dir DIR"),
    (["--plan", "{plan}", "--attack", "pgd", "--out-dir", "{out}"], "not both"),
    (["--out", "{out}"], "not neither"),
    (["--plan", "{missing}", "--out-dir", "{out}"], "does not exist; give a YAML file holding a "
                                                    "study's attacks: section"),
    (["--attack", "pgd", "--eps", "0.1", "--out-dir", "{out}"], "give --out FILE.csv"),
    (["--plan", "{plan}", "--out-dir", "{out}", "--source", "{bp}", "--n", "361"],
     "--n 361 is more than the 360 test images"),
])
def test_bad_plan_options_are_one_named_error(runs, tmp_path, capsys, arguments, message):
    path = tmp_path / "attacks.yaml"
    path.write_text(yaml.safe_dump({"white_box": {"attacks": ["fgsm"], "eps": [0.1]},
                                    "transfer": {"eps": [0.1]}}))
    names = {"{plan}": path, "{out}": tmp_path / "out", "{bp}": runs / "bp",
             "{missing}": tmp_path / "missing.yaml"}
    arguments = [str(names.get(a, a)) for a in arguments]
    assert main(["attack", str(runs / "fa"), *arguments]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_plan_writes_what_each_single_attack_writes(runs, tmp_path, capsys):
    """One process, the model loaded once: the same bytes as one command per attack."""
    from biofa.study.attack import plan
    from biofa.study.study_config import validate_attacks

    section = {"n_images": 12, "batch_size": 6, "seed": 3,
               "white_box": {"attacks": ["pgd", "apgd"], "eps": [0, 0.1], "steps": 3},
               "square": {"eps": [0, 0.2], "queries": 20}, "onepixel": {"pixels": [0, 1]},
               "transfer": {"eps": [0, 0.1]}}
    path = tmp_path / "attacks.yaml"
    path.write_text(yaml.safe_dump({"attacks": section}))  # a study's section, under its key
    out = tmp_path / "plan"
    assert main(["attack", str(runs / "fa"), "--plan", str(path), "--out-dir", str(out),
                 "--source", str(runs / "bp"), "--batch-size", "4"]) == 0
    planned = plan(validate_attacks(section))
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{a}-{g}.csv" for a, g in planned)
    assert capsys.readouterr().out.split() == [str(out / f"{a}-{g}.csv") for a, g in planned]
    for (attack, gradient), options in planned.items():  # as the workflow called each one
        single = tmp_path / f"single-{attack}-{gradient}.csv"
        arguments = [f"--{key} {','.join(map(str, value)) if isinstance(value, list) else value}"
                     for key, value in options.items()]
        if gradient in ("feedback", "true"):
            arguments.append(f"--gradient {gradient}")
        if attack == "transfer":
            arguments.append(f"--source {runs / 'bp'}")
        assert main(["attack", str(runs / "fa"), "--attack", attack,
                     *" ".join(arguments).split(), "--n", "12", "--batch-size", "4",
                     "--seed", "3", "--out", str(single)]) == 0
        assert (out / f"{attack}-{gradient}.csv").read_bytes() == single.read_bytes(), attack
    frame = pd.read_csv(out / "transfer-transfer.csv")
    assert frame["source"].tolist() == [str(runs / "bp")] * 2 and (frame["n_images"] == 12).all()
    assert pd.read_csv(out / "pgd-true.csv", dtype=str)["gradient"].tolist() == ["true", "true"]


def test_a_plan_runs_autoattack_on_its_own_images(runs, tmp_path):
    """autoattack.n_images: AutoAttack on the first of the attacked images, under each of its
    gradients, with its steps and queries; the other attacks keep attacks.n_images."""
    from biofa.study.attack import run_plan
    from biofa.study.study_config import validate_attacks

    section = validate_attacks({
        "n_images": 12, "batch_size": 6,
        "white_box": {"attacks": ["pgd"], "eps": [0, 0.1], "steps": 3},
        "autoattack": {"eps": [0, 0.1], "gradients": ["true"], "n_images": 6, **CHEAP}})
    written = run_plan(runs / "bp", section, tmp_path)
    assert [p.name for p in written] == ["pgd-feedback.csv", "pgd-true.csv", "autoattack-true.csv"]
    auto = pd.read_csv(tmp_path / "autoattack-true.csv", dtype={"gradient": str})
    assert (auto["n_images"] == 6).all() and (auto["queries"] == 60).all()
    assert (auto["steps"] == 3).all() and auto["gradient"].tolist() == ["true", "true"]
    single = attack_run(runs / "bp", "autoattack", [0, 0.1], n=6, batch_size=6,
                        gradients=("true",), **CHEAP)
    numbers = ["eps", "n_images", "clean_acc", "robust_acc", "ci_low", "ci_high"]
    pd.testing.assert_frame_equal(auto[numbers], single[numbers], check_dtype=False)
    assert (pd.read_csv(tmp_path / "pgd-true.csv")["n_images"] == 12).all()


def test_threads_option_sets_torchs_threads_and_refuses_nonsense(capsys):
    import torch

    from biofa.study.cli import main

    before = torch.get_num_threads()
    try:
        # parsed and applied before the run folder is looked at
        assert main(["attack", "/nonexistent", "--plan", "/nonexistent.yaml", "--out-dir", "x",
                     "--threads", "1"]) == 2
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit) as error:
        main(["attack", "DIR", "--attack", "pgd", "--threads", "0", "--out", "x.csv"])
    assert error.value.code == 2
    assert "expected a whole number >= 1, got '0'" in capsys.readouterr().err
