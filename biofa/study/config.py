"""The run configuration of ``biofa train``: its schema, its defaults and its checks.

A config is checked completely before any work starts; the first problem found is
reported with its key and what the key accepts, e.g.::

    config key 'optimizer.lr': -0.1 is less than or equal to the minimum of 0 (allowed: a number greater than 0)

Every message is one line, because ``biofa`` prints it as ``biofa train: error: ...``.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..errors import ConfigError
from ..layers import LAYER_OPTIONS
from ..methods import INITS, METHODS
from ..models import MODELS


def _number(minimum=None, exclusive=None, **extra):
    schema = {"type": "number", **extra}
    if minimum is not None:
        schema["minimum"] = minimum
    if exclusive is not None:
        schema["exclusiveMinimum"] = exclusive
    return schema


def _object(properties: dict, required=()) -> dict:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


def schema() -> dict:
    """The JSON schema of a run config; enums come from the registries, so never drift.

    A ``pattern`` key's ``description`` says in words what the pattern allows: error
    messages quote it instead of the regular expression.
    """
    from .data import DATASETS  # data imports torchvision lazily; keep config import light

    return _object({
        "dataset": {"enum": sorted(DATASETS), "description": "data set name"},
        "data_root": {"type": "string", "description": "folder holding the data sets"},
        "model": {"enum": sorted(MODELS)},
        "method": {"enum": sorted(METHODS)},
        "layer": _object({
            "init": {"enum": [None, *INITS]},
            "gradient_clip": {"anyOf": [{"type": "null"}, {"type": "boolean"},
                                        _number(exclusive=0)]},
            "constrain_weights": {"type": "boolean"},
        }),
        "optimizer": _object({
            "name": {"enum": ["sgd", "adam"]},
            "lr": _number(exclusive=0),
            "momentum": _number(minimum=0, maximum=1),
            "nesterov": {"type": "boolean"},
            "weight_decay": _number(minimum=0),
            "betas": {"type": "array", "items": _number(minimum=0, maximum=1),
                      "minItems": 2, "maxItems": 2},
            "fused": {"type": "boolean",
                      "description": "torch's one-call fused update; false: its per-parameter loop"},
        }, required=["name", "lr"]),
        "schedule": _object({
            "name": {"enum": ["constant", "multistep", "cosine"]},
            "milestones": {"type": "array", "items": {"type": "integer", "minimum": 1}},
            "gamma": _number(exclusive=0, maximum=1),
            "min_lr": _number(minimum=0),
        }, required=["name"]),
        "epochs": {"type": "integer", "minimum": 1},
        "batch_size": {"type": "integer", "minimum": 1},
        "eval_batch_size": {"type": "integer", "minimum": 1},
        "seed": {"type": "integer", "minimum": 0},
        "deterministic": {"type": "boolean"},
        "device": {"type": "string", "pattern": "^(auto|cpu|cuda(:[0-9]+)?)$",
                   "description": "auto, cpu, cuda or cuda:N with N a GPU index"},
        "threads": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 1}]},
        "workers": {"type": "integer", "minimum": 0},
        "amp": {"type": "boolean", "description": "mixed precision on CUDA"},
        "channels_last": {"type": "boolean"},
        "compile": {"anyOf": [{"type": "boolean"}, {"enum": list(COMPILE_MODES)}],
                    "description": "torch.compile the training step (fullgraph): true for "
                                   "torch's default mode, or a mode such as reduce-overhead "
                                   "(CUDA graphs on a GPU)"},
        "alignment_batch": {"type": "integer", "minimum": 0,
                            "description": "images for the per-epoch gradient alignment; 0 skips"},
        "sync_batchnorm": {"type": "boolean",
                           "description": "under torchrun on GPUs: batch statistics over the "
                                          "global batch (torch's SyncBatchNorm)"},
    }, required=["dataset", "model", "method", "optimizer", "epochs", "batch_size"])


#: torch.compile's modes; ``compile: true`` is "default".
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


DEFAULTS: dict[str, Any] = {
    "data_root": "data",
    "layer": {"init": "xavier", "gradient_clip": None, "constrain_weights": False},
    "optimizer": {"momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "betas": [0.9, 0.999],
                  "fused": True},
    "schedule": {"name": "constant", "milestones": [], "gamma": 0.1, "min_lr": 0.0},
    "eval_batch_size": 256,
    "seed": 0,
    "deterministic": False,
    "device": "auto",
    "threads": None,
    "workers": 0,
    "amp": False,
    "channels_last": False,
    "compile": False,
    "alignment_batch": 256,
    "sync_batchnorm": False,
}


# ----------------------------------------------------------------------------- checking

def _is_integer(checker, instance) -> bool:
    # JSON Schema counts 10.0 as an integer, but range(), DataLoader and manual_seed do not
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(checker, instance) -> bool:
    # .nan and .inf pass every minimum/maximum comparison, so they are refused by type
    return (isinstance(instance, (int, float)) and not isinstance(instance, bool)
            and math.isfinite(instance))


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}))


def _yaml(value) -> str:
    """A value as it is written in a config (null, true, [1, 2]), for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e16 else str(value)
    return str(value)


