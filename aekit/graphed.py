"""A training step captured by hand as CUDA graphs: the alternative to torch.compile's "reduce-overhead" mode.

Each batch shape (the full batch and the ragged last one) gets its own graph of the whole step: every phase's forward,
backward and optimizer update, replayed in one launch after the batch is copied into the graph's static input. It
needs what CUDA graph capture needs: no synchronisation with the host inside the step, optimizers built with
``capturable=True`` and a learning rate that is a tensor on the device (the schedule updates it in place, so replays
follow it), and random numbers from the default CUDA generator (captured graphs advance it on every replay).
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import torch

Step = Callable[[torch.Tensor], dict]


class GraphedStep:
    """Calls ``step(batch)`` like the eager step does, one real training step per call, but replays a captured graph.

    The first ``warmup`` calls of each batch shape run eagerly on a side stream, as capture requires (lazily created
    optimizer state, cuBLAS workspaces and autograd buffers must exist before capture); the next call captures the
    step and replays it. The returned loss parts are the graph's static outputs: a later replay overwrites them, so
    the caller uses them before its next call (the trainer adds them to its running sums at once).
    """

    def __init__(self, step: Step, optimizers: list[torch.optim.Optimizer], warmup: int = 3):
        self.step, self.optimizers, self.warmup = step, optimizers, warmup
        self.eager_calls: Counter[torch.Size] = Counter()
        self.graphs: dict[torch.Size, tuple[torch.cuda.CUDAGraph, torch.Tensor, dict]] = {}

    def __call__(self, batch: torch.Tensor) -> dict:
        shape = batch.shape
        if shape in self.graphs:
            graph, static_batch, static_parts = self.graphs[shape]
            static_batch.copy_(batch)
            graph.replay()
            return static_parts
        if self.eager_calls[shape] < self.warmup:
            self.eager_calls[shape] += 1
            main, side = torch.cuda.current_stream(batch.device), torch.cuda.Stream(batch.device)
            side.wait_stream(main)
            with torch.cuda.stream(side):
                parts = self.step(batch)
            main.wait_stream(side)
            return parts
        static_batch = batch.clone()
        for opt in self.optimizers:  # the graph's backward then allocates the gradients it writes from its own pool
            opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_parts = self.step(static_batch)
        self.graphs[shape] = (graph, static_batch, static_parts)
        graph.replay()  # capture only records: this call's step happens here
        return static_parts
