"""``biofa train`` / ``biofa evaluate`` on the bundled digits: outputs, strictness, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import biofa
from biofa.study.cli import main
from run_configs import write_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "examples" / "digits_lenet.yaml"


@pytest.mark.parametrize("changes, message", [
    ({"optimizer.lrr": 0.1}, "unknown config key 'optimizer.lrr'; allowed keys under 'optimizer': "
                             "betas, fused, lr, momentum, name, nesterov, weight_decay"),
    ({"optimizer.lr": -0.1}, "config key 'optimizer.lr': -0.1 is less than or equal to the minimum of 0"),
    ({"method": "dfaa"}, "config key 'method': 'dfaa' is not allowed; allowed values: bp, brsf, dfa, dkp, drtp, fa, frsf, kp, usf, wm; did you mean 'dfa'?"),
    ({"epochs": 3, "schedule.milestones": [2, 5]}, "config key 'schedule.milestones': [5] lie beyond epochs=3"),
    ({"batch_size": "64"}, "config key 'batch_size': '64' is not of type 'integer'"),
    ({"dataset": "minst"}, "allowed values: cifar10, cifar100, digits, fashion_mnist, imagenet, mnist"),
])
def test_bad_config_names_the_key_and_writes_nothing(tmp_path, capsys, changes, message):
    out = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path, **changes)), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_missing_config_and_missing_run_are_explained(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "r")]) == 2
    assert "train it first" in capsys.readouterr().err


@pytest.mark.parametrize("method", sorted(biofa.METHODS))
def test_two_epochs_of_lenet_on_digits(tmp_path, method):
    out = tmp_path / method
    lr = 0.001 if method in ("fa", "dfa", "kp") else 0.01  # as config/examples/digits_lenet.yaml
    started = time.perf_counter()
    assert main(["train", str(EXAMPLE), "--out", str(out), "--set", f"method={method}",
                 "--set", f"optimizer.lr={lr}", "--set", "epochs=2",
                 "--set", "schedule.milestones=[1]"]) == 0
    assert time.perf_counter() - started < 60
    assert sorted(p.name for p in out.iterdir()) == [
        ".lock", "alignment.csv", "best.pt", "config.yaml", "last.pt", "metrics.csv", "run.json",
        "status.json"]
    (session,) = json.loads((out / "run.json").read_text())["sessions"]
    assert session["biofa"] == biofa.__version__ and session["torch"] == torch.__version__
    assert session["ended_as"] == "complete" and session["started"] <= session["ended"]
    assert session["device"].startswith("cpu") and session["host"]
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2]
    assert metrics["lr"].tolist() == pytest.approx([lr, lr / 10])
    assert ((metrics["val_acc1"] >= 0) & (metrics["val_acc1"] <= metrics["val_acc5"])).all()
    alignment = pd.read_csv(out / "alignment.csv")
    assert sorted(alignment["epoch"].unique()) == [0, 1, 2]
    assert sorted(alignment["layer"].unique()) == ["net.conv1", "net.conv2", "net.fc1", "net.fc2", "net.fc3"]
    assert alignment.loc[alignment["layer"] == "net.fc3", "gradient_angle"].abs().max() < 1e-2
    if method == "bp":
        assert alignment["weight_angle"].abs().max() < 1e-2
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "complete" and status["epoch"] == 2
    assert yaml.safe_load((out / "config.yaml").read_text())["method"] == method

    assert main(["evaluate", str(out)]) == 0
    test = json.loads((out / "test.json").read_text())
    assert test["n_images"] == 360 and test["top1_error"] == pytest.approx(1 - test["top1_acc"])
    assert 0.0 <= test["top1_error"] <= 1.0


def _state(out):
    return torch.load(out / "last.pt", map_location="cpu", weights_only=True)["model"]


def test_killed_run_resumes_to_the_same_numbers(tmp_path):
    """SIGKILL mid-run, run again: metrics and weights equal an uninterrupted run, bit for bit."""
    config = write_config(tmp_path, method="brsf", epochs=4, **{"schedule.milestones": [3]})
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main(["train", str(config), "--out", str(straight)]) == 0

    command = [sys.executable, "-m", "biofa.study.cli", "train", str(config), "--out", str(killed)]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not (killed / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert (killed / "last.pt").exists()
    epoch_at_kill = torch.load(killed / "last.pt", weights_only=True)["epoch"]
    assert epoch_at_kill < 4

    assert main(["train", str(config), "--out", str(killed)]) == 0
    a, b = pd.read_csv(straight / "metrics.csv"), pd.read_csv(killed / "metrics.csv")
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    pd.testing.assert_frame_equal(pd.read_csv(straight / "alignment.csv"),
                                  pd.read_csv(killed / "alignment.csv"))
    for key, value in _state(straight).items():
        assert torch.equal(value, _state(killed)[key]), key
    # a finished run is not trained again
    before = (killed / "last.pt").stat().st_mtime_ns
    assert main(["train", str(config), "--out", str(killed)]) == 0
    assert (killed / "last.pt").stat().st_mtime_ns == before


@pytest.mark.parametrize("method", ["fa", "brsf"])
def test_a_run_stopped_between_epochs_resumes_to_the_same_numbers(tmp_path, monkeypatch, method):
    """A stop signal while an epoch is validated: the run resumes from that epoch's
    last.pt, whose weights validation's forward pass had already constrained; the
    constraint is not applied a second time (bit for bit, as the quick study trains)."""
    from contextlib import contextmanager

    import biofa.study.train as train_module

    config = write_config(tmp_path, method=method, epochs=3, **{
        "schedule.milestones": [2], "layer.constrain_weights": True, "optimizer.lr": 0.003})
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main(["train", str(config), "--out", str(straight)]) == 0

    caught: list[int] = []
    validate = train_module.evaluate_model

    def validate_then_signal(*args, **kwargs):
        result = validate(*args, **kwargs)
        caught.append(signal.SIGTERM)  # as if it came while epoch 1 was validated
        return result

    @contextmanager
    def these_signals():
        yield caught

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "evaluate_model", validate_then_signal)
        patch.setattr(train_module, "_stop_on_signals", these_signals)
        assert main(["train", str(config), "--out", str(stopped)]) == train_module.STOPPED_EXIT
    last = torch.load(stopped / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and "partial" not in last
    assert all(constrained for constrained, _ in last["chores"])  # validation constrained W
    assert main(["train", str(config), "--out", str(stopped)]) == 0
    a, b = pd.read_csv(straight / "metrics.csv"), pd.read_csv(stopped / "metrics.csv")
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    for key, value in _state(straight).items():
        assert torch.equal(value, _state(stopped)[key]), key


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_the_optimiser_is_fused_unless_the_config_says_otherwise(name):
    from biofa.study.config import validate
    from biofa.study.train import make_optimizer

    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    biofa.convert(net, "kp")
    base = yaml.safe_load(EXAMPLE.read_text())
    base["optimizer"] = {"name": name, "lr": 0.1}
    fused = make_optimizer(validate(base), net)
    assert fused.defaults["fused"] is True and len(fused.param_groups[0]["params"]) == 3
    base["optimizer"]["fused"] = False
    assert not make_optimizer(validate(base), net).defaults["fused"]


def test_a_changed_config_is_not_mixed_into_an_old_run(tmp_path, capsys):
    out = tmp_path / "run"
    config = write_config(tmp_path, epochs=1, **{"schedule.milestones": [1]})
    assert main(["train", str(config), "--out", str(out)]) == 0
    assert main(["train", str(config), "--out", str(out), "--set", "seed=1"]) == 2
    assert "different config" in capsys.readouterr().err


def test_divergence_is_recorded_and_the_run_still_completes(tmp_path):
    out = tmp_path / "run"
    config = write_config(tmp_path, method="fa", epochs=3, **{"optimizer.lr": 1.0e6,
                                                              "schedule.milestones": [2]})
    assert main(["train", str(config), "--out", str(out)]) == 0
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "diverged" and status["epoch"] == 1
    assert status["best_epoch"] == 0
    assert main(["evaluate", str(out)]) == 0
    assert json.loads((out / "test.json").read_text())["status"] == "diverged"


#: Learning rates of the digits example per method, as in the paper's LeNet settings:
#: FA, DFA and KP (which starts as FA) need a smaller step than backprop and the sign rules.
DIGITS_LR = {"bp": 0.01, "usf": 0.01, "brsf": 0.01, "frsf": 0.01, "kp": 0.001, "fa": 0.001, "dfa": 0.001}


def test_ten_epochs_on_digits_order_the_methods_as_the_paper(tmp_path):
    """Every method learns (well below 90% chance error); the W-tracking rules beat FA and DFA."""
    errors = {}
    for method, lr in DIGITS_LR.items():
        out = tmp_path / method
        assert main(["train", str(EXAMPLE), "--out", str(out), "--set", f"method={method}",
                     "--set", f"optimizer.lr={lr}", "--set", "epochs=10"]) == 0
        assert main(["evaluate", str(out)]) == 0
        errors[method] = json.loads((out / "test.json").read_text())["top1_error"]
    print("digits test error after 10 epochs:", {m: round(e, 3) for m, e in errors.items()})
    assert all(error < 0.5 for error in errors.values()), errors
    assert max(errors[m] for m in ("bp", "usf", "brsf", "frsf", "kp")) < min(errors["fa"], errors["dfa"]), errors


def test_deleted_outputs_of_a_finished_run_come_back_unchanged(tmp_path):
    out = tmp_path / "run"
    config = write_config(tmp_path, epochs=2, **{"schedule.milestones": [1]})
    assert main(["train", str(config), "--out", str(out)]) == 0
    saved = {name: (out / name).read_bytes() for name in ("metrics.csv", "alignment.csv", "status.json")}
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    for name in [*saved, "best.pt"]:
        (out / name).unlink()
    assert main(["train", str(config), "--out", str(out)]) == 0
    assert all((out / name).read_bytes() == content for name, content in saved.items())
    restored = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    assert restored["epoch"] == best["epoch"]
    assert all(torch.equal(v, restored["model"][k]) for k, v in best["model"].items())


@pytest.mark.parametrize("method, fixed", [("dfa", "feedback_weight"), ("fa", "feedback_weight"),
                                           ("frsf", "feedback_magnitude")])
def test_the_best_epochs_snapshot_shares_the_fixed_feedback(tmp_path, method, fixed):
    """last.pt holds the model and the best epoch's weights: a fixed B is stored once (DFA's
    B for ResNet-18 on ImageNet is 8.7 GB), everything training changes is its own copy."""
    out = tmp_path / "run"
    config = write_config(tmp_path, method=method, epochs=2, **{"schedule.milestones": [1]})
    assert main(["train", str(config), "--out", str(out)]) == 0
    last = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    model, best = last["model"], last["best_model"]
    assert last["best"]["epoch"] >= 1 and model.keys() == best.keys()

    def shared(key):
        return model[key].untyped_storage().data_ptr() == best[key].untyped_storage().data_ptr()

    fixed_keys = [key for key in model if key.endswith(fixed)]
    assert len(fixed_keys) == 5  # LeNet's five layers
    assert all(shared(key) for key in fixed_keys)
    assert not any(shared(key) for key in model if key not in fixed_keys)
    # the weights did move after the best epoch's copy was taken
    if last["best"]["epoch"] == 1:
        assert not torch.equal(model["net.fc1.weight"], best["net.fc1.weight"])


def test_a_compiled_training_step_trains_as_the_eager_one(tmp_path):
    """``compile: true``: torch.compile(fullgraph=True) of the step; to float32 tolerance the
    same run as eager, with a plain state dict in the checkpoints."""
    runs = {}
    for compiled in (False, True):
        out = tmp_path / f"compile-{compiled}"
        config = write_config(tmp_path, method="brsf", epochs=2, compile=compiled,
                              **{"layer.constrain_weights": True, "schedule.milestones": [1]})
        assert main(["train", str(config), "--out", str(out)]) == 0
        runs[compiled] = out
    eager, compiled = (pd.read_csv(runs[c] / "metrics.csv") for c in (False, True))
    for column in ("train_loss", "val_loss", "val_acc1"):
        assert compiled[column].tolist() == pytest.approx(eager[column].tolist(), rel=1e-3, abs=1e-3)
    a, b = _state(runs[False]), _state(runs[True])
    assert a.keys() == b.keys()  # no "_orig_mod." prefixes
    for key in a:
        # compiled, brSF's redraw after the last step is done at that step (eager: at the
        # next training pass, which never comes): the |M| no step has used yet, one draw on
        if key.endswith("feedback_draws"):
            assert b[key][0] == a[key][0] and b[key][1] == a[key][1] + 1
        elif not key.endswith("feedback_magnitude"):
            torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-3)


def test_restart_on_change_starts_afresh(tmp_path):
    out = tmp_path / "run"
    config = write_config(tmp_path, epochs=1, **{"schedule.milestones": [1]})
    assert main(["train", str(config), "--out", str(out)]) == 0
    assert main(["train", str(config), "--out", str(out), "--set", "seed=1",
                 "--restart-on-change"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 1
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1


def test_jobs_on_a_several_gpu_machine_each_claim_their_own_gpu(tmp_path, monkeypatch):
    from biofa.study import device as train_module

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    claimed = [train_module.claim_gpu(str(tmp_path)) for _ in range(3)]
    assert claimed == [0, 1, 2]
    assert train_module.claim_gpu(str(tmp_path)) in (0, 1, 2)  # more jobs than GPUs: shared
    for handle in train_module._CLAIMED:
        handle.close()
    train_module._CLAIMED.clear()
    assert train_module.claim_gpu(str(tmp_path)) == 0  # released with the process's files
    train_module._CLAIMED.pop().close()


def test_train_evaluate_writes_what_biofa_evaluate_writes(tmp_path, capsys):
    """``--evaluate test``: the test result of the best checkpoint, in the training process."""
    out = tmp_path / "run"
    command = ["train", str(EXAMPLE), "--out", str(out), "--set", "epochs=1",
               "--set", "schedule.milestones=[1]", "--evaluate", "test"]
    assert main(command) == 0
    assert "test top-1 error" in capsys.readouterr().out
    written = (out / "test.json").read_bytes()
    assert json.loads(written)["status"] == "complete" and json.loads(written)["split"] == "test"
    assert main(["evaluate", str(out), "--split", "test"]) == 0
    assert (out / "test.json").read_bytes() == written  # biofa evaluate writes the same file

    (out / "test.json").unlink()  # a finished run resumed: writes it only if it is missing
    assert main(command) == 0 and (out / "test.json").read_bytes() == written
    kept = json.dumps({**json.loads(written), "top1_error": 0.5})
    (out / "test.json").write_text(kept)
    assert main(command) == 0 and (out / "test.json").read_text() == kept
    assert not (out / "val.json").exists()
    assert main([*command, "--evaluate", "val"]) == 0
    assert json.loads((out / "val.json").read_text())["split"] == "val"


def test_train_evaluate_names_the_splits(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", str(EXAMPLE), "--out", str(tmp_path / "r"), "--evaluate", "tset"])
    assert "invalid choice: 'tset'" in capsys.readouterr().err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("rows, columns", [
    ([], None), ([], ["a", "b"]),
    ([{"a": 1, "b": None}, {"a": 2.5, "b": "x"}, {"a": None, "c": True}], None),
    ([{"a": True, "b": 1, "c": 1}, {"a": False, "b": 2, "c": float("nan")}], ["c", "b", "a", "d"]),
    ([{"a": 1e16, "b": float("inf"), "c": 'x,"y', "d": float("nan"), "e": 1e-05, "f": 0.1 + 0.2,
       "g": -0.0, "h": 1, "i": "1"}, {"a": 3, "b": -1.5, "c": 2, "d": None, "e": True,
                                       "f": 7, "g": 2 ** 40, "h": 2.0, "i": 1}], None),
])
def test_training_csvs_are_what_pandas_writes(rows, columns):
    from biofa.study.train import csv_text

    assert csv_text(rows, columns) == pd.DataFrame(rows, columns=columns).to_csv(index=False)


@pytest.mark.parametrize("method", ["bp", "dfa"])
def test_a_runs_csvs_are_what_pandas_writes(tmp_path, method):
    """metrics.csv and alignment.csv of a trained run (DFA: no weight-shaped feedback)."""
    from biofa.study.run import RunFolder
    from biofa.study.train import METRICS_COLUMNS

    out = tmp_path / "run"
    assert main(["train", str(EXAMPLE), "--out", str(out), "--set", f"method={method}",
                 "--set", "epochs=2", "--set", "schedule.milestones=[1]"]) == 0
    state = RunFolder(out).load_checkpoint(RunFolder.LAST)
    assert (out / "metrics.csv").read_text() == pd.DataFrame(
        state["history"], columns=METRICS_COLUMNS).to_csv(index=False)
    assert (out / "alignment.csv").read_text() == pd.DataFrame(state["alignment"]).to_csv(index=False)
