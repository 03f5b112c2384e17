"""The package's metadata against what its code imports, and the locks against the metadata.

``pip install biofa`` is for people who want the layers and rules; the study pipeline's
packages (snakemake, pandas, seaborn, torchattacks, ...) are the extra ``biofa[study]``.
These checks keep that split true as the code changes: every third-party package the
library imports is a core dependency, the library imports none of the study's, the study
imports only core and study packages, and imports run one way (study -> library). The
pip lock and the conda lock pin every dependency of ``[study,test]`` to versions inside
pyproject's ranges, so ``pip install -r requirements/lock.txt -e ".[study,test]"`` gives
the environment the tests last passed in.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "biofa"
STUDY = PACKAGE / "study"
LOCK = ROOT / "requirements" / "lock.txt"
CONDA_LOCK = ROOT / "environment.lock.yml"

# Import names whose distribution has another name, for when the package is not installed
# here (packages_distributions() covers whatever is).
KNOWN_DISTRIBUTIONS = {"yaml": "pyyaml", "sklearn": "scikit-learn", "PIL": "pillow"}

# What the library must never need: the study's own packages.
STUDY_ONLY = {"snakemake", "seaborn", "pandas", "torchattacks", "scikit-learn", "jsonschema",
              "tqdm", "pyyaml", "matplotlib"}

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> dict[str, Requirement]:
    parsed = [Requirement(line) for line in requirements]
    return {canonicalize_name(r.name): r for r in parsed}


CORE = _names(PYPROJECT["dependencies"])
EXTRAS = {extra: _names(lines) for extra, lines in PYPROJECT["optional-dependencies"].items()}


def _modules(root: Path, exclude: Path | None = None) -> list[Path]:
    return sorted(p for p in root.rglob("*.py")
                  if exclude is None or exclude not in p.parents)


def _imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in the file, function bodies included
    (a lazy import is still a dependency); relative imports resolved against the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    package = parts[:-1]  # a module's package, or __init__'s own
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.add(node.module)
            else:
                base = package[:len(package) - node.level + 1]
                found.add(".".join(base + ((node.module,) if node.module else ())))
    return found


def _third_party(paths: list[Path]) -> dict[str, set[str]]:
    """Top-level third-party import name -> the files importing it."""
    where: dict[str, set[str]] = {}
    for path in paths:
        for name in _imports(path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top == "biofa" or top == "__future__":
                continue
            where.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return where


@functools.cache
def _installed() -> dict[str, list[str]]:
    return packages_distributions()


def _distribution(import_name: str) -> str:
    installed = _installed().get(import_name)
    if installed:
        return canonicalize_name(installed[0])
    return canonicalize_name(KNOWN_DISTRIBUTIONS.get(import_name, import_name))


LIBRARY_FILES = _modules(PACKAGE, exclude=STUDY)
STUDY_FILES = _modules(STUDY)


def test_the_library_and_the_study_are_both_found():
    names = {str(p.relative_to(PACKAGE)) for p in LIBRARY_FILES}
    assert {"__init__.py", "layers.py", "convert.py", "metrics.py", "functional.py",
            "methods/__init__.py", "models/__init__.py"} <= names
    assert {"cli.py", "train.py", "attack.py"} <= {p.name for p in STUDY_FILES}


def test_every_package_the_library_imports_is_a_core_dependency():
    missing = {name: sorted(files) for name, files in _third_party(LIBRARY_FILES).items()
               if _distribution(name) not in CORE}
    assert not missing, (f"the library imports packages that are not in pyproject's "
                         f"dependencies: {missing}")


def test_the_library_imports_no_study_package():
    study_deps = set(EXTRAS["study"])
    used = {name: sorted(files) for name, files in _third_party(LIBRARY_FILES).items()
            if _distribution(name) in study_deps}
    assert not used, f"the library imports the study's packages: {used}"


def test_study_packages_are_in_the_study_extra_and_not_core():
    assert STUDY_ONLY <= set(EXTRAS["study"]), STUDY_ONLY - set(EXTRAS["study"])
    assert not STUDY_ONLY & set(CORE), STUDY_ONLY & set(CORE)


def test_the_core_is_only_what_the_library_imports_and_builds_with():
    imported = {_distribution(name) for name in _third_party(LIBRARY_FILES)}
    # ninja is not imported: torch.utils.cpp_extension runs it to build biofa/csrc.
    assert set(CORE) == imported | {"ninja"}, (set(CORE), imported)


def test_every_package_the_study_imports_is_declared():
    declared = set(CORE) | set(EXTRAS["study"])
    missing = {name: sorted(files) for name, files in _third_party(STUDY_FILES).items()
               if _distribution(name) not in declared}
    assert not missing, f"biofa/study imports packages no extra declares: {missing}"


def test_imports_run_from_the_study_to_the_library_only():
    back = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if n.startswith("biofa.study"))
            for p in LIBRARY_FILES}
    back = {path: names for path, names in back.items() if names}
    assert not back, f"library modules import the study: {back}"


def _cli_study_modules() -> tuple[str, ...]:
    tree = ast.parse((STUDY / "cli.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "STUDY_MODULES" for t in node.targets):
            return ast.literal_eval(node.value)
    pytest.fail("biofa/study/cli.py defines no STUDY_MODULES for its install check")


def test_the_command_checks_for_every_study_package_it_imports():
    checked = set(_cli_study_modules())
    imported = {name for name in _third_party(STUDY_FILES)
                if _distribution(name) not in CORE}
    assert checked == imported, (f"biofa/study/cli.py's STUDY_MODULES should be the study's "
                                 f"non-core imports: checks {sorted(checked)}, the study imports "
                                 f"{sorted(imported)}")
    assert {_distribution(name) for name in checked} <= set(EXTRAS["study"])


def test_the_command_without_the_study_extra_says_how_to_install_it():
    # sys.modules[name] = None makes find_spec report the package as absent.
    code = ("import sys; sys.modules['pandas'] = None; sys.argv = ['biofa', '--help']; "
            "from biofa.study.cli import main; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert 'pip install "biofa[study]"' in lines[0] and "pandas" in lines[0], lines[0]
    assert "Traceback" not in done.stderr


def test_the_console_script_is_the_study_command():
    assert PYPROJECT["scripts"]["biofa"] == "biofa.study.cli:main"


# --- the locks ---------------------------------------------------------------------------


def _lock() -> dict[str, tuple[Requirement, str]]:
    pins = {}
    for raw in LOCK.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        assert str(requirement.specifier).startswith("==") and len(requirement.specifier) == 1, (
            f"requirements/lock.txt: {raw!r} is not an exact pin (name==version)")
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"requirements/lock.txt pins {name} twice"
        pins[name] = (requirement, next(iter(requirement.specifier)).version)
    return pins


def test_the_lock_pins_every_dependency_within_pyproject_ranges():
    pins = _lock()
    assert "biofa" not in pins, "the lock pins biofa itself; it installs with -e ."
    wanted = {**CORE, **EXTRAS["study"], **EXTRAS["test"]}
    unpinned = sorted(set(wanted) - set(pins))
    assert not unpinned, f"requirements/lock.txt lacks {unpinned}"
    outside = {name: (pins[name][1], str(r.specifier)) for name, r in wanted.items()
               if not r.specifier.contains(Version(pins[name][1]), prereleases=True)}
    assert not outside, f"locked versions outside pyproject's ranges: {outside}"


def test_the_lock_pins_what_its_pins_need():
    """The lock is closed: every pinned package installed here at its pinned version has
    each of its own requirements (for this platform) pinned too."""
    from importlib.metadata import PackageNotFoundError, version, requires

    pins = _lock()
    open_ends = {}
    for name, (requirement, pinned) in pins.items():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            if version(name) != pinned:
                continue
            needs = requires(name) or []
        except PackageNotFoundError:
            continue
        for line in needs:
            need = Requirement(line)
            if need.marker is not None and not need.marker.evaluate({"extra": ""}):
                continue
            if canonicalize_name(need.name) not in pins:
                open_ends.setdefault(name, []).append(need.name)
    assert not open_ends, f"pinned packages need packages the lock does not pin: {open_ends}"


def _conda_pip_pins() -> tuple[dict[str, tuple[str, str]], dict]:
    import yaml

    env = yaml.safe_load(CONDA_LOCK.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = {}
    for line in pip:
        if line.startswith("-"):
            continue
        requirement = Requirement(line)
        pins[canonicalize_name(requirement.name)] = (str(requirement.specifier),
                                                     str(requirement.marker or ""))
    return pins, env


def test_the_conda_lock_pins_the_same_versions():
    pins = {name: (str(r.specifier), str(r.marker or "")) for name, (r, _) in _lock().items()}
    conda, env = _conda_pip_pins()
    differ = {name: (conda.get(name), pins.get(name)) for name in set(conda) | set(pins)
              if conda.get(name) != pins.get(name)}
    assert not differ, f"environment.lock.yml's pip section vs requirements/lock.txt: {differ}"
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert python and "=" in python[0], "environment.lock.yml pins python"
    assert any(isinstance(d, dict) and "-e .[study,test]" in d.get("pip", [])
               for d in env["dependencies"])


def test_install_commands_use_the_study_and_test_extras():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[study,test]" && pytest' in readme
    assert 'pip install -r requirements/lock.txt -e ".[study,test]"' in readme
    assert '".[study,test]"' in ci
    assert "-e .[study,test,slurm]" in (ROOT / "environment.yml").read_text()
