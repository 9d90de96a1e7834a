"""The decode contract a model family gives generate, serve and the bandwidth count, and the
static KV cache.

:class:`Decoder` is what a workload may know of a model that decodes (``family.decoder(model)``):
its layers, this rank's K/V heads, the head dim, the vocabulary, the attention window, whether a
step reads every weight, its caches (``static_cache``, ``paged_cache``) and the logits of a
forward over one (``logits``). A cache that places its own slots has two calls, used by each
attention block: ``begin(idx, positions)`` -> (positions, the mask, what ``update`` needs) once
per forward, ``update(layer, k, v, where)`` -> the keys and values the layer attends over, and
``last(x)`` -> the hidden states whose logits ``last_only`` asks for (each row's last token).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from b200lab.attention.base import AttnMask


@dataclass
class CacheMask(AttnMask):
    """An :class:`AttnMask` whose dense form is built once per forward and shared by every layer
    (a static cache's length mask: the same for all of them)."""

    def dense(self, tq: int, tk: int, device) -> torch.Tensor:
        key = ("dense", tq, tk, self.window, self.causal)
        if key not in self.memo:
            self.memo[key] = super().dense(tq, tk, device)
        return self.memo[key]


class StaticKVCache:
    """Keys and values of every layer in fixed ``(batch, kv_heads, max_len, head_dim)`` buffers,
    written at a position tensor (``index_copy_``), so a decode step has the same shapes and
    addresses at every position: it compiles once and replays as a CUDA graph.

    ``forward(idx, cache=c)`` (no positions) is a prefill from slot 0: it writes slots 0..T-1 and
    attends over its own keys (the plain causal kernel). ``forward(idx, positions, cache=c)``
    writes at ``positions`` and attends over all ``max_len`` slots with a length mask (a key is
    seen when its slot <= the query's position; later slots hold stale or zero values and are
    masked), so keep ``max_len`` tight: every step reads the whole buffer."""

    def __init__(self, n_layers: int, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        shape = (batch, kv_heads, max_len, head_dim)
        self.max_len = max_len
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.slots = torch.arange(max_len, device=device)
        if torch.device(device).type == "cuda":  # torch.compile's CUDA graphs keep these in place (no copy per replay)
            for t in (*self.k, *self.v, self.slots):
                torch._dynamo.mark_static_address(t)

    def begin(self, idx: torch.Tensor, positions: torch.Tensor | None):
        """(positions of these tokens, the mask, what ``update`` needs) for one forward."""
        if positions is None:
            positions = self.slots[: idx.shape[1]]
            return positions, AttnMask(), (positions, True)
        return positions, CacheMask(q_pos=positions, k_pos=self.slots), (positions, False)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, where) -> tuple[torch.Tensor, torch.Tensor]:
        positions, fresh = where
        self.k[layer].index_copy_(2, positions, k)
        self.v[layer].index_copy_(2, positions, v)
        return (k, v) if fresh else (self.k[layer], self.v[layer])

    @staticmethod
    def last(x: torch.Tensor) -> torch.Tensor:
        """Each row's last token of ``x`` (B, T, ...), as (B, 1, ...)."""
        return x[:, -1:]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))


class Decoder:
    """A built model's decode contract (see the module docstring); ``model`` is called as built
    (inside any precision wrapper), its structure is the family's business."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        n_layers: int,
        kv_heads: int,
        head_dim: int,
        vocab_size: int,
        window: int | None,
        reads_all_weights: bool,
        ensure_positions: Callable[[int], None],
        device,
        logits_of: Callable = lambda out: out,
    ):
        self.model = model
        self.n_layers, self.kv_heads, self.head_dim, self.vocab_size = n_layers, kv_heads, head_dim, vocab_size
        self.window, self.reads_all_weights, self.device = window, reads_all_weights, device
        self.ensure_positions, self._logits_of = ensure_positions, logits_of

    def logits(
        self, idx: torch.Tensor, positions: torch.Tensor | None = None, cache=None, last_only: bool = False
    ) -> torch.Tensor:
        """Logits (B, T or 1, V) of a forward over ``cache`` (a prefill from slot 0 without ``positions``)."""
        return self._logits_of(self.model(idx, positions=positions, cache=cache, last_only=last_only))

    def static_cache(self, batch: int, max_len: int, dtype: torch.dtype) -> StaticKVCache:
        """A :class:`StaticKVCache` of this rank's K/V heads; positions are prepared up to ``max_len``
        so a decode step indexes the rotary table without a host sync."""
        self.ensure_positions(max_len)
        return StaticKVCache(self.n_layers, batch, self.kv_heads, max_len, self.head_dim, dtype, self.device)

    def paged_cache(self, num_blocks: int, block_size: int, dtype: torch.dtype, max_len: int, in_place: bool = False):
        """A block pool (b200lab/serving/paged.py) of this rank's K/V heads for requests up to
        ``max_len`` tokens; ``in_place``: the attention reads the pool, nothing is gathered."""
        from b200lab.serving.paged import BlockPool

        self.ensure_positions(max_len)
        return BlockPool(
            self.n_layers, num_blocks, block_size, self.kv_heads, self.head_dim, dtype, self.device, in_place
        )
