"""docs/write-a-rule.md runs as written: its rule file, its Python block, its entry point
and its run config, trained by ``biofa train`` in a fresh process."""

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

import biofa

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "write-a-rule.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", PAGE.read_text(), re.S | re.M)


def rule_file() -> tuple[str, str]:
    """(file name, code) of the block that starts with ``# NAME.py``."""
    (code,) = [b for b in blocks("python") if re.match(r"# \w+\.py\n", b)]
    return code.split("\n", 1)[0][2:], code


def run(args, env_extra, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "BIOFA_PLUGINS"}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "biofa.study.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_rule_is_one_short_file_that_registers_and_trains(tmp_path, monkeypatch):
    name, code = rule_file()
    assert len(code.splitlines()) <= 40
    (tmp_path / name).write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(biofa.METHODS, "_rules", dict(biofa.METHODS._rules))
    monkeypatch.delitem(sys.modules, name[:-3], raising=False)
    usage = [b for b in blocks("python") if b != code]
    assert len(usage) == 1
    namespace = {}
    exec(compile(usage[0], str(PAGE), "exec"), namespace)
    model = namespace["model"]
    assert {layer.method for _, layer in biofa.feedback_layers(model)} == {"scaledsign"}
    layer = list(biofa.feedback_layers(model))[-1][1]
    model(namespace["images"])  # the first training pass after the last step refreshes B
    weight = layer.weight.detach()
    expected = weight.sign() * weight.pow(2).mean().sqrt()
    assert (layer.feedback_matrix() - expected).abs().max() < 1e-6
    sys.modules.pop(name[:-3], None)


def test_biofa_train_finds_the_rule_by_its_entry_point(tmp_path):
    name, code = rule_file()
    site = tmp_path / "site"
    site.mkdir()
    (site / name).write_text(code)
    (toml,) = blocks("toml")
    project = tomllib.loads(toml)["project"]
    dist = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                   f"Version: {project['version']}\n")
    points = project["entry-points"]["biofa.methods"]
    (dist / "entry_points.txt").write_text(
        "[biofa.methods]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))
    (config_text,) = blocks("yaml")
    config_name = config_text.split("\n", 1)[0][2:]
    (tmp_path / config_name).write_text(config_text)
    method = yaml.safe_load(config_text)["method"]
    assert method in points

    path = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    out = tmp_path / "runs" / method
    result = run(["train", config_name, "--out", str(out), "--set", "epochs=1"], path, tmp_path)
    assert result.returncode == 0, result.stderr
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "complete" and status["epoch"] == 1
    assert yaml.safe_load((out / "config.yaml").read_text())["method"] == method

    # the page's other way: the module named in BIOFA_PLUGINS, nothing installed
    (bash,) = [b for b in blocks("bash") if "BIOFA_PLUGINS=" in b]
    module = re.search(r"BIOFA_PLUGINS=(\w+)", bash).group(1)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / name).write_text(code)
    result = run(["methods"], {"BIOFA_PLUGINS": module,
                               "PYTHONPATH": os.pathsep.join([str(plain), str(ROOT)])}, plain)
    assert result.returncode == 0, result.stderr
    assert re.search(rf"^{method}\s.*\(plugin: {module}\)", result.stdout, re.M)