def _or(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _numbers(schema: dict, plural: bool = False) -> str:
    noun = ("integers" if plural else "an integer") if schema["type"] == "integer" else \
        ("numbers" if plural else "a number")
    low, low_excl, high = (schema.get(k) for k in ("minimum", "exclusiveMinimum", "maximum"))
    if low is not None and high is not None:
        return f"{noun} from {_yaml(low)} to {_yaml(high)}"
    if low_excl is not None and high is not None:
        return f"{noun} greater than {_yaml(low_excl)} and at most {_yaml(high)}"
    if low_excl is not None:
        return f"{noun} greater than {_yaml(low_excl)}"
    if low is not None:
        return f"{noun} of at least {_yaml(low)}"
    if high is not None:
        return f"{noun} of at most {_yaml(high)}"
    return noun


def describe(schema: dict) -> str:
    """What a (sub)schema of the run config accepts, in words: 'a number from 0 to 1'."""
    if "enum" in schema:
        return "one of " + ", ".join(_yaml(v) for v in schema["enum"])
    if "anyOf" in schema:
        parts = [part for branch in schema["anyOf"]
                 for part in (["true", "false"] if branch.get("type") == "boolean"
                              else [describe(branch)])]
        return _or(parts)
    kind = schema.get("type")
    if kind == "null":
        return "null"
    if kind == "boolean":
        return "true or false"
    if kind in ("number", "integer"):
        return _numbers(schema)
    if kind == "string":
        if "pattern" in schema:
            return schema.get("description") or f"a string matching {schema['pattern']}"
        return "a string" + (f" ({schema['description']})" if "description" in schema else "")
    if kind == "array":
        items = schema.get("items", {})
        each = _numbers(items, plural=True) if items.get("type") in ("number", "integer") \
            else describe(items)
        low, high = schema.get("minItems"), schema.get("maxItems")
        if low is not None and low == high:
            return f"a list of {low} {each}"
        size = (f" of at least {low}" if low else "") + (f" of at most {high}" if high else "")
        return f"a list{size} of {each}"
    if kind == "object":
        return "a mapping of the keys " + ", ".join(sorted(schema.get("properties", {})))
    return "a valid value"


def _key(path) -> str:
    """A dotted config key; list items as key[i]: 'optimizer.betas[0]'."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def _nearest(word, choices) -> str:
    names = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(names), n=1, cutoff=0.6)
    return f"; did you mean {names[close[0]]!r}?" if close else ""


_YAML_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _explain(error: jsonschema.ValidationError) -> str:
    key = _key(error.absolute_path)
    allowed = describe(error.schema)
    if error.validator == "additionalProperties":
        names = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(names), key=str)
        where = f"{key}." if error.absolute_path else ""
        return (f"unknown config key {', '.join(repr(where + _yaml(u)) for u in unknown)}; "
                f"allowed keys{' under ' + repr(key) if error.absolute_path else ''}: "
                f"{', '.join(names)}{_nearest(_yaml(unknown[0]), names)}")
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        where = f"{key}." if error.absolute_path else ""
        sub = error.schema["properties"][missing[0]]
        return f"config key {where + missing[0]!r} is missing (allowed: {describe(sub)})"
    if error.validator == "enum":
        values = ", ".join(_yaml(v) for v in error.validator_value)
        text = f"config key {key!r}: {error.instance!r} is not allowed; allowed values: {values}"
        return text + (_nearest(error.instance, error.validator_value)
                       if isinstance(error.instance, str) else "")
    if error.validator == "type" and isinstance(error.instance, float) \
            and not math.isfinite(error.instance):
        return f"config key {key!r}: {_yaml(error.instance)} is not a finite number (allowed: {allowed})"
    if error.validator in ("anyOf", "pattern"):
        message = f"{error.instance!r} is not allowed"
    else:
        message = error.message
    hint = ""
    if isinstance(error.instance, str) and _YAML_FLOAT.match(error.instance) \
            and "number" in allowed:
        mantissa, _, exponent = error.instance.lower().partition("e")
        mantissa += "" if "." in mantissa else ".0"
        hint = f"; YAML reads {error.instance} as text, write {mantissa}e{exponent}"
    return f"config key {key!r}: {message} (allowed: {allowed}){hint}"


_PRIORITY = {"additionalProperties": 0, "required": 1}


def _order(error: jsonschema.ValidationError):
    """Shallow keys first; at one key, a misspelt name before the missing key it causes."""
    return len(error.absolute_path), _key(error.absolute_path), _PRIORITY.get(error.validator, 2)


def _kind(value) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def validate(config: dict) -> dict:
    """The config with defaults filled in, or ``ConfigError`` naming the first bad key."""
    if not isinstance(config, dict):
        raise ConfigError(f"a run config is a mapping of keys to values (a YAML dictionary such "
                          f"as 'dataset: digits'), not a {_kind(config)}")
    errors = sorted(_Validator(schema()).iter_errors(config), key=_order)
    if errors:
        raise ConfigError(_explain(errors[0]))
    config = _merge(DEFAULTS, config)
    schedule, epochs = config["schedule"], config["epochs"]
    late = [m for m in schedule["milestones"] if m > epochs]
    if late:
        raise ConfigError(f"config key 'schedule.milestones': {late} lie beyond epochs={epochs}; "
                          f"milestones must be at most the number of epochs ({epochs})")
    if schedule["name"] == "multistep" and not schedule["milestones"]:
        raise ConfigError("config key 'schedule.milestones': multistep needs at least one milestone "
                          f"(allowed: a list of increasing epochs from 1 to {epochs})")
    if any(b <= a for a, b in zip(schedule["milestones"], schedule["milestones"][1:])):
        raise ConfigError(f"config key 'schedule.milestones': {schedule['milestones']} is not "
                          f"increasing (allowed: a list of increasing epochs from 1 to {epochs})")
    optimizer = config["optimizer"]
    if optimizer["name"] == "sgd" and optimizer["nesterov"] and optimizer["momentum"] == 0:
        raise ConfigError("config key 'optimizer.nesterov': true needs optimizer.momentum greater "
                          "than 0 (Nesterov momentum without momentum is undefined)")
    assert set(config["layer"]) <= set(LAYER_OPTIONS)
    return config


def _merge(defaults: dict, given: dict) -> dict:
    merged = copy.deepcopy(defaults)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read(path: str | Path) -> dict:
    """A YAML run config as written, not yet checked (so overrides can still apply).

    Anything that is not a YAML mapping is refused here, so ``--set`` overrides always
    apply to a mapping; an empty file reads as ``{}`` (and then misses its required keys).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} is not a file (a folder?); "
                          "pass a YAML run config such as config/examples/digits_lenet.yaml")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {str(path)!r} is not text (a YAML run config is UTF-8): "
                          f"byte {error.start} cannot be decoded") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {_yaml_problem(error)}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"config file {str(path)!r} holds a {_kind(config)}, but a run config is "
                          "a mapping of keys to values (a YAML dictionary such as 'dataset: digits')")
    return config


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's multi-line report as one line: the problem and where."""
    problem = getattr(error, "problem", None) or getattr(error, "context", None)
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if problem is None:
        return " ".join(str(error).split())
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(error, "context", None)
    return f"{context + ': ' if context and context != problem else ''}{problem}{where}"


def load(path: str | Path) -> dict:
    """Read and validate a YAML run config."""
    return validate(read(path))
