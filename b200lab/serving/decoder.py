"""Batch generation from a static KV cache, fast by construction (gpt-fast's shape).

:class:`StaticDecoder` owns the cache and the step's buffers: the token fed (``tok`` (B, 1)),
its position (``pos`` (1,), a device tensor) and the output (``out`` (B, output_len)). The
prefill writes slots 0..P-1 and computes logits of the last position only; each decode step
feeds one token, writes its keys at ``pos``, attends over the whole cache under a length mask,
samples on the device and updates ``tok``, ``out`` and ``pos`` in place. No Python value changes
from step to step, so the step compiles once and a CUDA graph of it replays at every position
with nothing for the host to do but launch it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch


class StaticDecoder:
    """``decoder``: the model family's decode contract (b200lab/models/decoding.py)."""

    def __init__(
        self,
        decoder,
        batch: int,
        prompt_len: int,
        output_len: int,
        max_len: int,
        cache_dtype,
        pick: Callable[[torch.Tensor], torch.Tensor],
        autocast=contextlib.nullcontext,
    ):
        device = decoder.device
        self.decoder, self.pick, self.autocast = decoder, pick, autocast
        self.prompt_len, self.output_len = prompt_len, output_len
        self.cache = decoder.static_cache(batch, max_len, cache_dtype)
        self.tok = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.out = torch.zeros(batch, output_len, dtype=torch.long, device=device)
        for t in (
            self.tok,
            self.pos,
            self.out,
        ):  # mutated by the step: reduce-overhead's CUDA graphs skip a non-static one
            torch._dynamo.mark_static_address(t)
        self.prefill_fn, self.decode_fn = self._prefill, self._decode
        self.graph: torch.cuda.CUDAGraph | None = None

    def compile(self, mode: str, fullgraph: bool, own_graph: bool) -> None:
        """torch.compile both functions (inductor's coordinate-descent tuning on, as gpt-fast does;
        this process is the job's own). Under our own CUDA graph inductor must not capture its
        own (max-autotune -> max-autotune-no-cudagraphs); the prefill runs once per generation
        and never takes reduce-overhead's graphs."""
        import torch._inductor.config as inductor

        # gpt-fast's setting: tunes the small fused kernels of a one-token step
        inductor.coordinate_descent_tuning = True
        step_mode = "max-autotune-no-cudagraphs" if own_graph and mode == "max-autotune" else mode
        self.prefill_fn = torch.compile(
            self._prefill, mode="default" if mode == "reduce-overhead" else step_mode, fullgraph=fullgraph
        )
        self.decode_fn = torch.compile(self._decode, mode=step_mode, fullgraph=fullgraph)

    def _prefill(self, prompts: torch.Tensor) -> None:
        first = self.pick(self.decoder.logits(prompts, cache=self.cache, last_only=True)[:, -1])
        self.tok.copy_(first[:, None])
        self.out[:, :1].copy_(first[:, None])
        self.pos.fill_(self.prompt_len)

    def _decode(self) -> None:
        nxt = self.pick(self.decoder.logits(self.tok, positions=self.pos, cache=self.cache)[:, -1])
        self.tok.copy_(nxt[:, None])
        self.out.index_copy_(1, self.pos - (self.prompt_len - 1), nxt[:, None])
        self.pos.add_(1)

    def capture(self, prompts: torch.Tensor) -> None:
        """The (compiled) decode step in a CUDA graph, after warm-up calls on a side stream."""
        if self.output_len < 2:
            raise ValueError(
                f"output_len={self.output_len}: no decode step to capture (the prefill gives the only token)"
            )
        with torch.no_grad(), self.autocast():
            self.prefill_fn(prompts)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.pos.fill_(self.prompt_len)
                    self.decode_fn()
            torch.cuda.current_stream().wait_stream(side)
            self.pos.fill_(self.prompt_len)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.decode_fn()

    def generate(self, prompts: torch.Tensor, mark: Callable[[], None] = lambda: None) -> torch.Tensor:
        """``out`` after a prefill and output_len - 1 decode steps; ``mark()`` after the prefill
        and after each step (where the caller records its events)."""
        with torch.no_grad(), self.autocast():
            self.prefill_fn(prompts)
            mark()
            for _ in range(self.output_len - 1):
                if self.graph is not None:
                    self.graph.replay()
                else:
                    self.decode_fn()
                mark()
        return self.out
