"""The learning rules, one small module each, behind one registry.

>>> from biofa.methods import METHODS, get_rule
>>> sorted(METHODS)
['bp', 'brsf', 'dfa', 'fa', 'frsf', 'kp', 'usf']
"""

from __future__ import annotations

from .base import INITS, Rule
from .bp import BP
from .brsf import BRSF
from .dfa import DFA, DFAHub
from .fa import FA
from .frsf import FRSF
from .kp import KP
from .usf import USF
from ..errors import UsageError

#: Every rule by its paper's short name. ``kp`` is not in Sanfiz & Akrout 2021.
METHODS: dict[str, type[Rule]] = {rule.name: rule for rule in (BP, FA, DFA, USF, BRSF, FRSF, KP)}

#: The methods of Sanfiz & Akrout 2021, in the paper's order.
PAPER_METHODS = ("bp", "fa", "dfa", "usf", "brsf", "frsf")


def get_rule(method: str) -> Rule:
    """A fresh rule instance for ``method``; a clear error for an unknown name."""
    try:
        return METHODS[method]()
    except (KeyError, TypeError):
        raise UsageError(
            f"unknown method {method!r}; valid methods: {', '.join(sorted(METHODS))}") from None


__all__ = ["METHODS", "PAPER_METHODS", "INITS", "Rule", "DFAHub", "get_rule",
           "BP", "FA", "DFA", "USF", "BRSF", "FRSF", "KP"]
