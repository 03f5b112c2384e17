"""Every bad run config ends in one line naming the key and what it accepts, and writes nothing.

The cases are generated from ``biofa.study.config.schema()``: every key, at every depth, gets
a value of each wrong type, values outside its range, enum or pattern, and misspelt
neighbours, so a key added to the schema is walked without touching this file. Each
case goes through ``biofa.study.cli.main(["train", ...])`` in-process; two also go through
a real ``biofa train`` process for the exit status.
"""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from biofa.study import config
from biofa.study.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "examples" / "digits_lenet.yaml"
BASE = yaml.safe_load(EXAMPLE.read_text())
SCHEMA = config.schema()
MIN_CASES = 300  # today's walk has more; fewer means the generator lost a category


# ----------------------------------------------------------------------------- the schema


def walk(schema: dict, prefix: tuple = ()):
    """(path, subschema, parent schema) for every key, sections before their keys."""
    for name, sub in schema["properties"].items():
        yield prefix + (name,), sub, schema
        if sub.get("type") == "object":
            yield from walk(sub, prefix + (name,))


KEYS = list(walk(SCHEMA))


def dotted(path) -> str:
    return ".".join(path)


def json_type(value) -> str:
    return {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string",
            list: "array", dict: "object"}[type(value)]


def accepted_types(schema: dict) -> set[str]:
    if "enum" in schema:
        return {json_type(v) for v in schema["enum"]}
    if "anyOf" in schema:
        return set().union(*(accepted_types(b) for b in schema["anyOf"]))
    kind = schema["type"]
    return {"number", "integer"} if kind == "number" else {kind}


def written(value) -> str:
    """A value as a config file writes it (null, true, 1 for 1.0)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def allowed_words(schema: dict) -> list[str]:
    """What a message about this key must mention: allowed values, bounds, the type."""
    if "enum" in schema:
        return [written(v) for v in schema["enum"]]
    if "anyOf" in schema:
        return [w for branch in schema["anyOf"] for w in allowed_words(branch)]
    kind = schema["type"]
    words = {"null": ["null"], "boolean": ["true", "false"], "number": ["number"],
             "integer": ["integer"], "string": ["string"], "array": ["list"],
             "object": ["mapping", *schema.get("properties", {})]}[kind]
    if kind == "string" and "pattern" in schema:
        words = [schema["description"]]
    for bound in ("minimum", "exclusiveMinimum", "maximum"):
        if bound in schema:
            words.append(written(schema[bound]))
    if "exclusiveMinimum" in schema:
        words.append("greater than")
    if kind == "array":
        words += allowed_words(schema["items"])
        if "minItems" in schema:
            words.append(str(schema["minItems"]))
    return words


def valid_value(schema: dict):
    """Some value the key accepts (list items, the other items of a list case)."""
    if "enum" in schema:
        return schema["enum"][-1]
    if "anyOf" in schema:
        return valid_value(schema["anyOf"][-1])
    kind = schema["type"]
    if kind in ("number", "integer"):
        low = max(schema.get("minimum", 0), schema.get("exclusiveMinimum", 0))
        high = schema.get("maximum", low + 20)
        return (low + high) / 2 if kind == "number" else math.ceil((low + high) / 2)
    if kind == "array":
        return [valid_value(schema["items"])] * schema.get("minItems", 1)
    if kind == "string":
        return next(s for s in ("x", "auto", "cpu", "default") if re.search(schema.get("pattern", ""), s))
    return {"boolean": True, "null": None, "string": "x", "object": {}}[kind]


def out_of_range(schema: dict) -> list:
    """Values of the right type that the key refuses."""
    if "enum" in schema:
        strings = [v for v in schema["enum"] if isinstance(v, str)]
        return ["not-a-choice"] + [v + "x" for v in strings[:1] if v + "x" not in strings]
    if "anyOf" in schema:
        values = [v for branch in schema["anyOf"] for v in out_of_range(branch)]
        return [v for v in values if not any(accepts(b, v) for b in schema["anyOf"])]
    kind, values = schema["type"], []
    if kind in ("number", "integer"):
        step = 1 if kind == "integer" else 0.5
        if "minimum" in schema:
            values.append(schema["minimum"] - step)
        if "exclusiveMinimum" in schema:
            values += [schema["exclusiveMinimum"], schema["exclusiveMinimum"] - step]
        if "maximum" in schema:
            values.append(schema["maximum"] + step)
        if kind == "number":
            values += [math.nan, math.inf, -math.inf]
    elif kind == "string" and "pattern" in schema:
        values += ["gpu7", "cuda:x", "CPU", ""]
    elif kind == "array":
        item = valid_value(schema["items"])
        if "minItems" in schema:
            values.append([item] * (schema["minItems"] - 1))
        if "maxItems" in schema:
            values.append([item] * (schema["maxItems"] + 1))
        for bad in out_of_range(schema["items"]):
            values.append([bad] + [item] * (schema.get("minItems", 1) - 1))
    return values


def accepts(schema: dict, value) -> bool:
    """A plain check of one value against a simple (sub)schema: the walk's own oracle."""
    if "enum" in schema:
        return any(value == v and type(value) is type(v) for v in schema["enum"])
    kind = json_type(value)
    if kind not in accepted_types(schema):
        return False
    if kind in ("number", "integer"):
        if not math.isfinite(value):
            return False
        return (value >= schema.get("minimum", -math.inf)
                and value > schema.get("exclusiveMinimum", -math.inf)
                and value <= schema.get("maximum", math.inf))
    return True


