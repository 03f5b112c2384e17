"""The study config of the Snakemake workflow: its schema, its runs and its checks.

A study config (``config/config.yaml``, ``config/paper.yaml``) lists experiments; each
trains every combination of its models x optimizers x inits x methods x seeds on one data
set.
:func:`experiment_runs` is the one place that says which runs an experiment produces:
the workflow's list of jobs and its lookup of a job's experiment (epochs, learning rate,
schedule, resources) both come from it, so they cannot disagree.

The schema is built here from biofa's registries and from the run config's own schema
(``biofa.study.config.schema``), so the names a study may use are the names biofa knows.
``workflow/schemas/config.schema.yaml`` is generated from it::

    python -m biofa.study.study_config > workflow/schemas/config.schema.yaml

:func:`validate_study` checks a whole study before any job starts and reports the first
problem in one line naming the key and what it accepts, e.g.::

    config key 'experiments[0].optimizers.sgd.lr.fa': got 0; allowed: a number > 0
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Iterator

import jsonschema
import yaml

from ..errors import ConfigError
from .names import KEYS, PAPER_SQUARE_QUERIES, RUN_FOLDER

RUN_KEYS = tuple(KEYS)
"""The wildcards of a run: its folder is ``{dataset}/{model}/{optimizer}/{init}/{method}/seed{seed}``."""

OPTIMIZER_KEY = "^[A-Za-z0-9][A-Za-z0-9_-]*$"
"""Optimizer keys become folder names and wildcard values: no slashes, dots or spaces."""

_PATTERN_WORDS = {
    OPTIMIZER_KEY: "a name of letters, digits, _ and - (it becomes a folder name)",
    "^(auto|cpu|cuda(:[0-9]+)?)$": "auto, cpu, cuda or cuda:N",
}

# run-config keys the workflow fills from the study's own keys; ``run:`` may not set them
_SET_BY_STUDY = ("dataset", "data_root", "model", "method", "optimizer", "schedule", "layer",
                 "epochs", "batch_size", "seed", "device")

_SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"


def _list(items: dict, **extra) -> dict:
    return {"type": "array", "items": items, "uniqueItems": True, **extra}


def _object(properties: dict, required=(), **extra) -> dict:
    schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = list(required)
    return {**schema, **extra}


def schema() -> dict:
    """The JSON schema of a study config (draft 2020-12, the version Snakemake validates, with the workflow's defaults)."""
    from . import config as run_config
    from .config import DEFAULTS
    from ..methods import INITS
    from .names import AUTOATTACK_QUERIES, AUTOATTACK_STEPS, GRADIENTS, WHITE_BOX

    run = copy.deepcopy(run_config.schema()["properties"])
    method = {"enum": list(run["method"]["enum"])}
    model = {"enum": list(run["model"]["enum"])}
    dataset = {"enum": list(run["dataset"]["enum"])}
    positive = {"type": "number", "exclusiveMinimum": 0}
    strengths = _list({"type": "number", "minimum": 0, "maximum": 1},
                      description="attack strengths (L-inf budgets; images lie in [0, 1])")
    optimizer = {k: v for k, v in run["optimizer"]["properties"].items() if k != "lr"}
    count = {"type": "integer", "minimum": 1}
    inits = {"enum": list(INITS)}

    definitions = {
        "method": method,
        "resources": _object({
            "gpu": {"type": "integer", "minimum": 0, "description": "GPUs per node"},
            "processes": {**count, "description": "training processes per node (torchrun); "
                                                  "default: one per GPU, or one"},
            "nodes": {**count, "description": "nodes of one training job (srun)"},
            "threads": count,
            "mem_mb": count,
            "runtime": {**count, "description": "minutes"},
        }, description="what each job asks a scheduler for"),
        "lr": {
            "description": "one learning rate, or one per method with a default",
            "oneOf": [positive, _object({"default": positive,
                                         **{m: positive for m in method["enum"]}},
                                        required=["default"])],
        },
        "optimizer": _object({
            "name": run["optimizer"]["properties"]["name"],
            "lr": {"$ref": "#/definitions/lr"},
            **{k: v for k, v in optimizer.items() if k != "name"},
            "methods": _list({"$ref": "#/definitions/method"}, minItems=1,
                             description="only these methods use this optimizer (default: all of "
                                         "the experiment's)"),
            "models": _list(model, minItems=1,
                            description="only these models use this optimizer (default: all of "
                                        "the experiment's)"),
        }, required=["name", "lr"]),
        "strengths": strengths,
    }
    experiment = _object({
        "dataset": dataset,
        "models": _list(model, minItems=1),
        "methods": _list({"$ref": "#/definitions/method"}, minItems=1),
        "seeds": _list(run["seed"], minItems=1),
        "epochs": run["epochs"],
        "batch_size": run["batch_size"],
        "schedule": {**run["schedule"], "default": {"name": "constant"}},
        "layer": {**run["layer"], "default": {}, "properties": {
            **run["layer"]["properties"],
            "init": {"oneOf": [inits, _list(inits, minItems=1)],
                     "default": DEFAULTS["layer"]["init"],
                     "description": "the forward/backward initialization, or a list of them: "
                                    "each is a run of its own (the initialization study)"}}},
        "optimizers": {
            "type": "object", "minProperties": 1,
            "propertyNames": {"type": "string", "pattern": OPTIMIZER_KEY},
            "additionalProperties": {"$ref": "#/definitions/optimizer"},
            "description": "optimizer key (used in folder names) -> optimizer",
        },
        "run": _object({k: v for k, v in run.items() if k not in _SET_BY_STUDY}, default={},
                       description="further keys of the run config (biofa train)"),
        "resources": {"$ref": "#/definitions/resources"},
    }, required=["dataset", "models", "methods", "seeds", "epochs", "batch_size", "optimizers"])
    attacks = _object({
        "targets": _list(_object({
            "dataset": dataset,
            "model": model,
            "optimizer": {"type": "string", "pattern": OPTIMIZER_KEY},
            "init": {**inits, "description": "only the runs of this init (default: every "
                                             "init the setting is trained with)"},
        }, required=["dataset", "model", "optimizer"]), default=[],
            description="(dataset, model, optimizer key[, init]) settings whose every method "
                        "and seed is attacked"),
        "n_images": {**count, "default": 500},
        "batch_size": {**count, "default": 128},
        "seed": {"type": "integer", "minimum": 0, "default": 0},
        "white_box": _object({
            "attacks": _list({"enum": list(WHITE_BOX)}, default=[]),
            "gradients": _list({"enum": list(GRADIENTS)}, default=list(GRADIENTS)),
            "eps": {"$ref": "#/definitions/strengths"},
            "steps": {**count, "default": 10},
        }, default={}),
        "autoattack": _object({
            "eps": {"$ref": "#/definitions/strengths"},
            "gradients": _list({"enum": list(GRADIENTS)}, default=list(GRADIENTS)),
            "n_images": {**count, "description": "the first N of the attacked images "
                                                 "(default: attacks.n_images, at most it)"},
            "steps": {**count, "default": AUTOATTACK_STEPS,
                      "description": "iterations of APGD-CE, APGD-T and FAB-T"},
            "queries": {**count, "default": AUTOATTACK_QUERIES,
                        "description": "queries of its Square"},
        }, default={}, description="torchattacks' standard L-inf AutoAttack under each "
                                   "gradient; left out without eps"),
        "square": _object({
            "eps": {"$ref": "#/definitions/strengths"},
            "queries": {**count, "default": PAPER_SQUARE_QUERIES},
        }, default={}),
        "onepixel": _object({"pixels": _list({"type": "integer", "minimum": 0})}, default={}),
        "transfer": _object({"eps": {"$ref": "#/definitions/strengths"}}, default={},
                            description="PGD examples crafted on the bp run of the same "
                                        "dataset, model, optimizer and seed"),
        "resources": {"$ref": "#/definitions/resources"},
    }, default={})
    return {
        "$schema": _SCHEMA_URI,
        "description": "the study configuration of the workflow (config/config.yaml, "
                       "config/paper.yaml); see config/README.md",
        **_object({
            "data_root": {"type": "string", "minLength": 1, "default": "data"},
            "results": {"type": "string", "minLength": 1, "default": "results"},
            "device": {**run["device"], "default": "auto"},
            "experiments": {"type": "array", "minItems": 1, "items": experiment},
            "attacks": attacks,
            "smoke": {"type": "boolean", "default": False,
                      "description": "run the whole study's DAG on stand-in data, one epoch "
                                     "and a few attacked images (see smoke_study)"},
        }, required=["experiments"]),
        "definitions": definitions,
    }


def schema_yaml() -> str:
    """The text of ``workflow/schemas/config.schema.yaml``."""
    plain = json.loads(json.dumps(schema()))  # no shared objects, so no YAML anchors
    return ("# Generated by `python -m biofa.study.study_config > workflow/schemas/config.schema.yaml`"
            "\n# from biofa's registries; edit biofa/study_config.py, not this file.\n"
            + yaml.safe_dump(plain, sort_keys=False, width=100))


# --- error messages ----------------------------------------------------------------------

def key_path(parts) -> str:
    """``experiments[0].optimizers.sgd.lr`` from a jsonschema path."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def resolve(node: dict, root: dict) -> dict:
    """``node`` with a local ``$ref`` followed."""
    while isinstance(node, dict) and "$ref" in node:
        target = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _value(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(node: dict, root: dict) -> str:
    """What a schema accepts, in words."""
    node = resolve(node, root)
    if "enum" in node:
        return "one of " + ", ".join("null" if v is None else str(v) for v in node["enum"])
    for alternatives in ("oneOf", "anyOf"):
        if alternatives in node:
            return " or ".join(describe(n, root) for n in node[alternatives])
    kind = node.get("type")
    if kind in ("number", "integer"):
        bounds = [f"{word} {node[key]:g}" for key, word in (
            ("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<=")) if key in node]
        return ("a number" if kind == "number" else "an integer") + \
            ("" if not bounds else " " + " and ".join(bounds))
    if kind == "string":
        if "pattern" in node:
            return _PATTERN_WORDS.get(node["pattern"], f"a string matching {node['pattern']}")
        return "a non-empty string" if node.get("minLength") else "a string"
    if kind == "boolean":
        return "true or false"
    if kind == "null":
        return "null"
    if kind == "array":
        size = "items"
        if node.get("minItems") and node.get("minItems") == node.get("maxItems"):
            size = f"{node['minItems']} items"
        elif node.get("minItems"):
            size = "at least one item"
        repeats = ", without repeats" if node.get("uniqueItems") else ""
        return f"a list of {size}, each {describe(node.get('items', {}), root)}{repeats}"
    if kind == "object":
        if node.get("properties"):
            return "a mapping with keys " + ", ".join(node["properties"])
        values = node.get("additionalProperties")
        if isinstance(values, dict):
            return f"a mapping of names to {describe(values, root)}"
        return "a mapping"
    return "anything"


def _branch_error(error: jsonschema.ValidationError, validator):
    """Of a oneOf/anyOf failure, the error of the alternative whose type fits the value."""
    branches: dict[int, list] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    for index, alternative in enumerate(error.validator_value):
        kind = resolve(alternative, validator.schema).get("type")
        if kind and validator.is_type(error.instance, kind) and index in branches:
            return _first(branches[index])
    return None


def _first(errors):
    return sorted(errors, key=lambda e: (len(e.absolute_path), key_path(e.absolute_path)))[0]


def _explain(error: jsonschema.ValidationError, validator) -> str:
    root = validator.schema
    path = list(error.absolute_path)
    key = key_path(path)
    if error.validator in ("oneOf", "anyOf"):
        deeper = _branch_error(error, validator)
        # the alternative the value was meant for explains it better, unless it merely
        # repeats "wrong value here": then the whole choice is the clearer answer
        if deeper is not None and (list(deeper.absolute_path) != path or deeper.validator in (
                "required", "additionalProperties", "propertyNames", "minProperties")):
            return _explain(deeper, validator)
    if "propertyNames" in error.schema_path:
        return (f"config key {key_path([*path, error.instance])!r}: not a valid name; "
                f"allowed: {describe(error.schema, root)}")
    if error.validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed]
        return (f"unknown config key {', '.join(repr(key_path([*path, u])) for u in unknown)}; "
                f"allowed keys{' under ' + repr(key) if path else ''}: {', '.join(allowed)}")
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return (f"config key {key_path([*path, missing[0]])!r} is missing; required keys"
                f"{' under ' + repr(key) if path else ''}: {', '.join(error.validator_value)}")
    problem = {"uniqueItems": " (an item is repeated)",
               "minItems": " (too few items)", "maxItems": " (too many items)",
               "minProperties": " (empty)"}.get(error.validator, "")
    return (f"config key {key!r}: got {_value(error.instance)}{problem}; "
            f"allowed: {describe(error.schema, root)}")


def _fill(node: dict, value, root: dict) -> None:
    """Set the schema's defaults for keys left out, in place."""
    node = resolve(node, root)
    if isinstance(value, dict):
        properties = node.get("properties", {})
        for name, sub in properties.items():
            sub_node = resolve(sub, root)
            if name not in value and "default" in sub_node:
                value[name] = copy.deepcopy(sub_node["default"])
            if name in value:
                _fill(sub, value[name], root)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for name, sub_value in value.items():
                if name not in properties:
                    _fill(extra, sub_value, root)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            _fill(node["items"], item, root)


# --- the runs of a study -----------------------------------------------------------------

def experiment_runs(config: dict, index: int) -> Iterator[dict]:
    """The runs experiment ``index`` produces: dicts of the :data:`RUN_KEYS` wildcards.

    Every model x optimizer x init x method x seed, less the combinations an optimizer's
    ``models:`` / ``methods:`` filters leave out.
    """
    experiment = config["experiments"][index]
    for model in experiment["models"]:
        for key, optimizer in experiment["optimizers"].items():
            if model not in optimizer.get("models", [model]):
                continue
            for init in experiment_inits(experiment):
                for method in experiment["methods"]:
                    if method not in optimizer.get("methods", [method]):
                        continue
                    for seed in experiment["seeds"]:
                        yield dict(dataset=experiment["dataset"], model=model, optimizer=key,
                                   init=init, method=method, seed=seed)


def experiment_inits(experiment: dict) -> list[str]:
    """The inits an experiment trains: its ``layer.init``, one scheme or a list of them."""
    from .config import DEFAULTS

    init = experiment.get("layer", {}).get("init", DEFAULTS["layer"]["init"])
    return list(init) if isinstance(init, list) else [init]


def runs(config: dict) -> list[dict]:
    """Every training run of the study, in the order of its experiments."""
    return [run for index in range(len(config["experiments"]))
            for run in experiment_runs(config, index)]


def run_key(run) -> tuple[str, ...]:
    """The identity of a run (a dict or snakemake's wildcards), as strings."""
    get = run.get if isinstance(run, dict) else lambda k: getattr(run, k)
    return tuple(str(get(k)) for k in RUN_KEYS)


def experiment_index(config: dict) -> dict[tuple[str, ...], int]:
    """Run key -> index of the experiment that produces it (overlaps are refused earlier)."""
    return {run_key(run): index for index in range(len(config["experiments"]))
            for run in experiment_runs(config, index)}


def run_config(config: dict, experiment: dict, run) -> dict:
    """The biofa run config of one run of ``experiment`` (not yet validated)."""
    get = run.get if isinstance(run, dict) else lambda k: getattr(run, k)
    optimizer = {k: v for k, v in experiment["optimizers"][get("optimizer")].items()
                 if k not in ("methods", "models")}
    lr = optimizer["lr"]
    optimizer["lr"] = lr.get(get("method"), lr["default"]) if isinstance(lr, dict) else lr
    return {
        "dataset": get("dataset"), "data_root": config.get("data_root", "data"),
        "model": get("model"), "method": get("method"), "optimizer": optimizer,
        "schedule": experiment.get("schedule", {"name": "constant"}),
        "layer": {**experiment.get("layer", {}), "init": get("init")},
        "epochs": experiment["epochs"],
        "batch_size": experiment["batch_size"], "seed": int(get("seed")),
        "device": config.get("device", "auto"),
        # the job's cores, shared by its processes on a node
        "threads": max(1, experiment.get("resources", {}).get("threads", 1)
                       // processes_per_node(experiment.get("resources", {}))),
        **experiment.get("run", {}),
    }


#: The port torchrun's rendezvous listens on, on a multi-node job's first node.
RENDEZVOUS_PORT = 29500


def processes_per_node(resources: dict) -> int:
    """An experiment's training processes per node: ``processes``, or one per GPU, or one."""
    return int(resources.get("processes") or resources.get("gpu") or 1)


def launcher(resources: dict) -> str:
    """The shell words that start ``biofa train`` as an experiment's ``resources`` ask:
    nothing for one process; torchrun for several on one node; on several nodes, srun
    starts one torchrun per node of the job's SLURM allocation, which meet at the first
    node (torchrun's c10d rendezvous, keyed by the job id)."""
    processes, nodes = processes_per_node(resources), int(resources.get("nodes", 1))
    if processes * nodes == 1:
        return ""
    if nodes == 1:
        return f"torchrun --standalone --nnodes 1 --nproc-per-node {processes} --no-python"
    return (
        f'srun --overlap --nodes {nodes} --ntasks-per-node 1 --kill-on-bad-exit=1 '
        f'torchrun --nnodes {nodes} --nproc-per-node {processes} --rdzv-backend c10d '
        '--rdzv-id "${SLURM_JOB_ID:?resources nodes > 1 need a SLURM job: '
        'snakemake --profile profiles/slurm}" '
        '--rdzv-endpoint "$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"'
        f':{RENDEZVOUS_PORT} --no-python')


# --- checks beyond the schema ------------------------------------------------------------

def _folder(run) -> str:
    return RUN_FOLDER.format(**run)


def _label(index: int, experiment: dict) -> str:
    return f"experiments[{index}] ({experiment['dataset']}: {', '.join(experiment['models'])})"


def _check_experiment(index: int, experiment: dict) -> None:
    where = f"experiments[{index}]"
    schedule, epochs = experiment["schedule"], experiment["epochs"]
    milestones = schedule.get("milestones", [])
    late = [m for m in milestones if m > epochs]
    if late:
        raise ConfigError(f"config key '{where}.schedule.milestones': {late} lie beyond "
                          f"epochs={epochs}; allowed: increasing epochs from 1 to {epochs}")
    if any(b <= a for a, b in zip(milestones, milestones[1:])):
        raise ConfigError(f"config key '{where}.schedule.milestones': got {milestones}; "
                          f"allowed: increasing epochs from 1 to {epochs}")
    if schedule["name"] == "multistep" and not milestones:
        raise ConfigError(f"config key '{where}.schedule.milestones' is missing; multistep needs "
                          f"at least one milestone (allowed: increasing epochs from 1 to {epochs})")
    for key, optimizer in experiment["optimizers"].items():
        at = f"{where}.optimizers.{key}"
        for name in ("models", "methods"):
            outside = [v for v in optimizer.get(name, []) if v not in experiment[name]]
            if outside:
                raise ConfigError(f"config key '{at}.{name}': {', '.join(outside)} "
                                  f"not among {where}.{name}; allowed: a subset of "
                                  f"{', '.join(experiment[name])}")
        lr = optimizer["lr"]
        if isinstance(lr, dict):
            trained = [m for m in experiment["methods"] if m in optimizer.get("methods", [m])]
            for method in lr:
                if method != "default" and method not in trained:
                    raise ConfigError(f"config key '{at}.lr.{method}': {key} never trains "
                                      f"{method} in {where}; allowed keys: default, "
                                      f"{', '.join(trained)}")


def _check_runs(config: dict) -> list[dict]:
    """Overlapping experiments and optimizers the report could not tell apart."""
    experiments = config["experiments"]
    owner: dict[tuple, int] = {}
    named: dict[tuple, tuple[int, str]] = {}
    every = []
    for index, experiment in enumerate(experiments):
        for run in experiment_runs(config, index):
            key = run_key(run)
            if key in owner:
                first = owner[key]
                raise ConfigError(
                    f"{_label(first, experiments[first])} and {_label(index, experiment)} both "
                    f"train {_folder(run)}; each run must come from one experiment (give them "
                    f"different methods, models, seeds, inits or optimizer keys)")
            owner[key] = index
            every.append((index, run))
            name = experiment["optimizers"][run["optimizer"]]["name"]
            setting = (run["dataset"], run["model"], run["init"], run["method"], name)
            other = named.setdefault(setting, (index, run["optimizer"]))
            if other[1] != run["optimizer"]:
                raise ConfigError(
                    f"config keys 'experiments[{other[0]}].optimizers.{other[1]}' and "
                    f"'experiments[{index}].optimizers.{run['optimizer']}' are both {name} for "
                    f"{run['dataset']}/{run['model']}/{run['init']}/{run['method']}: tables and "
                    f"figures key runs by the optimizer's name, so their runs could not be told "
                    f"apart; keep one {name} per data set, model, init and method")
    return every


def _check_attacks(config: dict, every: list[tuple[int, dict]]) -> None:
    attacks = config["attacks"]
    trained: dict[tuple, set] = {}
    for _, run in every:
        trained.setdefault((run["dataset"], run["model"], run["optimizer"]), set()).add(
            (run["init"], run["method"], run["seed"]))
    for t, target in enumerate(attacks["targets"]):
        setting = (target["dataset"], target["model"], target["optimizer"])
        if setting not in trained:
            raise ConfigError(f"config key 'attacks.targets[{t}]': no experiment trains "
                              f"{'/'.join(setting)}; allowed: one of "
                              f"{', '.join('/'.join(s) for s in trained)}")
        attacked = {r for r in trained[setting] if is_target(target, {**target, "init": r[0]})}
        if not attacked:
            inits = sorted({init for init, _, _ in trained[setting]})
            raise ConfigError(f"config key 'attacks.targets[{t}].init': {'/'.join(setting)} is "
                              f"never trained with init {target['init']}; allowed: "
                              f"{', '.join(inits)}")
        if attacks["transfer"].get("eps"):
            seeds = sorted({f"{seed} ({init})" for init, method, seed in attacked
                            if ((init, "bp", seed) not in attacked)})
            if seeds:
                raise ConfigError(
                    f"config key 'attacks.transfer': transfer attacks craft their examples on "
                    f"the bp run of the same data set, model, optimizer, init and seed, and "
                    f"{'/'.join(setting)} (attacks.targets[{t}]) trains no bp for seed "
                    f"{', '.join(map(str, seeds))}; add bp to its experiment's methods or "
                    f"leave attacks.transfer.eps empty")
    _check_sections(attacks)


def _check_sections(attacks: dict) -> None:
    """White-box attacks have strengths; AutoAttack's images are among the attacked ones."""
    white = attacks["white_box"]
    if white["attacks"] and white["gradients"] and not white.get("eps"):
        raise ConfigError("config key 'attacks.white_box.eps' is missing; white-box attacks "
                          "need their strengths (allowed: a list of numbers from 0 to 1)")
    own = attacks["autoattack"].get("n_images")
    if own is not None and own > attacks["n_images"]:
        raise ConfigError(f"config key 'attacks.autoattack.n_images': got {own}, more than "
                          f"the {attacks['n_images']} of attacks.n_images; allowed: an integer "
                          f"from 1 to {attacks['n_images']}")


def validate_attacks(section) -> dict:
    """A study's ``attacks:`` section with its defaults filled in, or ``ConfigError`` naming
    the first bad key in one line, as :func:`validate_study` does (``config key
    'attacks.square.queries': got 0; allowed: an integer >= 1``): what ``biofa attack
    --plan`` reads.

    Checks the study schema's ``attacks`` part, that white-box attacks have strengths and
    that AutoAttack's own images are among the attacked ones;
    the checks that need the study's experiments (targets trained, a bp run for each
    transfer target) are ``validate_study``'s.
    """
    if not isinstance(section, dict):
        raise ConfigError("an attacks section is a mapping of keys to values (a YAML "
                          "dictionary with targets, white_box, square, onepixel, transfer)")
    study = schema()  # the attacks part, under its key, so errors name 'attacks.KEY'
    validator = jsonschema.Draft202012Validator({
        "$schema": study["$schema"], "type": "object", "additionalProperties": False,
        "properties": {"attacks": study["properties"]["attacks"]}, "required": ["attacks"],
        "definitions": study["definitions"]})
    wrapped = {"attacks": copy.deepcopy(section)}
    errors = list(validator.iter_errors(wrapped))
    if errors:
        raise ConfigError(_explain(_first(errors), validator))
    _fill(validator.schema, wrapped, validator.schema)
    _check_sections(wrapped["attacks"])
    return wrapped["attacks"]


def is_target(target: dict, run) -> bool:
    """Whether an ``attacks.targets`` entry attacks ``run`` (a dict or wildcards): a target
    names a data set, model and optimizer key, and an init or (without one) every init."""
    get = run.get if isinstance(run, dict) else lambda k: getattr(run, k)
    return all(str(get(k)) == str(target[k]) for k in ("dataset", "model", "optimizer", "init")
               if k in target)


def is_study(config) -> bool:
    """Whether a config is meant as a study: it has a key only a study config has."""
    from .config import schema as run_schema

    if not isinstance(config, dict):
        return False
    return bool(set(config) & (set(schema()["properties"]) - set(run_schema()["properties"])))


def validate_study(config: dict) -> dict:
    """The study config with defaults filled in, or ``ConfigError`` naming the first bad key.

    Beyond the schema: no two experiments produce the same run; optimizer filters and
    per-method learning rates name methods and models of their experiment; milestones
    fit the epochs; attack targets are trained, with a bp run for transfer attacks; and
    every run config the study generates passes ``biofa.study.config.validate``.
    """
    from .config import validate as validate_run

    if not isinstance(config, dict):
        raise ConfigError("a study config is a mapping of keys to values (a YAML dictionary)")
    if config.get("smoke") in ("true", "false"):  # snakemake --config smoke=true gives text
        config = {**config, "smoke": config["smoke"] == "true"}
    validator = jsonschema.Draft202012Validator(schema())
    errors = list(validator.iter_errors(config))
    if errors:
        raise ConfigError(_explain(_first(errors), validator))
    config = copy.deepcopy(config)
    _fill(validator.schema, config, validator.schema)
    for index, experiment in enumerate(config["experiments"]):
        _check_experiment(index, experiment)
    every = _check_runs(config)
    _check_attacks(config, every)
    for index, run in every:
        try:
            validate_run(run_config(config, config["experiments"][index], run))
        except ConfigError as error:
            raise ConfigError(f"experiments[{index}], run {_folder(run)}: {error}") from None
    return smoke_study(config) if config["smoke"] else config


#: Images each attack of a smoke run attacks (OnePixel's differential evolution costs
#: thousands of forward passes per image).
SMOKE_IMAGES = 2
#: Where a smoke run keeps its stand-in data and its results: beside, never inside, the
#: real study's.
SMOKE_DATA, SMOKE_RESULTS = "stand-in", "-smoke"


def smoke_study(config: dict) -> dict:
    """The study with every job it has, shrunk to a check that none of them crashes.

    The DAG keeps every run, attack, table and figure of ``config``, every model at its
    real size and every key of its experiments (batch sizes, channels_last, amp ...), but
    runs each job as one process on one thread (and at most one loader worker) and trains one epoch on the stand-in data that ``biofa data NAME --stand-in`` writes in
    each data set's real on-disk format (below ``data_root``/stand-in, so stand-in files
    never mix with downloaded ones), and attacks :data:`SMOKE_IMAGES` images per attack
    (AutoAttack's Square with at most the paper's 50 queries).
    Results go to ``results``-smoke. It is run before booking GPU time for the real study:
    ``snakemake --cores 2 --configfile config/paper.yaml --config smoke=true``.
    """
    config = copy.deepcopy(config)
    config["data_root"] = f"{config['data_root'].rstrip('/')}/{SMOKE_DATA}"
    config["results"] = f"{config['results'].rstrip('/')}{SMOKE_RESULTS}"
    for experiment in config["experiments"]:
        experiment["epochs"] = 1
        if experiment["schedule"].get("milestones"):
            experiment["schedule"]["milestones"] = [1]
        # one thread and at most one loader worker per job: a job of a few tiny batches is
        # mostly Python starting, so the jobs run side by side instead of one at a time,
        # and the worker path of the data loaders is still exercised
        experiment.setdefault("resources", {})["threads"] = 1
        # and one process: two of ImageNet's DFA run would hold its 8.7 GB of feedback
        # twice; the multi-process path has tests of its own (tests/test_distributed_train.py)
        experiment["resources"].update(processes=1, nodes=1)
        run = experiment.setdefault("run", {})
        run["workers"] = min(run.get("workers", 0), 1)
    attacks = config["attacks"]
    attacks["n_images"] = min(attacks["n_images"], SMOKE_IMAGES)
    attacks["batch_size"] = min(attacks["batch_size"], SMOKE_IMAGES)
    auto = attacks["autoattack"]
    if "n_images" in auto:
        auto["n_images"] = min(auto["n_images"], SMOKE_IMAGES)
    # AutoAttack's Square on the budget of the study's own Square: its 5000 queries on
    # every image still standing would be most of the smoke run's time
    auto["queries"] = min(auto["queries"], PAPER_SQUARE_QUERIES)
    attacks.setdefault("resources", {})["threads"] = 1
    return config


if __name__ == "__main__":
    sys.stdout.write(schema_yaml())
