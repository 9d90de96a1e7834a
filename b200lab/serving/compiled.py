"""The serve step under torch.compile, with symbolic shapes.

The batch, the cache window and the prompt length change from one engine step to the next, so
:func:`compile_step` marks those sizes of the step's inputs dynamic and compiles
:func:`last_logits` once with them symbolic, instead of once per shape (the weights' sizes stay
static). PyTorch still specialises sizes of 1, so a run needs three graphs: a
prefill (one row of T > 1 tokens), a decode step of one row and a decode step of many rows.
:func:`shape_warmup_trace` makes a trace that passes through all three before anything is timed,
and :func:`graphs_compiled` counts graphs, so a compilation inside a timed run is reported
(``compiles_timed``) rather than hidden in its latencies. CUDA graphs are refused: a graph
replays one shape, and these change every step.
"""

from __future__ import annotations

import torch

from b200lab.serving.engine import last_logits
from b200lab.serving.loadgen import RequestSpec


def compile_step(mode: str, fullgraph: bool):
    compiled = torch.compile(last_logits, mode=mode, fullgraph=fullgraph)

    def step(decoder, idx: torch.Tensor, view) -> torch.Tensor:
        for t in (idx, view.write, view.read, view.valid, view.positions):  # (rows, tokens) and (rows, window)
            torch._dynamo.maybe_mark_dynamic(t, 0)
            torch._dynamo.maybe_mark_dynamic(t, 1)
        return compiled(decoder, idx, view)

    return step


def graphs_compiled() -> int:
    """Graphs torch.compile has built in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def shape_warmup_trace(prompt_len: int, max_model_len: int, vocab_size: int) -> list[RequestSpec]:
    """Three requests at t = 0 with outputs of 2, 3 and 4 tokens: three prefills of different
    lengths, then decode steps of 3, 2 and 1 rows (fewer rows where ``max_running`` is lower)."""
    room = max(2, min(prompt_len, max_model_len - 4))
    lens = [room, max(2, room // 2), max(2, room - 3)]
    gen = torch.Generator().manual_seed(0)
    return [
        RequestSpec(i, 0.0, tuple(torch.randint(0, vocab_size, (n,), generator=gen).tolist()), 2 + i)
        for i, n in enumerate(lens)
    ]
