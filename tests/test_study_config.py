"""The study config: its generated schema, its checks beyond the schema, and `biofa check`.

The bad-input walk generates its cases from the schema itself, so a key added to
``biofa.study.study_config.schema`` is covered without touching this file.
"""

import copy
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from biofa.study import study_config
from biofa.study.cli import main
from biofa.errors import ConfigError
from biofa.study.names import RUN_FOLDER

ROOT = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
# the quick study with SGD alone: the checks below change its methods, which Adam's
# `methods:` filter would then name outside them
BASE["experiments"][0]["optimizers"] = {"sgd": BASE["experiments"][0]["optimizers"]["sgd"]}
SCHEMA = study_config.schema()


def test_schema_file_is_generated_from_biofa():
    text = (ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text()
    assert text == study_config.schema_yaml(), (
        "regenerate: python -m biofa.study.study_config > workflow/schemas/config.schema.yaml")
    assert yaml.safe_load(text) == yaml.safe_load(yaml.safe_dump(SCHEMA))


def test_schema_names_come_from_the_registries():
    from biofa.study.names import GRADIENTS, WHITE_BOX
    from biofa.study.data import DATASETS
    from biofa.methods import INITS, METHODS
    from biofa.models import MODELS

    experiment = SCHEMA["properties"]["experiments"]["items"]["properties"]
    assert set(SCHEMA["definitions"]["method"]["enum"]) == set(METHODS)
    assert set(experiment["models"]["items"]["enum"]) == set(MODELS)
    assert set(experiment["dataset"]["enum"]) == set(DATASETS)
    one, several = experiment["layer"]["properties"]["init"]["oneOf"]
    assert set(one["enum"]) == set(several["items"]["enum"]) == set(INITS)
    white = SCHEMA["properties"]["attacks"]["properties"]["white_box"]["properties"]
    assert white["attacks"]["items"]["enum"] == list(WHITE_BOX)
    assert white["gradients"]["items"]["enum"] == list(GRADIENTS)


@pytest.mark.parametrize("name, count", [("config.yaml", 30), ("paper.yaml", 167),
                                         ("extensions.yaml", 40)])
def test_shipped_studies_are_valid_and_get_their_defaults(name, count):
    raw = yaml.safe_load((ROOT / "config" / name).read_text())
    config = study_config.validate_study(raw)
    assert len(study_config.runs(config)) == count
    assert raw == yaml.safe_load((ROOT / "config" / name).read_text())  # input left alone
    assert config["attacks"]["white_box"]["steps"] == 10
    assert config["attacks"]["square"]["queries"] == 50


def test_defaults_fill_a_minimal_study():
    config = study_config.validate_study({"experiments": [{
        "dataset": "digits", "models": ["lenet_mnist"], "methods": ["bp"], "seeds": [0],
        "epochs": 1, "batch_size": 8, "optimizers": {"sgd": {"name": "sgd", "lr": 0.1}}}]})
    assert (config["data_root"], config["results"], config["device"]) == ("data", "results", "auto")
    assert config["experiments"][0]["schedule"] == {"name": "constant"}
    assert config["attacks"]["targets"] == [] and config["attacks"]["n_images"] == 500


def two_experiments(**second):
    """Two experiments of the same data, model and optimizer that differ only in methods."""
    config = copy.deepcopy(BASE)
    first = config["experiments"][0]
    first.update(methods=["bp"], epochs=2, schedule={"name": "constant"})
    first["optimizers"]["sgd"]["lr"] = 0.01
    config["experiments"].append({**copy.deepcopy(first), "methods": ["fa"], "epochs": 3,
                                  "resources": {"mem_mb": 3000}, **second})
    config["attacks"]["transfer"]["eps"] = []
    return config


def test_each_run_gets_its_own_experiment():
    config = study_config.validate_study(two_experiments())
    index = study_config.experiment_index(config)
    assert [run["method"] for run in study_config.runs(config)] == ["bp"] * 3 + ["fa"] * 3
    assert len(index) == 6
    for run in study_config.runs(config):
        experiment = config["experiments"][index[study_config.run_key(run)]]
        assert run in list(study_config.experiment_runs(config, index[study_config.run_key(run)]))
        epochs = study_config.run_config(config, experiment, run)["epochs"]
        assert epochs == {"bp": 2, "fa": 3}[run["method"]]


def check(config):
    with pytest.raises(ConfigError) as error:
        study_config.validate_study(config)
    message = str(error.value)
    assert "\n" not in message
    return message


def edit(change):
    config = copy.deepcopy(BASE)
    change(config)
    return config


def exp(config):
    return config["experiments"][0]


def sgd(config):
    return exp(config)["optimizers"]["sgd"]


def test_overlapping_experiments_are_refused_naming_both():
    message = check(two_experiments(methods=["fa", "bp"]))
    assert "experiments[0] (digits: lenet_mnist)" in message
    assert "experiments[1] (digits: lenet_mnist)" in message
    assert "digits/lenet_mnist/sgd/xavier/bp/seed0" in message


def test_optimizers_with_one_name_for_the_same_runs_are_refused_naming_both_keys():
    config = edit(lambda c: exp(c)["optimizers"].update(sgd_fast={**sgd(c), "lr": 0.1}))
    message = check(config)
    assert "experiments[0].optimizers.sgd'" in message
    assert "experiments[0].optimizers.sgd_fast'" in message and "told apart" in message
    # the same name for different methods is fine: the report can tell them apart
    config = edit(lambda c: exp(c)["optimizers"].update(
        sgd_fast={**sgd(c), "lr": 0.1, "methods": ["bp"]},
        sgd={**sgd(c), "lr": 0.01, "methods": ["fa", "dfa", "usf", "brsf", "frsf", "kp"]}))
    config["attacks"]["transfer"]["eps"] = []  # sgd trains no bp to craft them on
    study_config.validate_study(config)
    # and across experiments
    config = two_experiments()
    config["experiments"][1].update(methods=["bp"], seeds=[5],
                                    optimizers={"momentum": sgd(config)})
    assert "experiments[1].optimizers.momentum'" in check(config)


@pytest.mark.parametrize("change, words", [
    (lambda c: sgd(c)["lr"].update(bp=0.1) or exp(c).update(methods=["fa", "dfa", "kp"]),
     ["experiments[0].optimizers.sgd.lr.bp", "allowed keys: default, fa, dfa, kp"]),
    (lambda c: sgd(c).update(methods=["bp", "fa"]),
     ["experiments[0].optimizers.sgd.lr.dfa", "never trains dfa"]),
    (lambda c: exp(c).update(methods=["bp", "fa"]) or sgd(c).update(
        lr=0.1, methods=["bp", "dfa"]),
     ["experiments[0].optimizers.sgd.methods", "dfa not among experiments[0].methods"]),
    (lambda c: sgd(c).update(models=["resnet20"]),
     ["experiments[0].optimizers.sgd.models", "resnet20 not among"]),
    (lambda c: exp(c)["schedule"].update(milestones=[8, 12]),
     ["experiments[0].schedule.milestones", "[12] lie beyond epochs=10"]),
    (lambda c: exp(c)["schedule"].update(milestones=[6, 4]),
     ["experiments[0].schedule.milestones", "increasing"]),
    (lambda c: exp(c)["schedule"].update(milestones=[]),
     ["experiments[0].schedule.milestones", "at least one milestone"]),
    (lambda c: exp(c)["run"].update(workers=-1),
     ["experiments[0].run.workers", "allowed: an integer >= 0"]),
    (lambda c: exp(c)["run"].update(epochs=3),
     ["experiments[0].run.epochs", "allowed keys under 'experiments[0].run'"]),
    (lambda c: exp(c)["layer"].update(gradient_clip="big"),
     ["experiments[0].layer.gradient_clip", "null or true or false or a number > 0"]),
    (lambda c: exp(c)["layer"].update(gradient_clip=-1),
     ["experiments[0].layer.gradient_clip", "allowed"]),
    (lambda c: c["attacks"]["targets"].append(
        {"dataset": "digits", "model": "lenet_mnist", "optimizer": "adam"}),
     ["attacks.targets[1]", "digits/lenet_mnist/adam", "allowed: one of digits/lenet_mnist/sgd"]),
    (lambda c: exp(c).update(methods=["fa", "dfa"]) or sgd(c).update(lr=0.1),
     ["attacks.transfer", "no bp", "attacks.targets[0]"]),
    (lambda c: c["attacks"]["white_box"].pop("eps"), ["attacks.white_box.eps", "is missing"]),
    (lambda c: exp(c)["optimizers"].update({"s/gd": sgd(c)}),
     ["experiments[0].optimizers.s/gd", "letters, digits"]),
    (lambda c: exp(c).update(methods=["bp", "bp"]),
     ["experiments[0].methods", "repeated"]),
    (lambda c: sgd(c).update(lr={"fa": 0.1}), ["experiments[0].optimizers.sgd.lr.default",
                                               "is missing"]),
    (lambda c: sgd(c)["lr"].update(fa=0), ["experiments[0].optimizers.sgd.lr.fa",
                                           "allowed: a number > 0"]),
    (lambda c: c["attacks"]["white_box"].update(eps=[0.1, 2]),
     ["attacks.white_box.eps[1]", "<= 1"]),
])
def test_checks_beyond_the_schema_name_the_key(change, words):
    message = check(edit(change))
    for word in words:
        assert word in message, message


def test_transfer_without_bp_is_fine_when_transfer_is_off():
    config = edit(lambda c: exp(c).update(methods=["fa", "dfa"]) or sgd(c).update(lr=0.1))
    config["attacks"]["transfer"]["eps"] = []
    study_config.validate_study(config)


def test_not_a_mapping():
    assert "mapping" in check(["experiments"])


# --- the bad-input walk ------------------------------------------------------------------

CANDIDATES = ["not-a-value", 2.5, 7, True, [1], {"a": 1}, None]


def node_of(node):
    return study_config.resolve(node, SCHEMA)


def types_of(node):
    """The JSON types a schema accepts."""
    node = node_of(node)
    kinds = set()
    for alternative in node.get("oneOf", node.get("anyOf", [])):
        kinds |= types_of(alternative)
    if "enum" in node:
        kinds |= {{str: "string", type(None): "null", bool: "boolean", int: "integer",
                   float: "number"}[type(v)] for v in node["enum"]}
    if "type" in node:
        kinds.add(node["type"])
    if "number" in kinds:
        kinds.add("integer")
    return kinds


def accepts(node, value) -> bool:
    return jsonschema.Draft202012Validator(
        {**node, "definitions": SCHEMA["definitions"]}).is_valid(value)


def kind(value) -> str:
    return {str: "string", type(None): "null", bool: "boolean", int: "integer", float: "number",
            list: "array", dict: "object"}[type(value)]


def wrong_type(node):
    kinds = types_of(node)
    return next(v for v in CANDIDATES if kind(v) not in kinds)


def out_of_range(node):
    """A value of an accepted type outside the key's range or choices, if it has one."""
    node = node_of(node)
    for alternative in [node, *map(node_of, node.get("oneOf", node.get("anyOf", [])))]:
        if "enum" in alternative:
            return "not-a-choice"
        if "minimum" in alternative:
            return alternative["minimum"] - 1
        if "exclusiveMinimum" in alternative:
            return alternative["exclusiveMinimum"]
        if "maximum" in alternative:
            return alternative["maximum"] + 1
        if "pattern" in alternative:
            return "not/a name"
        if alternative.get("minLength"):
            return ""
        if alternative.get("minProperties"):
            return {}
        if alternative.get("type") == "array":
            item = out_of_range(alternative.get("items", {}))
            if item is not None:
                return [item] * max(alternative.get("minItems", 1), 1)
            if alternative.get("minItems"):
                return []
    return None


def walk(node, value, path):
    """(path, schema, required, is a mapping's own name) of every key under ``node``."""
    node = node_of(node)
    for alternative in node.get("oneOf", node.get("anyOf", [])):
        if kind(value) in types_of(alternative):
            yield from walk(alternative, value, path)
    if node.get("type") == "object":
        value = value if isinstance(value, dict) else {}
        for name, sub in node.get("properties", {}).items():
            yield path + [name], sub, name in node.get("required", []), False
            yield from walk(sub, value.get(name, {}), path + [name])
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and value:
            name = next(iter(value))
            yield path + [name], extra, False, True
            yield from walk(extra, value[name], path + [name])
    if node.get("type") == "array" and isinstance(value, list) and value:
        yield from walk(node["items"], value[0], path + [0])


def put(config, path, value):
    for part in path[:-1]:
        config = config.setdefault(part, {}) if isinstance(part, str) else config[part]
    config[path[-1]] = value


def get(config, path):
    for part in path:
        config = config[part]
    return config


def cases():
    """(label, bad config, the key path its message must name) for every key."""
    found = []
    for path, node, required, own_name in walk(SCHEMA, BASE, []):
        name = study_config.key_path(path)
        for what, value in (("wrong type", wrong_type(node)), ("out of range", out_of_range(node))):
            if what == "out of range" and value is None:
                continue
            config = copy.deepcopy(BASE)
            put(config, path, value)
            found.append((f"{name}: {what} {value!r}", config, name))
        config = copy.deepcopy(BASE)
        try:
            current = copy.deepcopy(get(config, path))
        except (KeyError, IndexError):
            current = 1
        neighbour = path[:-1] + [f"{path[-1]}/typo" if own_name else f"{path[-1]}_typo"]
        put(config, neighbour, current)
        found.append((f"{name}: unknown neighbour", config, study_config.key_path(neighbour)))
        if required:
            config = copy.deepcopy(BASE)
            del get(config, path[:-1])[path[-1]]
            found.append((f"{name}: missing", config, name))
    return found


CASES = cases()
FLOOR = 200


def test_the_walk_covers_every_key():
    keys = {study_config.key_path(path) for path, *_ in walk(SCHEMA, BASE, [])}
    for must in ("data_root", "experiments[0].optimizers.sgd.lr.fa", "experiments[0].run.amp",
                 "experiments[0].layer.gradient_clip", "attacks.targets[0].optimizer",
                 "attacks.white_box.gradients", "attacks.resources.runtime",
                 "experiments[0].optimizers.sgd.models", "experiments[0].resources.gpu"):
        assert must in keys
    print(f"\nbad-input walk of the study config: {len(CASES)} cases over {len(keys)} keys")
    assert len(CASES) > FLOOR


def test_every_bad_input_is_refused_naming_the_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "study.yaml"
    failures = []
    for label, config, key in CASES:
        path.write_text(yaml.safe_dump(config))
        code = main(["check", str(path)])
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        line = lines[0] if len(lines) == 1 else ""
        if not (code == 2 and not out and line.startswith("biofa check: error:")
                and f"'{key}" in line and ("allowed" in line or "required keys" in line)):
            failures.append(f"{label}: exit {code}, stdout {out!r}, stderr {err!r}")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"], label
    print(f"\n{len(CASES)} bad study configs refused with a named key, nothing written")
    assert not failures, "\n".join(failures[:20]) + f"\n({len(failures)} of {len(CASES)} failed)"


def test_check_prints_ok_with_the_number_of_runs(capsys):
    assert main(["check", str(ROOT / "config" / "paper.yaml")]) == 0
    assert capsys.readouterr().out.strip().endswith("paper.yaml: ok (167 runs)")
    assert main(["check", str(ROOT / "config" / "examples" / "digits_lenet.yaml")]) == 0
    assert capsys.readouterr().out.strip().endswith("digits_lenet.yaml: ok (1 run)")


def test_check_on_a_bad_run_config(tmp_path, capsys):
    run = yaml.safe_load((ROOT / "config" / "examples" / "digits_lenet.yaml").read_text())
    run["optimizer"]["lr"] = -1
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    assert main(["check", str(path)]) == 2
    assert "'optimizer.lr'" in capsys.readouterr().err


def test_check_command_smoke(tmp_path):
    config = edit(lambda c: exp(c).update(epochs="ten"))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "biofa.study.cli", "check", str(path)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and not result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'experiments[0].epochs'" in lines[0]
    assert "allowed: an integer >= 1" in lines[0]
    assert [p.name for p in tmp_path.iterdir()] == ["bad.yaml"]


# --- the initialization study --------------------------------------------------------------

def test_paper_config_holds_the_initialization_study():
    """Beside the 87 runs of the paper's tables (all xavier: the paper's rules, kp, and wm,
    drtp and dkp but on ImageNet), CIFAR-10 LeNet and ResNet-20 train every rule with both
    optimizers from PyTorch's default and Kaiming inits too."""
    config = study_config.validate_study(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    runs = study_config.runs(config)
    xavier = [r for r in runs if r["init"] == "xavier"]
    others = [r for r in runs if r["init"] != "xavier"]
    assert len(xavier) == 87
    assert {(r["model"], r["optimizer"], r["init"]) for r in others} == {
        (model, optimizer, init) for model in ("lenet_cifar", "resnet20")
        for optimizer in ("sgd", "adam") for init in ("default", "kaiming")}
    assert len(others) == 2 * 2 * 2 * 10
    folders = {RUN_FOLDER.format(**r) for r in runs}
    assert len(folders) == len(runs)  # no two inits share a folder
    assert "cifar10/resnet20/adam/kaiming/fa/seed2021" in folders
    # each run's config trains its own init, with its experiment's hyperparameters
    index = study_config.experiment_index(config)
    run = next(r for r in others if r["model"] == "resnet20" and r["method"] == "dfa"
               and r["optimizer"] == "sgd" and r["init"] == "kaiming")
    made = study_config.run_config(config, config["experiments"][index[study_config.run_key(run)]], run)
    assert made["layer"]["init"] == "kaiming" and made["optimizer"]["lr"] == 0.001
    # only the xavier ResNet-20 SGD runs are attacked, as in the paper
    target, = config["attacks"]["targets"]
    attacked = [r for r in runs if study_config.is_target(target, r)]
    assert {(r["model"], r["optimizer"], r["init"]) for r in attacked} == {("resnet20", "sgd", "xavier")}
    assert len(attacked) == 10


def test_a_list_of_inits_makes_one_run_per_init_and_targets_choose_among_them():
    config = copy.deepcopy(BASE)
    config["experiments"][0]["layer"] = {"init": ["xavier", "kaiming"]}
    done = study_config.validate_study(config)
    runs = study_config.runs(done)
    per_init = {init: [r for r in runs if r["init"] == init] for init in ("xavier", "kaiming")}
    assert len(per_init["xavier"]) == len(per_init["kaiming"]) == len(runs) // 2 > 0
    # a target without init attacks every init; with one, that init alone
    target = dict(done["attacks"]["targets"][0])
    assert all(study_config.is_target(target, r) for r in runs)
    target["init"] = "kaiming"
    assert [r for r in runs if study_config.is_target(target, r)] == per_init["kaiming"]


def test_init_mistakes_are_named():
    message = check(edit(lambda c: c["experiments"][0].update(layer={"init": ["xavier", "he"]})))
    assert "experiments[0].layer.init" in message and "kaiming" in message
    message = check(edit(lambda c: c["experiments"][0].update(layer={"init": None})))
    assert "experiments[0].layer.init" in message
    message = check(edit(lambda c: c["attacks"]["targets"][0].update(init="kaiming")))
    assert "attacks.targets[0].init" in message and "never trained with init kaiming" in message
    assert "allowed: xavier" in message


# --- the smoke run -------------------------------------------------------------------------

def test_smoke_keeps_every_run_and_attack_and_shrinks_only_time():
    raw = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    full = study_config.validate_study(raw)
    smoke = study_config.validate_study({**raw, "smoke": "true"})  # as snakemake --config gives it
    assert study_config.runs(smoke) == study_config.runs(full)
    assert smoke["data_root"] == "data/stand-in" and smoke["results"] == "results/paper-smoke"
    for real, small in zip(full["experiments"], smoke["experiments"]):
        assert small["epochs"] == 1
        assert small["schedule"]["name"] == real["schedule"]["name"]
        assert small["schedule"].get("milestones", [1]) == [1]
        for key in ("models", "methods", "seeds", "batch_size", "optimizers", "layer"):
            assert small[key] == real[key], key
        assert small["resources"]["threads"] == 1
        assert study_config.launcher(small["resources"]) == ""  # one process per job
        assert small["resources"]["gpu"] == real["resources"]["gpu"]
        assert small["run"] == {**real["run"], "workers": min(real["run"].get("workers", 0), 1)}
    assert smoke["attacks"]["n_images"] == study_config.SMOKE_IMAGES
    for key in ("targets", "white_box", "square", "onepixel", "transfer"):
        assert smoke["attacks"][key] == full["attacks"][key]
    # AutoAttack on the same grid and gradients, its Square on the study's Square budget
    auto, full_auto = smoke["attacks"]["autoattack"], full["attacks"]["autoattack"]
    assert auto == {**full_auto, "queries": full["attacks"]["square"]["queries"]}
    assert full["smoke"] is False
    assert "smoke" in check({**raw, "smoke": "yes"})
