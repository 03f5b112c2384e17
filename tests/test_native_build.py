"""The compiled extension builds once per torch installation, never again because another
environment ran (biofa._native's build folder is keyed by the installation).

The default suite checks the folder key alone; ``pytest -m build`` makes two virtual
environments whose torch lies under two different paths (a symlink to this torch each,
so torch's include paths in the build command differ), runs them in turn A, B, A, B on
one extensions folder and counts the builds (two compiles of about a minute each)."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import torch

from biofa import _native

ROOT = Path(__file__).resolve().parents[1]
MESSAGE = "biofa: compiling the feedback operators"


def test_the_folder_key_follows_the_torch_installation():
    """Two include-path sets give two folders, the same inputs the same folder, and the
    folder name starts with the torch version, made safe for a path."""
    here = _native._build_inputs()
    assert here["include_paths"] == torch.utils.cpp_extension.include_paths()
    other = {**here, "include_paths": ["/elsewhere/torch/include",
                                       "/elsewhere/torch/include/torch/csrc/api/include"]}
    assert _native.folder_key(here) == _native.folder_key(dict(reversed(list(here.items()))))
    assert _native.folder_key(here) == _native.folder_key(_native._build_inputs())
    assert _native.folder_key(here) != _native.folder_key(other)
    assert _native.folder_key({**here, "torch": "2.0.0+cpu"}) != _native.folder_key(here)
    key = _native.folder_key({**here, "torch": "2.14.1+cu130"})
    assert key.startswith("2.14.1_cu130-") and "/" not in key


def test_the_build_folder_lies_under_torchs_extensions_root(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = _native.build_directory(create=False)
    assert folder.parent == tmp_path / _native.NAME and not folder.exists()
    assert _native.build_directory() == folder and folder.is_dir()
    assert not _native.is_built(folder)
    assert _native._build_lock() == folder / "lock"


def make_env(path: Path) -> Path:
    """A virtual environment whose ``import torch`` finds this torch under ``path`` (a
    symlink in its site-packages), and everything else as this interpreter finds it."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True).stdout.strip()
    packages = Path(purelib)
    (packages / "torch").symlink_to(Path(torch.__file__).parent, target_is_directory=True)
    # after the env's own site-packages (so its torch comes first): this checkout, then
    # this interpreter's site-packages with their .pth files (biofa's editable install)
    outer = [p for p in [*site.getsitepackages(), site.getusersitepackages(),
                         sysconfig.get_path("purelib")] if os.path.isdir(p)]
    lines = [str(ROOT)] + [f"import site; site.addsitedir({p!r})" for p in dict.fromkeys(outer)]
    (packages / "zz_outer.pth").write_text("\n".join(lines) + "\n")
    return python


PROBE = ("import torch; from biofa import _native; m = _native.load(); "
         "print('TORCH', torch.__file__); print('MODULE', m.__file__ if m else None)")


def run(python: Path, extensions: Path) -> tuple[str, str, str]:
    """One process of that environment loading the extension: (torch file, module file,
    stderr)."""
    env = {k: v for k, v in os.environ.items() if k not in ("BIOFA_NATIVE", "PYTHONPATH")}
    env["TORCH_EXTENSIONS_DIR"] = str(extensions)
    done = subprocess.run([str(python), "-c", PROBE], env=env, capture_output=True, text=True,
                          timeout=900, cwd=extensions.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    found = dict(line.split(" ", 1) for line in done.stdout.splitlines()
                 if line.startswith(("TORCH ", "MODULE ")))
    return found["TORCH"], found["MODULE"], done.stderr


@pytest.mark.build
def test_two_environments_in_turn_build_once_each(tmp_path):
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler here: the extension cannot be built")
    envs = {name: make_env(tmp_path / f"env{name}") for name in "AB"}
    extensions = tmp_path / "torch_extensions"
    messages, modules, torches, mtimes = {}, {}, {}, {}
    for turn, name in enumerate("ABAB"):
        start = time.perf_counter()
        torch_file, module, stderr = run(envs[name], extensions)
        print(f"env {name}, run {turn + 1}: {time.perf_counter() - start:.1f} s")
        count = stderr.count(MESSAGE)
        assert module != "None", f"env {name}, turn {turn}: no module\n{stderr[-3000:]}"
        torches.setdefault(name, torch_file)
        assert torch_file == torches[name]
        modules.setdefault(name, module)
        assert module == modules[name]
        messages[name] = messages.get(name, []) + [count]
        if name in mtimes:  # a later run of this environment rebuilt nothing
            assert Path(module).stat().st_mtime_ns == mtimes[name], f"env {name} rebuilt"
        mtimes[name] = Path(module).stat().st_mtime_ns
    # each environment's torch lies under its own path, so its include paths differ
    assert torches["A"].startswith(str(tmp_path / "envA"))
    assert torches["B"].startswith(str(tmp_path / "envB"))
    # the message once per environment, on its first run: two builds, in two folders
    assert messages == {"A": [1, 0], "B": [1, 0]}
    folders = sorted((extensions / _native.NAME).iterdir())
    assert len(folders) == 2 and {Path(m).parent for m in modules.values()} == set(folders)
    for folder in folders:  # ninja compiled feedback.cpp once in each
        log = (folder / ".ninja_log").read_text().splitlines()
        assert [line.split("\t")[3] for line in log if "\t" in line].count("feedback.o") == 1
