"""The errors biofa raises for input it cannot use.

Each carries a message that names the problem and the fix; the ``biofa`` command prints
that one line and exits with status 2. Anything else that escapes (a bug in biofa, torch
or pandas) keeps its traceback, so it can be reported and fixed.

The classes also derive from the built-in type a Python caller would expect
(``ValueError`` for bad values, ``FileNotFoundError`` for missing files), so
``except ValueError`` around library calls keeps working.
"""

from __future__ import annotations


class BiofaError(Exception):
    """Base of every error meant for the user rather than for a bug report."""


class UsageError(BiofaError, ValueError):
    """A bad argument or option value: unknown rule, attack, figure, out-of-range number."""


class SignalError(UsageError):
    """A loss whose output error a rule cannot learn from: DRTP reads the target class
    from a softmax cross-entropy error, so MSE, margin or KL losses (an attack's too) have
    none. Raised in the backward pass; callers that try several losses can catch it."""


class ConfigError(UsageError):
    """A config that cannot run; the message names the key and what it accepts."""


class RunError(BiofaError, RuntimeError):
    """A run folder that cannot be used as asked; the message says why and what to do."""


class CheckpointError(RunError):
    """A checkpoint that cannot be loaded: truncated, corrupted, or not biofa's."""


class UntrustedCheckpoint(CheckpointError):
    """A checkpoint whose pickle would import or call code: refused, nothing executed."""


class RunLocked(RunError):
    """Another process is training into the same run folder."""


class DatasetMissing(BiofaError, FileNotFoundError):
    """A data set's files are not on disk (and could not be downloaded).

    The message names the files, the exact folder to put them in and the command to
    retry, because the usual cause is a machine without network.
    """


class DatasetCorrupt(BiofaError, ValueError):
    """A data set's files are on disk but unreadable (truncated download, wrong file)."""