WRONG_TYPES = {"string": "abc", "boolean": True, "null": None, "array": [1, 2],
               "object": {"x": 1}, "number": 0.5, "integer": 3}


# ----------------------------------------------------------------------------- the cases


@dataclass
class Case:
    """One bad input: the config written to CONFIG (or raw text), --set overrides, and the
    words its one-line message must contain."""

    id: str
    words: list[str]
    config: object = None
    text: str | bytes | None = None
    sets: list[str] = field(default_factory=list)
    kind: str = ""
    path: tuple = ()


def changed(path: tuple, value=None, delete: bool = False, rename: str | None = None) -> dict:
    """BASE with the key at ``path`` set (its sections created), deleted or renamed."""
    raw = copy.deepcopy(BASE)
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
    if rename is not None:
        node[rename] = node.pop(path[-1], valid_value(walk_index()[path]))
    elif delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return raw


def walk_index() -> dict:
    return {path: sub for path, sub, _ in KEYS}


def cases() -> list[Case]:
    out: list[Case] = []
    for path, sub, parent in KEYS:
        key = dotted(path)
        allowed = allowed_words(sub)
        # (a) every wrong type
        for kind, value in WRONG_TYPES.items():
            if kind not in accepted_types(sub):
                out.append(Case(f"type:{key}={kind}", [repr(key), *allowed],
                                changed(path, value), kind="type", path=path))
        if accepted_types(sub) & {"integer"} and "number" not in accepted_types(sub):
            out.append(Case(f"type:{key}=2.0", [repr(key), *allowed], changed(path, 2.0),
                            kind="type", path=path))
        # (b) out of range / not in the enum / not matching the pattern
        for value in out_of_range(sub):
            words = [repr(key), *allowed]
            if isinstance(value, list) and value and not accepts(sub["items"], value[0]):
                words = [repr(f"{key}[0]"), *allowed_words(sub["items"])]  # the item is named
            if isinstance(value, float) and not math.isfinite(value) and "anyOf" not in sub:
                words.append("finite")
            if "enum" in sub and value != "not-a-choice":
                words.append(f"did you mean {value[:-1]!r}")
            out.append(Case(f"range:{key}={value!r}", words, changed(path, value),
                            kind="range", path=path))
        # (c) a misspelt neighbour: added next to the key, and instead of it
        siblings = sorted(parent["properties"])
        section = dotted(path[:-1])
        typo = path[-1] + path[-1][-1]
        for how in ("added", "renamed"):
            raw = changed(path, rename=typo) if how == "renamed" else changed(path[:-1] + (typo,), 1)
            where = f"{section}.{typo}" if section else typo
            out.append(Case(f"unknown:{where}({how})",
                            [f"unknown config key {where!r}", *siblings, f"did you mean {path[-1]!r}"],
                            raw, kind="unknown", path=path))
        # a missing required key
        if path[-1] in parent.get("required", ()):
            out.append(Case(f"missing:{key}", [f"config key {key!r} is missing", *allowed],
                            changed(path, delete=True), kind="missing", path=path))
    out += [
        Case("unknown:optimiser", ["unknown config key 'optimiser'", "did you mean 'optimizer'"],
             {**BASE, "optimiser": {"lr": 0.1}}, kind="unknown"),
        Case("unknown:Epochs", ["unknown config key 'Epochs'", "did you mean 'epochs'"],
             {**BASE, "Epochs": 3}, kind="unknown"),
        Case("unknown:optimizer.LR", ["unknown config key 'optimizer.LR'", "did you mean 'lr'"],
             changed(("optimizer", "LR"), 0.1), kind="unknown"),
        Case("unknown:key 1", ["unknown config key '1'"], {**BASE, 1: "x"}, kind="unknown"),
        Case("unknown:key null", ["unknown config key 'null'"], {**BASE, None: "x"}, kind="unknown"),
        # rules across keys
        Case("cross:milestones beyond epochs", ["'schedule.milestones'", "[20]", "epochs=10"],
             changed(("schedule", "milestones"), [5, 20]), kind="cross"),
        Case("cross:multistep without milestones", ["'schedule.milestones'", "at least one"],
             changed(("schedule", "milestones"), []), kind="cross"),
        Case("cross:milestones decreasing", ["'schedule.milestones'", "increasing"],
             changed(("schedule", "milestones"), [5, 3]), kind="cross"),
        Case("cross:milestones repeated", ["'schedule.milestones'", "increasing"],
             changed(("schedule", "milestones"), [3, 3]), kind="cross"),
        Case("cross:nesterov without momentum", ["'optimizer.nesterov'", "optimizer.momentum"],
             {**BASE, "optimizer": {**BASE["optimizer"], "nesterov": True, "momentum": 0}},
             kind="cross"),
        # a file that is not a YAML mapping
        Case("file:list", ["holds a list", "mapping"], text="- dataset\n- digits\n", kind="file"),
        Case("file:scalar", ["holds a string", "mapping"], text="digits lenet bp\n", kind="file"),
        Case("file:number", ["holds a number", "mapping"], text="42\n", kind="file"),
        Case("file:false", ["holds a boolean", "mapping"], text="false\n", kind="file"),
        Case("file:empty", ["config key 'dataset' is missing", "digits"], text="", kind="file"),
        Case("file:bad yaml", ["not valid YAML", "line 2"], text="optimizer: [1\nepochs: 2\n",
             kind="file"),
        Case("file:two documents", ["not valid YAML", "single document"],
             text="dataset: digits\n---\nmodel: lenet_mnist\n", kind="file"),
        Case("file:binary", ["not text", "UTF-8"], text=b"\xff\xfe\x00\x81garbage", kind="file"),
        Case("file:tab", ["not valid YAML"], text="dataset: digits\n\tmodel: x\n", kind="file"),
        Case("file:1e-3", ["'optimizer.lr'", "number", "write 1.0e-3"],
             text=EXAMPLE.read_text().replace("lr: 0.01", "lr: 1e-3"), kind="file"),
        # bad --set overrides of the valid example
        Case("set:nokey", ["--set", "key=value", "nokey"], BASE, sets=["nokey"], kind="set"),
        Case("set:=3", ["--set", "key=value"], BASE, sets=["=3"], kind="set"),
        Case("set:optimizer.lr.x", ["optimizer.lr", "not a section"], BASE,
             sets=["optimizer.lr.x=1"], kind="set"),
        Case("set:layer.init.x", ["layer.init", "not a section"], BASE,
             sets=["layer.init.x=1"], kind="set"),
        Case("set:epochs=abc", ["'epochs'", "integer", "1"], BASE, sets=["epochs=abc"], kind="set"),
        Case("set:epochs=", ["'epochs'", "integer"], BASE, sets=["epochs="], kind="set"),
        Case("set:epochs=2.5", ["'epochs'", "integer"], BASE, sets=["epochs=2.5"], kind="set"),
        Case("set:optimizer.lrr", ["unknown config key 'optimizer.lrr'", "did you mean 'lr'"], BASE,
             sets=["optimizer.lrr=0.1"], kind="set"),
        Case("set:nosuch.key", ["unknown config key 'nosuch'"], BASE, sets=["nosuch.key=1"],
             kind="set"),
        Case("set:optimizer=3", ["'optimizer'", "mapping"], BASE, sets=["optimizer=3"], kind="set"),
        Case("set:method=dfaa", ["'method'", "did you mean 'dfa'"], BASE, sets=["method=dfaa"],
             kind="set"),
        Case("set:second of two", ["'device'", "cuda:N"], BASE,
             sets=["method=fa", "device=gpu7"], kind="set"),
    ]
    if not torch.cuda.is_available():  # checked by train before it writes anything
        quiet = {**BASE, "threads": None, "deterministic": False}  # no process-wide settings
        out.append(Case("device:cuda:0 without CUDA", ["'device'", "CUDA is not available"],
                        {**quiet, "device": "cuda:0"}, kind="device"))
    return out


