"""The serve step under torch.compile, with symbolic shapes.

The batch, the cache window and the prompt length change from one engine step to the next, so
:func:`compile_step` marks those sizes of the step's inputs dynamic and compiles
:func:`last_logits` once with them symbolic, instead of once per shape (the weights' sizes stay
static). PyTorch still specialises sizes of 1, so a run needs three graphs: a
prefill (one row of T > 1 tokens), a decode step of one row and a decode step of many rows.
:func:`shape_warmup_trace` makes a trace that passes through all three before anything is timed,
and :func:`graphs_compiled` counts graphs, so a compilation inside a timed run is reported
(``compiles_timed``) rather than hidden in its latencies. CUDA graphs are refused for this
step: a graph replays one shape, and these change every step.

Graphed decode steps (``workload.options.decode_graphs``) take the other road, vLLM's: the decode
batch is padded to a bucket size (:func:`decode_bucket_sizes`), and with the attention reading the
whole pool in place every input of a bucket's step has one shape, whatever the rows' lengths, so
:func:`compile_decode` compiles one static graph per bucket, on a GPU captured as a CUDA graph
(mode ``reduce-overhead``): its kernels replay from the recorded graph, after its few inputs are
copied into the graph's buffers, instead of being launched one by one from the host. Mixed steps
(``workload.options.token_budget``) are padded the same way, to a token count
(:func:`mixed_bucket_sizes`) and ``max_running`` rows, and run by the same compiled step.
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


def decode_bucket_sizes(max_running: int) -> list[int]:
    """The batch sizes decode steps are padded to: the powers of two below ``max_running``, and it."""
    return [1 << i for i in range(max_running.bit_length()) if 1 << i < max_running] + [max_running]


SMALLEST_MIXED_BUCKET = 16  # a mixed step pads to at least this many tokens: fewer graphs, little waste


def mixed_bucket_sizes(token_budget: int) -> list[int]:
    """The token counts mixed steps (prompt chunks beside decode rows) are padded to: the powers of
    two from ``SMALLEST_MIXED_BUCKET`` below ``token_budget``, and it."""
    return [b for b in decode_bucket_sizes(token_budget) if b >= min(SMALLEST_MIXED_BUCKET, token_budget)]


# inductor's CPU code for FlexAttention's block mask fails to compile (CppCompileError, "operands
# to ?: have different types VecMask<int,1> and VecMask<float,1>") at pools of a multiple of 128
# slots (torch 2.13); a CPU gains nothing from graphs but the tests of their shapes and guards
CPU_DECODE_BACKEND = "aot_eager"


def compile_decode(device_type: str, buckets: int):
    """The decode step compiled with static shapes, one graph per bucket; on a GPU by inductor,
    each recorded as a CUDA graph (mode reduce-overhead); on a CPU traced by dynamo and run by
    ``CPU_DECODE_BACKEND``. Dynamo's recompile limit is raised to hold every bucket (past it a
    step would run eagerly)."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    # the limit counts every graph of last_logits' code in this process (other engines', an inline
    # sweep's earlier points): room for this step's buckets on top of them
    setattr(config, name, max(getattr(config, name), len(_graphs_of(last_logits)) + buckets + 2))
    if device_type == "cuda":
        return torch.compile(last_logits, mode="reduce-overhead", dynamic=False)
    return torch.compile(last_logits, backend=CPU_DECODE_BACKEND, dynamic=False)


def _graphs_of(fn) -> list:
    """The graphs dynamo holds for ``fn``'s code in this process."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    return _debug_get_cache_entry_list(fn.__code__)


def cudagraph_skips() -> int:
    """Graphs inductor compiled but did not record as CUDA graphs (it says why in its log)."""
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["cudagraph_skips"])


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
