"""Direct Kolen-Pollack: DFA's direct feedback matrices, learned as Kolen-Pollack learns B.

Each layer l gets e @ B_l from the output error e, as in DFA, but B_l is a Parameter
whose gradient is e^T x_l, the output error times the layer's input (what the layer's
weight would get, were it connected straight to the output). The training optimiser
updates it with W, in the same group (``model.parameters()``), weight decay included:
for the output layer, a Linear, that gradient is W's own, so B_L - W_L shrinks by
(1 - lr * weight_decay) per SGD step exactly as in Kolen-Pollack; for a hidden layer B_l
follows the direct path from x_l to the output that the network computes. The hub
computes the gradient in the backward it already runs: one more (K, N) @ (N, numel)
product per layer and step.
"""

from torch import Tensor, nn

from .dfa import DFA


class DKP(DFA):
    """DFA whose B_l is learned by the optimiser from the gradient e^T x_l."""

    name = "dkp"
    paper = "Webster, Choi & Ahn 2021 (Learning the connections in direct feedback alignment)"
    learns_feedback = True
    fixed_buffers = ()

    def keep(self, layer: nn.Module, feedback: Tensor) -> None:
        layer.feedback_weight = nn.Parameter(feedback)
