"""The run configuration of ``biofa train``: its schema, its defaults and its checks.

A config is checked completely before any work starts; the first problem found is
reported with its key and what the key accepts, e.g.::

    config key 'optimizer.lr': -0.1 is less than the minimum of 0 (a positive number)
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import ConfigError
from .layers import LAYER_OPTIONS
from .methods import INITS, METHODS
from .models import MODELS


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
    """The JSON schema of a run config; enums come from the registries, so never drift."""
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
        "device": {"type": "string", "pattern": "^(auto|cpu|cuda(:[0-9]+)?)$"},
        "threads": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 1}]},
        "workers": {"type": "integer", "minimum": 0},
        "amp": {"type": "boolean", "description": "mixed precision on CUDA"},
        "channels_last": {"type": "boolean"},
        "alignment_batch": {"type": "integer", "minimum": 0,
                            "description": "images for the per-epoch gradient alignment; 0 skips"},
    }, required=["dataset", "model", "method", "optimizer", "epochs", "batch_size"])


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
    "alignment_batch": 256,
}

_HINTS = {"exclusiveMinimum": "a positive number", "minimum": "at least the minimum",
          "type": "a value of the right type", "pattern": "auto, cpu, cuda or cuda:N"}


def _key(path) -> str:
    return ".".join(str(part) for part in path) or "<top level>"


def _explain(error: jsonschema.ValidationError) -> str:
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        where = f"{key}." if error.absolute_path else ""
        return (f"unknown config key {', '.join(repr(where + u) for u in unknown)}; "
                f"allowed keys{' under ' + repr(key) if error.absolute_path else ''}: {', '.join(allowed)}")
    if error.validator == "required":
        return f"config key {key!r}: {error.message}"
    if error.validator == "enum":
        allowed = ", ".join("null" if v is None else str(v) for v in error.validator_value)
        return f"config key {key!r}: {error.instance!r} is not allowed; allowed values: {allowed}"
    hint = _HINTS.get(error.validator)
    return f"config key {key!r}: {error.message}" + (f" (expected {hint})" if hint else "")


def _merge(defaults: dict, given: dict) -> dict:
    merged = copy.deepcopy(defaults)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def validate(config: dict) -> dict:
    """The config with defaults filled in, or ``ConfigError`` naming the first bad key."""
    if not isinstance(config, dict):
        raise ConfigError("a run config is a mapping of keys to values (a YAML dictionary)")
    errors = sorted(jsonschema.Draft7Validator(schema()).iter_errors(config),
                    key=lambda e: (len(e.absolute_path), _key(e.absolute_path)))
    if errors:
        raise ConfigError(_explain(errors[0]))
    config = _merge(DEFAULTS, config)
    schedule, epochs = config["schedule"], config["epochs"]
    late = [m for m in schedule["milestones"] if m > epochs]
    if late:
        raise ConfigError(f"config key 'schedule.milestones': {late} lie beyond epochs={epochs}; "
                          f"milestones must be at most the number of epochs")
    if schedule["name"] == "multistep" and not schedule["milestones"]:
        raise ConfigError("config key 'schedule.milestones': multistep needs at least one milestone")
    if sorted(schedule["milestones"]) != schedule["milestones"]:
        raise ConfigError("config key 'schedule.milestones': milestones must be increasing")
    assert set(config["layer"]) <= set(LAYER_OPTIONS)
    return config


def read(path: str | Path) -> dict:
    """A YAML run config as written, not yet checked (so overrides can still apply)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None


def load(path: str | Path) -> dict:
    """Read and validate a YAML run config."""
    return validate(read(path))
