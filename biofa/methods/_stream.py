"""A random stream of a layer's own, for rules that draw after every step (brSF, WM).

Redraw k of a layer takes the seed ``stream_seed(seed, k)``, where ``seed`` is drawn from
torch's generator when the rule is set up (as every B is) and (seed, k) is a buffer of
the layer, saved in its state dict. The draws so depend on nothing else: the ranks of a
data-parallel run, whose global generators are seeded apart for data augmentation and
dropout, draw the same numbers, and a resumed run continues the stream where it stopped.
"""

from __future__ import annotations

import torch
from torch import nn

from ._fast import stream_seed


class Stream:
    """The stream kept in ``layer.<buffer>``; one instance per layer, held by its rule.

    Reading a GPU tensor waits for the GPU, so the two integers are also kept here and the
    buffer is read only when it was replaced or written by anyone else (a load, a move to
    another device); it is written with a fill kernel, which does not wait.
    """

    def __init__(self, layer: nn.Module, buffer: str = "feedback_draws") -> None:
        self.buffer = buffer
        seed = int(torch.randint(2**62, (), dtype=torch.int64))
        layer.register_buffer(buffer, torch.tensor([seed, 0], dtype=torch.int64,
                                                   device=layer.weight.device))
        self._mirror = None

    def next_seed(self, layer: nn.Module) -> int:
        """The seed of the layer's next draw; the stream moves on by one."""
        state = getattr(layer, self.buffer)
        mirror = self._mirror
        if mirror is None or mirror[0] is not state or mirror[1] != state._version:
            seed, draws = (int(value) for value in state.tolist())
        else:
            seed, draws = mirror[2], mirror[3]
        with torch.no_grad():
            state[1] = draws + 1
        self._mirror = (state, state._version, seed, draws + 1)
        return stream_seed(seed, draws)

    def generator(self, layer: nn.Module, device: torch.device) -> torch.Generator:
        """A torch generator of ``device`` seeded for the layer's next draw."""
        return torch.Generator(device).manual_seed(self.next_seed(layer))

    def teardown(self, layer: nn.Module) -> None:
        layer._buffers.pop(self.buffer, None)
