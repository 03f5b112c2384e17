"""The compiled extension (``biofa/csrc/feedback.cpp``): built at first use, or None.

It does the arithmetic of ``biofa.functional`` and of the sign-concordant rules' per-step
passes with no Python call per layer, which is most of a small model's overhead over
plain backprop (see benchmarks/step_time.py).

torch compiles it once per torch installation (about a minute of one core) into its own
folder, ``biofa_feedback/<torch version>-<key>`` under torch's extensions root
(``$TORCH_EXTENSIONS_DIR``, by default ~/.cache/torch_extensions). The key hashes what
makes torch's build command differ between two installations (torch's own include
paths, its version and build, Python's headers and tag, the compiler), so two virtual
environments with their own torch each build once and never rebuild because the other
ran, while environments sharing one torch share one build. While it compiles, one line
on stderr says so (``biofa: compiling the feedback operators ...``); a warm load prints
nothing. ``biofa native`` builds it ahead of time and says where it is (the workflow's
first job runs it, so no training job waits on the build).

Where it cannot be built (no C++ compiler), or with BIOFA_NATIVE=0, the Python code runs
instead: same results, slower on small models.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import warnings
from pathlib import Path

SOURCE = Path(__file__).with_name("csrc") / "feedback.cpp"


NAME = "biofa_feedback"


def _build_inputs() -> dict:
    """What goes into torch's build command for this torch installation and Python: torch's
    include and library paths as torch itself spells them (from its install directory),
    its version and build, Python's header folder and tag, and the compiler."""
    import sysconfig

    import torch
    from torch.utils import cpp_extension

    return {
        "include_paths": list(cpp_extension.include_paths()),
        "library_paths": list(cpp_extension.library_paths()),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "hip": getattr(torch.version, "hip", None),
        "git": getattr(torch.version, "git_version", None),
        "python": f"{sys.implementation.cache_tag}{getattr(sys, 'abiflags', '')}",
        "python_include": sysconfig.get_path("include", scheme="posix_prefix"),
        "compiler": os.environ.get("CXX", "c++"),
    }


def folder_key(inputs: dict) -> str:
    """The name of the build folder for ``inputs`` (see ``_build_inputs``): the torch
    version, then a short hash of everything, so other inputs give another folder."""
    digest = hashlib.sha256(repr(sorted(inputs.items())).encode()).hexdigest()[:12]
    version = re.sub(r"[^A-Za-z0-9._]+", "_", str(inputs.get("torch", "torch")))
    return f"{version}-{digest}"


def _extensions_root() -> Path:
    """torch's extensions root: $TORCH_EXTENSIONS_DIR, else ~/.cache/torch_extensions."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root)
    try:
        from torch.utils.cpp_extension import get_default_build_root

        return Path(get_default_build_root())
    except Exception:  # noqa: BLE001 - a torch without that helper
        return Path(os.path.expanduser("~/.cache/torch_extensions"))


def build_directory(create: bool = True) -> Path:
    """This torch installation's build folder of the extension (created unless told not)."""
    folder = _extensions_root() / NAME / folder_key(_build_inputs())
    if create:
        os.makedirs(folder, exist_ok=True)
    return folder


def library(folder: Path) -> Path:
    """The module file torch builds in ``folder``."""
    return folder / f"{NAME}{'.pyd' if os.name == 'nt' else '.so'}"


def is_built(folder: Path) -> bool:
    """Whether ``folder`` holds a build of the current source: the module file and torch's
    build.ninja exist and the module is not older than feedback.cpp (ninja then has
    nothing to do, so loading it compiles nothing)."""
    module = library(folder)
    try:
        return ((folder / "build.ninja").exists()
                and module.stat().st_mtime >= SOURCE.stat().st_mtime)
    except OSError:
        return False


def _build_lock() -> Path | None:
    """The lock file torch locks in the extension's build folder while a process builds it."""
    try:
        return build_directory() / "lock"
    except Exception:  # noqa: BLE001 - no torch to ask: no way to tell
        return None


def _held(lock: Path) -> bool:
    """Whether another process holds ``lock``: torch takes an OS advisory lock on the file
    (``filelock``, ``flock`` on POSIX) for a build; the file itself stays behind."""
    import fcntl

    try:
        handle = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
    finally:
        os.close(handle)


def _compiler() -> str | None:
    """The C++ compiler torch would call (``$CXX``, else ``c++``), where it exists."""
    import shutil

    return shutil.which(os.environ.get("CXX", "c++"))


def load(mode: str | None = None):
    """The compiled module; None (with one warning if the build failed) where there is none.

    ``BIOFA_NATIVE=0`` never builds it. ``BIOFA_NATIVE=ready`` (what the workflow's jobs
    use) does not wait while another process is building it: that process's job runs the
    Python functions instead, with the same results, rather than idling for the minute a
    build takes on a fresh machine. The default builds it, or waits for a running build.
    ``mode`` overrides ``BIOFA_NATIVE`` (``biofa native`` builds whatever it says).
    """
    mode = os.environ.get("BIOFA_NATIVE", "1") if mode is None else mode
    if mode == "0":
        return None
    lock = _build_lock() if mode == "ready" and os.name == "posix" else None
    if lock is not None and _held(lock):
        logging.getLogger("biofa").warning(
            "biofa: another process is building the compiled feedback functions (it holds "
            "%s); this one runs the Python ones (same results)", lock)
        return None
    try:
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        import torch
        from torch.utils.cpp_extension import load as build

        folder = build_directory()
        if not is_built(folder) and _compiler() is not None:
            waiting = os.name == "posix" and _held(folder / "lock")
            print(f"biofa: {'waiting for another process compiling' if waiting else 'compiling'} "
                  f"the feedback operators for torch {torch.__version__} (once per torch "
                  f"installation, about a minute) into {folder}", file=sys.stderr, flush=True)
        return build(name=NAME, sources=[str(SOURCE)], extra_cflags=["-O3"],
                     build_directory=str(folder), verbose=False)
    except Exception as error:  # noqa: BLE001 - any build failure falls back to Python
        last = str(error).strip().splitlines()[-1] if str(error).strip() else ""
        warnings.warn(f"biofa: the compiled feedback functions did not build "
                      f"({type(error).__name__}: {last}); using the Python ones (same "
                      "results, slower on small models). BIOFA_NATIVE=0 skips the build.",
                      RuntimeWarning, stacklevel=4)
        return None
