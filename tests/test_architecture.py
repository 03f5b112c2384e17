"""The package's shape: the learning-rule library beneath the study pipeline.

Read from the source (every ``import``, also those inside functions), so a lazy import
cannot hide a dependency that runs the wrong way.
"""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "biofa"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """biofa modules ``path`` imports, relative imports resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "biofa"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "biofa":
                continue
            # `from . import io` names a module; `from .errors import X` names its module
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
    return {m for m in found if m in MODULES and m != name}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def is_study(name: str) -> bool:
    return name == "biofa.study" or name.startswith("biofa.study.")


def test_the_graph_is_read_from_every_module():
    assert {"biofa", "biofa.layers", "biofa.study.train", "biofa.study.cli"} <= set(GRAPH)
    assert "biofa.study.run" in GRAPH["biofa.study.train"]  # a relative import, resolved
    assert "biofa.convert" in GRAPH["biofa.study.run"]  # one inside a function


def test_the_library_imports_nothing_from_the_study():
    library = {name for name in GRAPH if not is_study(name)}
    assert len(library) >= 10
    wrong = {name: sorted(filter(is_study, GRAPH[name])) for name in library}
    assert {name: found for name, found in wrong.items() if found} == {}


def test_there_is_no_import_cycle():
    cycles, state = [], {}

    def visit(name, path):
        state[name] = "open"
        for target in sorted(GRAPH[name]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target] if target in path else [name, target])
            elif target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    # a package's __init__ importing its own submodules is the package, not a cycle
    real = [c for c in cycles if not any(a == b.rpartition(".")[0] or b == a.rpartition(".")[0]
                                         for a, b in zip(c, c[1:]))]
    assert real == []


def test_the_study_steps_run_one_way():
    """Reading, tables and figures never pull in training, attacks or torch-heavy steps."""
    for light in ("biofa.study.names", "biofa.study.collect", "biofa.study.tables", "biofa.study.io"):
        assert not {"biofa.study.train", "biofa.study.attack", "biofa.study.evaluate"} & closure(light)
    assert "biofa.study.cli" not in set().union(*(GRAPH[n] for n in GRAPH if n != "biofa.study.cli"))


def closure(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for target in GRAPH[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_importing_the_tables_costs_no_matplotlib_or_attacks():
    code = ("import sys, biofa.study.collect, biofa.study.tables, biofa.study.names; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'torchattacks') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # biofa/__init__ imports the library (torch); the study's own reading steps add nothing
    assert "matplotlib" not in result.stdout and "torchattacks" not in result.stdout
