"""Run configs for tests: the digits example with some keys changed, written to a folder."""

from pathlib import Path

import yaml

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "examples" / "digits_lenet.yaml"


def write_config(folder: Path, **changes) -> Path:
    """The example with ``changes`` (dotted keys, e.g. ``optimizer.lr``) as a new YAML file
    in ``folder``: run.yaml, then run-1.yaml, ... so one test can write several."""
    config = yaml.safe_load(EXAMPLE.read_text())
    for key, value in changes.items():
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    taken = len(list(folder.glob("run*.yaml")))
    path = folder / ("run.yaml" if not taken else f"run-{taken}.yaml")
    path.write_text(yaml.safe_dump(config))
    return path