CASES = cases()

#: Inputs that still end in a traceback; each is a known gap outside biofa.study.config.
CASES += [Case("set:epochs=[1", ["--set", "epochs"], BASE, sets=["epochs=[1"], kind="set")]


def _param(case: Case):
    return pytest.param(case, id=case.id)


# ----------------------------------------------------------------------------- running them


@pytest.fixture
def no_training(monkeypatch):
    """A case that slips through must fail fast and loudly, not train for a minute."""
    def accepted(*args, **kwargs):
        raise AssertionError("this bad input was accepted: training started")

    monkeypatch.setattr("biofa.study.train.loaders", accepted)


def write(folder: Path, case: Case) -> Path:
    path = folder / "run.yaml"
    if isinstance(case.text, bytes):
        path.write_bytes(case.text)
    elif case.text is not None:
        path.write_text(case.text)
    else:
        path.write_text(yaml.safe_dump(case.config, sort_keys=False))
    return path


def check_one_line(err: str, words: list[str]) -> str:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("biofa train: error: "), err
    missing = [w for w in words if w not in lines[0]]
    assert not missing, f"{missing} not in: {lines[0]}"
    return lines[0]


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_is_one_named_line_and_writes_nothing(case, tmp_path, monkeypatch, capsys,
                                                        no_training):
    monkeypatch.chdir(tmp_path)  # a relative path written by mistake would land here
    path = write(tmp_path, case)
    out = tmp_path / "run"
    argv = ["train", str(path), "--out", str(out)]
    for assignment in case.sets:
        argv += ["--set", assignment]
    assert main(argv) == 2
    captured = capsys.readouterr()
    check_one_line(captured.err, case.words)
    assert captured.out == ""
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]


