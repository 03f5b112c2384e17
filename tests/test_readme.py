"""The README's examples run as written.

Every ```python block runs, in order, in one fresh interpreter (as a reader pasting them
into one session would), so an attribute that exists only because some other test
imported its module first cannot hide. Where the README elides data (``images``,
``labels``), small stand-in tensors are defined first. Every ``biofa.name`` the README
mentions must resolve after a plain ``import biofa``; every ``biofa SUBCOMMAND`` it names
must be a subcommand of ``biofa.study.cli.parser()``, and the complete command lines of its
bash blocks must parse.
"""

import argparse
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: What the README's examples leave to the reader: a batch of images. Small, since
#: torch's first pass through each convolution shape dominates the test's time.
STAND_INS = textwrap.dedent("""\
    import torch
    torch.manual_seed(0)
    images = torch.rand(2, 3, 16, 16)
    labels = torch.randint(0, 10, (2,))
    """)


def blocks(language: str) -> list[tuple[int, str]]:
    """(first line number of the code, code) of every fenced block in ``language``."""
    found, lines = [], README.read_text().splitlines()
    start = None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == f"```{language}":
            start, code = number + 1, []
        elif start is not None and line.strip() == "```":
            found.append((start, "\n".join(code)))
            start = None
        elif start is not None:
            code.append(line)
    assert start is None, f"README.md: the ```{language} block from line {start} is never closed"
    return found


def run_fresh(script: str) -> subprocess.CompletedProcess:
    """``script`` in a new interpreter; the Python backend, so no compile on a fresh machine."""
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "BIOFA_NATIVE": "0"})


def test_python_blocks_run_in_a_fresh_interpreter():
    found = blocks("python")
    assert found, "README.md has no ```python block"
    # each block compiled with README.md's line numbers: a traceback points at the README
    runner = STAND_INS + textwrap.dedent(f"""\
        namespace = {{"images": images, "labels": labels}}
        for start, code in {found!r}:
            exec(compile("\\n" * (start - 1) + code, "README.md", "exec"), namespace)
        print("ran", {len(found)}, "blocks")
        """)
    result = run_fresh(runner)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"ran {len(found)} blocks" in result.stdout


def dotted_names() -> set[str]:
    """``biofa.a.b`` (and ``torch.ops.biofa.op``) as written in the README's code (blocks
    and inline), calls cut off."""
    text = README.read_text()
    code = "\n".join(re.findall(r"`([^`\n]+)`", text) + [c for _, c in blocks("python")])
    # biofa's own names, and its operators as torch names them (torch.ops.biofa.NAME)
    return set(re.findall(r"(?<![\w.])(?:torch\.ops\.)?biofa(?:\.[A-Za-z_]\w*)+", code))


def test_names_the_readme_uses_exist_after_import_biofa():
    """The library's names resolve after ``import biofa``; the study's (``biofa.study.*``,
    the pipeline a user imports by its path) after importing their module."""
    names = sorted(dotted_names())
    assert "biofa.models.build" in names and "biofa.convert" in names
    library = [name for name in names if not name.startswith("biofa.study")]
    study = [name for name in names if name.startswith("biofa.study")]
    checks = "\n".join(f"{name}  # noqa" for name in library)
    checks += "".join(f"\nresolve({name!r})" for name in study)
    resolve = ("import importlib\n"
               "def resolve(name):\n"
               "    parts = name.split('.')\n"
               "    for cut in range(len(parts), 0, -1):\n"
               "        try:\n"
               "            node = importlib.import_module('.'.join(parts[:cut]))\n"
               "        except ModuleNotFoundError:\n"
               "            continue\n"
               "        for part in parts[cut:]:\n"
               "            node = getattr(node, part)\n"
               "        return node\n"
               "    raise ImportError(name)\n")
    result = run_fresh("import torch, biofa\n" + resolve + checks)
    assert result.returncode == 0, result.stderr[-2000:]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_every_biofa_subcommand_the_readme_names_exists():
    from biofa.study.cli import parser

    known = subcommands(parser())
    spans = re.findall(r"`([^`\n]+)`", README.read_text())
    named = {m.group(1) for span in spans if (m := re.match(r"biofa ([a-z][\w-]*)", span))}
    named |= {words[0] for _, words in bash_commands() if words}
    assert {"train", "evaluate", "attack", "report"} <= named  # the pattern still finds them
    assert named <= set(known), f"README names unknown subcommands: {sorted(named - set(known))}"


def bash_commands() -> list[tuple[int, list[str]]]:
    """The ``biofa ...`` command lines of the bash blocks, split as the shell would."""
    commands = []
    for start, code in blocks("bash"):
        for offset, line in enumerate(code.splitlines()):
            for part in re.split(r"&&|\|\||;", line.split(" #")[0]):
                words = shlex.split(part)
                if words and words[0] == "biofa":
                    commands.append((start + offset, words[1:]))
    return commands


@pytest.mark.parametrize("line, words", bash_commands(), ids=lambda v: str(v) if isinstance(v, int) else "")
def test_bash_block_commands_parse(line, words):
    from biofa.study.cli import parser

    try:
        parser().parse_args(words)
    except SystemExit as error:
        pytest.fail(f"README.md line {line}: `biofa {' '.join(words)}` does not parse ({error})")
