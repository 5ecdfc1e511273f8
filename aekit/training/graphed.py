"""A training step captured by hand as CUDA graphs: the alternative to torch.compile's "reduce-overhead" mode.

Each batch shape (the full batch and the ragged last one) gets its own graph of the whole step: the trainer's gathering
of the batch from the data on the device (or, where batches are streamed, nothing: the batch itself is the input),
every phase's forward, backward and optimizer update, and the tally of the losses, replayed in one launch after the
step's input (the batch's indices, or the batch) is copied into the graph's static input. It
needs what CUDA graph capture needs: no synchronisation with the host inside the step, optimizers built with
``capturable=True`` and a learning rate that is a tensor on the device (the schedule updates it in place, so replays
follow it), and random numbers from the default CUDA generator (captured graphs advance it on every replay).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch

Step = Callable[[torch.Tensor], object]


class GraphedStep:
    """Calls ``step(inputs)`` like the eager step does, one real training step per call, but replays a captured graph.

    The first ``warmup`` calls of each input shape run eagerly on a side stream, as capture requires (lazily created
    optimizer state, cuBLAS workspaces and autograd buffers must exist before capture); the next call captures the
    step and replays it. What the step returns is the graph's static output: tensors in it are overwritten by a later
    replay, so the caller uses them before its next call.
    """

    def __init__(self, step: Step, optimizers: list[torch.optim.Optimizer], warmup: int = 3):
        self.step, self.optimizers, self.warmup = step, optimizers, warmup
        self.side_stream: torch.cuda.Stream | None = None  # one for all warm-ups: each stream has its own workspaces
        self.eager_calls: Counter[torch.Size] = Counter()
        self.graphs: dict[torch.Size, tuple[torch.cuda.CUDAGraph, torch.Tensor, object]] = {}

    def __call__(self, inputs: torch.Tensor):
        """One step on ``inputs``: a batch's indices, or the batch itself (any type); one graph per shape."""
        shape = inputs.shape
        if shape in self.graphs:
            graph, static_inputs, static_output = self.graphs[shape]
            static_inputs.copy_(inputs)
            graph.replay()
            return static_output
        # Each eager or capturing call starts with no gradients: the captured backward then allocates those it writes
        # from the graph's own pool, and a torch.compile'd step sees the same state in warm-up and capture (its
        # guards on the gradients would otherwise compile it again while capturing).
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        if self.eager_calls[shape] < self.warmup:
            self.eager_calls[shape] += 1
            if self.side_stream is None:
                self.side_stream = torch.cuda.Stream(inputs.device)
            main, side = torch.cuda.current_stream(inputs.device), self.side_stream
            side.wait_stream(main)
            with torch.cuda.stream(side):
                output = self.step(inputs)
            main.wait_stream(side)
            return output
        static_inputs = inputs.clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = self.step(static_inputs)
        self.graphs[shape] = (graph, static_inputs, static_output)
        graph.replay()  # capture only records: this call's step happens here
        return static_output