def test_missing_or_folder_config_file(tmp_path, capsys, no_training):
    out = tmp_path / "run"
    assert main(["train", str(tmp_path / "nope.yaml"), "--out", str(out)]) == 2
    check_one_line(capsys.readouterr().err, ["nope.yaml", "does not exist"])
    (tmp_path / "folder.yaml").mkdir()
    assert main(["train", str(tmp_path / "folder.yaml"), "--out", str(out)]) == 2
    check_one_line(capsys.readouterr().err, ["folder.yaml", "not a file"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.yaml"]


def test_the_walk_covers_every_key():
    """Every key gets a wrong type and misspelt neighbours; every constrained key a bad value."""
    print(f"\n{len(CASES)} bad run-config inputs walked over {len(KEYS)} schema keys")
    assert len(CASES) > MIN_CASES
    assert len({c.id for c in CASES}) == len(CASES)
    for path, sub, _ in KEYS:
        kinds = {c.kind for c in CASES if c.path == path}
        assert {"type", "unknown"} <= kinds, dotted(path)
        constrained = "enum" in sub or "anyOf" in sub or "pattern" in sub or "items" in sub or \
            {"minimum", "exclusiveMinimum", "maximum"} & set(sub)
        if constrained:
            assert "range" in kinds, dotted(path)
    for kind in ("missing", "cross", "file", "set"):
        assert any(c.kind == kind for c in CASES), kind


def test_the_oracle_agrees_with_biofa():
    """The walk's own notion of valid values matches biofa's validator on the example."""
    assert config.validate(copy.deepcopy(BASE))
    for path, sub, _ in KEYS:
        if sub.get("type") != "object":
            raw = changed(path, valid_value(sub))
            raw["epochs"] = raw["epochs"] if path == ("epochs",) else 100  # room for milestones
            config.validate(raw)


def test_messages_of_a_few_keys_in_full():
    """The exact wording for the most common mistakes (also the docs' examples)."""
    def message(raw):
        with pytest.raises(config.ConfigError) as err:
            config.validate(raw)
        return str(err.value)

    assert message(changed(("optimizer", "lr"), -0.1)) == (
        "config key 'optimizer.lr': -0.1 is less than or equal to the minimum of 0 "
        "(allowed: a number greater than 0)")
    assert message(changed(("optimizer", "momentum"), 1.5)) == (
        "config key 'optimizer.momentum': 1.5 is greater than the maximum of 1 "
        "(allowed: a number from 0 to 1)")
    assert message(changed(("device",), "gpu7")) == (
        "config key 'device': 'gpu7' is not allowed (allowed: auto, cpu, cuda or cuda:N "
        "with N a GPU index)")
    assert message(changed(("layer", "gradient_clip"), "yes")) == (
        "config key 'layer.gradient_clip': 'yes' is not allowed "
        "(allowed: null, true, false or a number greater than 0)")
    assert message(changed(("threads",), 0)) == (
        "config key 'threads': 0 is not allowed (allowed: null or an integer of at least 1)")
    assert message(changed(("epochs",), 10.0)) == (
        "config key 'epochs': 10.0 is not of type 'integer' (allowed: an integer of at least 1)")
    assert message(changed(("layer", "initt"), "xavier")).endswith("did you mean 'init'?")


def test_valid_edge_values_still_pass():
    """The walk's bounds are the schema's: the values right at them are accepted."""
    for path, value in [(("optimizer", "momentum"), 0), (("optimizer", "momentum"), 1),
                        (("schedule", "gamma"), 1), (("threads",), None), (("threads",), 1),
                        (("layer", "gradient_clip"), True), (("layer", "gradient_clip"), False),
                        (("layer", "gradient_clip"), 0.5), (("layer", "init"), None),
                        (("device",), "cuda:1"), (("seed",), 0), (("alignment_batch",), 0),
                        (("optimizer", "lr"), 1.0e6), (("schedule", "milestones"), [10])]:
        config.validate(changed(path, value))


def _biofa() -> list[str]:
    script = Path(sys.executable).with_name("biofa")
    if script.exists():
        return [str(script)]
    found = shutil.which("biofa")
    return [found] if found else [sys.executable, "-m", "biofa.study.cli"]


@pytest.mark.parametrize("extra, words", [
    ([], ["'optimizer.momentum'", "from 0 to 1"]),
    (["--set", "optimizer.lr.x=1"], ["optimizer.lr", "not a section"]),
])
def test_exit_status_of_a_real_process(tmp_path, extra, words):
    raw = changed(("optimizer", "momentum"), 1.5) if not extra else BASE
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([*_biofa(), "train", str(path), "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stderr
    check_one_line(done.stderr, words)
    assert done.stdout == "" and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]
