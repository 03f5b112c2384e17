"""Write requirements/lock.txt and environment.lock.yml's pip section from this venv.

Run it with the Python of a fresh venv in which ``pip install -e ".[study,test]"`` was
run and the tests passed; the locks then pin exactly what they passed with:

    python -m venv /tmp/lock && /tmp/lock/bin/pip install -e ".[study,test]"
    /tmp/lock/bin/python -m pytest && /tmp/lock/bin/python requirements/lock.py

Every installed distribution is pinned except biofa itself (installed with ``-e .``) and
pip. Packages that are installed only because of a requirement that names a platform
(torch's CUDA libraries and triton are Linux-only) keep that condition as a marker, so
the same lock installs on macOS or Windows, where torch does without them.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import distributions
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
ROOTS = ['biofa[study,test]']
SKIP = {"biofa", "pip"}
PLATFORM = re.compile(r"platform_system|sys_platform|platform_machine|os_name")
LINUX = 'platform_system == "Linux"'


def installed() -> dict[str, object]:
    return {canonicalize_name(d.metadata["Name"]): d for d in distributions()}


def _follows(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras or {""})


def reachable(dists: dict) -> dict[str, str | None]:
    """Distributions reached from biofa[study,test] -> None where every platform needs
    them, else the platform marker of the requirement that brought them in (inherited by
    what they need in turn)."""
    seen: dict[str, set[str]] = {}
    marker: dict[str, str | None] = {}
    todo = [(Requirement(line), None) for line in ROOTS]
    while todo:
        requirement, condition = todo.pop(0)
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if name not in dists:
            continue
        if name in seen and extras <= seen[name] and (marker[name] is None or condition is not None):
            continue
        seen[name] = seen.get(name, set()) | extras
        # needed everywhere as soon as one path to it is unconditional
        marker[name] = None if condition is None or marker.get(name, "") is None else condition
        for line in dists[name].requires or []:
            need = Requirement(line)
            if not _follows(need, seen[name]):
                continue
            inherited = marker[name]
            if inherited is None and need.marker is not None and PLATFORM.search(str(need.marker)):
                text = str(need.marker)
                inherited = LINUX if "extra" in text else text
            todo.append((need, inherited))
    return marker


def pins() -> list[str]:
    dists = installed()
    lines = []
    for name, condition in sorted(reachable(dists).items()):
        if name in SKIP:
            continue
        line = f"{name}=={dists[name].version}"
        if condition is not None:
            assert Marker(condition).evaluate(), f"{name}: {condition} is false here"
            line += f" ; {condition}"
        lines.append(line)
    return lines


def main() -> int:
    lines = pins()
    python = ".".join(map(str, sys.version_info[:3]))
    header = ("# Exact versions the test suite passed with (Python {python}, Linux x86_64), for\n"
              "#   pip install -r requirements/lock.txt -e \".[study,test]\"\n"
              "# Written by requirements/lock.py from a fresh venv with .[study,test]; biofa itself\n"
              "# is not pinned (it installs from this checkout).\n").format(python=python)
    (ROOT / "requirements" / "lock.txt").write_text(header + "\n".join(lines) + "\n")
    conda = ROOT / "environment.lock.yml"
    text = conda.read_text()
    start = text.index("  - pip:\n") + len("  - pip:\n")
    body = "".join(f"      - {line}\n" if " ; " not in line else f"      - '{line}'\n"
                   for line in lines)
    conda.write_text(text[:start] + body + "      - -e .[study,test]\n")
    print(f"pinned {len(lines)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
