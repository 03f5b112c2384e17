"""The learning rules, one small module each, behind one registry.

>>> from biofa.methods import METHODS, get_rule
>>> [name for name in METHODS][:10]
['bp', 'fa', 'dfa', 'usf', 'brsf', 'frsf', 'kp', 'wm', 'drtp', 'dkp']

Rules from outside biofa join the registry without an edit to biofa:
``register(RuleClass)`` from user code, for the running process; an entry point of the
group ``biofa.methods`` in the installed package that holds the rule
(``name = "module:Class"``), which makes it known to every process, ``biofa train``
included; or, for a module that is not installed, its name in the environment variable
``BIOFA_PLUGINS`` (comma-separated), imported when the registry is first read, where it
calls ``register``. Entry points are listed when the registry is first read (their names
only, from the installed metadata); a rule's module is imported only when that rule is
asked for (docs/write-a-rule.md).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping
from importlib import metadata

from .base import INITS, Rule
from .bp import BP
from .brsf import BRSF
from .dfa import DFA, DFAHub
from .dkp import DKP
from .drtp import DRTP
from .fa import FA
from .frsf import FRSF
from .kp import KP
from .usf import USF
from .wm import WM
from ..errors import UsageError

#: The entry-point group that installed packages declare their rules in.
ENTRY_POINT_GROUP = "biofa.methods"
#: Modules to import when the registry is first read (comma-separated), which register
#: their rules: for a rule file that is on the path but not installed.
PLUGINS_VARIABLE = "BIOFA_PLUGINS"


class PluginError(UsageError):
    """A rule from outside biofa that cannot be used: the message names where it came from."""


def _entry_point_name(entry_point) -> str:
    dist = getattr(entry_point, "dist", None)
    origin = f" (distribution {dist.name})" if dist is not None else ""
    return f"{ENTRY_POINT_GROUP} entry point '{entry_point.name} = {entry_point.value}'{origin}"


def _origin(known) -> str:
    if isinstance(known, metadata.EntryPoint):
        return _entry_point_name(known)
    return f"{known.__module__}.{known.__qualname__}"


def _check_rule(rule, where: str) -> type[Rule]:
    if not (isinstance(rule, type) and issubclass(rule, Rule)):
        raise PluginError(f"{where}: {rule!r} is not a subclass of biofa.methods.Rule")
    if not isinstance(rule.name, str) or not rule.name.isidentifier():
        raise PluginError(f"{where}: {rule.__name__}.name must be a non-empty identifier "
                          f"such as 'mysign', got {rule.name!r}")
    return rule


class Registry(Mapping):
    """Every rule by name: biofa's, then ``register``'s and the entry points', in that order.

    A read-only mapping that lists the entry points at its first use and loads each of
    them at its first lookup.
    """

    def __init__(self, rules) -> None:
        self._rules: dict[str, object] = {rule.name: rule for rule in rules}  # or EntryPoint
        self._scanned = False

    def _scan(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if entry_point.name in self._rules:
                raise PluginError(f"{_entry_point_name(entry_point)}: a rule named "
                                  f"{entry_point.name!r} exists already")
            self._rules[entry_point.name] = entry_point
        wanted = os.environ.get(PLUGINS_VARIABLE, "").split(",")
        for module in filter(None, (name.strip() for name in wanted)):
            try:
                importlib.import_module(module)
            except Exception as error:
                raise PluginError(f"{PLUGINS_VARIABLE}: module {module!r} failed to import: "
                                  f"{type(error).__name__}: {error}") from error

    def __getitem__(self, name: str) -> type[Rule]:
        self._scan()
        rule = self._rules[name]
        if isinstance(rule, metadata.EntryPoint):
            where = _entry_point_name(rule)
            try:
                loaded = rule.load()
            except Exception as error:
                raise PluginError(f"{where} failed to load: {type(error).__name__}: "
                                  f"{error}") from error
            loaded = _check_rule(loaded, where)
            if loaded.name != name:
                raise PluginError(f"{where}: the class's name is {loaded.name!r}; the entry "
                                  f"point must have the same name")
            rule = self._rules[name] = loaded
        return rule

    def __iter__(self) -> Iterator[str]:
        self._scan()
        return iter(list(self._rules))

    def __len__(self) -> int:
        self._scan()
        return len(self._rules)

    def __contains__(self, name) -> bool:
        self._scan()
        return name in self._rules

    def __repr__(self) -> str:
        return f"Registry({list(self)})"

    def register(self, rule: type[Rule]) -> type[Rule]:
        _check_rule(rule, "biofa.methods.register")
        self._scan()
        known = self._rules.get(rule.name)
        # the class itself again, or the entry point that names it (its module, imported
        # by the entry point, may register it too): nothing to do
        same = known is rule or (isinstance(known, metadata.EntryPoint)
                                 and known.value == f"{rule.__module__}:{rule.__qualname__}")
        if known is not None and not same:
            raise PluginError(f"biofa.methods.register: a rule named {rule.name!r} exists "
                              f"already ({_origin(known)}); give {rule.__name__} another name")
        self._rules[rule.name] = rule
        return rule


#: Every rule by its short name: the paper's, kp, the rules published since (wm, drtp,
#: dkp), then rules from outside biofa.
METHODS = Registry((BP, FA, DFA, USF, BRSF, FRSF, KP, WM, DRTP, DKP))

#: The methods of Sanfiz & Akrout 2021, in the paper's order.
PAPER_METHODS = ("bp", "fa", "dfa", "usf", "brsf", "frsf")


def register(rule: type[Rule]) -> type[Rule]:
    """Add a ``Rule`` subclass to ``METHODS`` under its ``name``; returns it (a decorator).

    For the running process only: a ``biofa train`` started from the shell finds a rule
    through an entry point or ``BIOFA_PLUGINS`` instead. Registering the same class again
    does nothing; a name taken by another rule, or a class that is not a ``Rule``, is
    refused with a ``PluginError``.
    """
    return METHODS.register(rule)


def get_rule(method: str) -> Rule:
    """A fresh rule instance for ``method``; a clear error for an unknown name."""
    try:
        rule = METHODS[method]
    except (KeyError, TypeError):
        raise UsageError(
            f"unknown method {method!r}; valid methods: {', '.join(sorted(METHODS))}") from None
    return rule()


__all__ = ["METHODS", "PAPER_METHODS", "INITS", "Rule", "DFAHub", "get_rule", "register",
           "Registry", "PluginError", "ENTRY_POINT_GROUP", "PLUGINS_VARIABLE",
           "BP", "FA", "DFA", "USF", "BRSF", "FRSF", "KP", "WM", "DRTP", "DKP"]
