"""biofa: learning rules without weight transport (FA, DFA, sign symmetry, Kolen-Pollack).

>>> import biofa, torchvision
>>> model = torchvision.models.resnet18(num_classes=10)
>>> report = biofa.convert(model, "fa")          # every Linear/Conv2d now learns with FA
>>> rows = biofa.metrics.alignment(model)        # angle between W and B per layer
>>> net = biofa.models.build("lenet_mnist")      # the study's models

``metrics``, ``models`` and ``parallel`` are imported here so that ``biofa.models.build``
works after a plain ``import biofa``; they cost milliseconds next to torch (torchvision is imported
only when ``resnet18`` is built).
"""

from . import metrics, models, parallel
from .convert import ConversionReport, convert
from .layers import Conv2d, Linear, feedback_layers, frozen_feedback, true_gradient
from .methods import METHODS, PAPER_METHODS

__version__ = "0.1.0"

__all__ = ["convert", "ConversionReport", "Linear", "Conv2d", "METHODS", "PAPER_METHODS",
           "feedback_layers", "true_gradient", "frozen_feedback", "metrics", "models", "parallel",
           "__version__"]
