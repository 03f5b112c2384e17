"""Direct Random Target Projection: hidden layers learn from the target, not the error.

DRTP is DFA with the output error replaced, for the hidden layers, by the target: each
layer l below the output receives ``-(y*/N) @ B_l`` (y* one-hot, N the batch rows)
through the same hub and fixed random B_l as DFA, so the hidden updates need neither the
error nor a backward pass through the network; the output layer still learns from the
true error. -y* has the sign of the error e = p - y* at the target class (the one
component whose sign a classification error always knows), and 1/N scales it as a
mean-reduced loss scales e.

The target is read from the error arriving at the output: for softmax cross-entropy the
target class is the only negative component of each row of dL/dz (its smallest, zero,
where the target's probability rounded to 1), so no training loop, attack or metric has
to hand labels to the layers. A row with several negative components (another loss such
as MSE or a margin loss) is refused with ``biofa.errors.SignalError``; an all-zero row
sends nothing.
"""

from .dfa import DFA


class DRTP(DFA):
    """DFA's wiring and fixed B_l; the hub sends -y*/N instead of the output error."""

    name = "drtp"
    paper = ("Frenkel, Lefebvre & Bol 2021, Frontiers in Neuroscience "
             "(Learning without feedback)")
    signal = "target"
