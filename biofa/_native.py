"""The compiled extension (``biofa/csrc/feedback.cpp``): built at first use, or None.

It does the arithmetic of ``biofa.functional`` and of the sign-concordant rules' per-step
passes with no Python call per layer, which is most of a small model's overhead over
plain backprop (see benchmarks/step_time.py). torch compiles it once per machine (about a
minute) and caches it under ~/.cache/torch_extensions, or $TORCH_EXTENSIONS_DIR. Where it
cannot be built (no C++ compiler), or with BIOFA_NATIVE=0, the Python code runs instead:
same results, slower on small models.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

SOURCE = Path(__file__).with_name("csrc") / "feedback.cpp"


NAME = "biofa_feedback"


def _build_lock() -> Path | None:
    """The lock file torch locks in the extension's build folder while a process builds it."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return Path(_get_build_directory(NAME, verbose=False)) / "lock"
    except Exception:  # noqa: BLE001 - a torch without that helper: no way to tell
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


def load():
    """The compiled module; None (with one warning if the build failed) where there is none.

    ``BIOFA_NATIVE=0`` never builds it. ``BIOFA_NATIVE=ready`` (what the workflow's jobs
    use) does not wait while another process is building it: that process's job runs the
    Python functions instead, with the same results, rather than idling for the minute a
    build takes on a fresh machine. The default builds it, or waits for a running build.
    """
    mode = os.environ.get("BIOFA_NATIVE", "1")
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
        from torch.utils.cpp_extension import load as build

        return build(name=NAME, sources=[str(SOURCE)], extra_cflags=["-O3"],
                     verbose=False)
    except Exception as error:  # noqa: BLE001 - any build failure falls back to Python
        last = str(error).strip().splitlines()[-1] if str(error).strip() else ""
        warnings.warn(f"biofa: the compiled feedback functions did not build "
                      f"({type(error).__name__}: {last}); using the Python ones (same "
                      "results, slower on small models). BIOFA_NATIVE=0 skips the build.",
                      RuntimeWarning, stacklevel=4)
        return None
