"""A block KV cache: one pool of fixed-size blocks per layer, a block table per request.

The pool holds ``num_blocks x block_size`` token slots per layer (keys and values, this rank's
K/V heads). A request is given the blocks for its prompt plus its output when it is admitted
(so it is never preempted), and returns them when it finishes. :meth:`BlockPool.view` turns the
rows of one engine step into what the GPT's decode path reads (``places_slots``): each row's
new keys are written to its slots, and its keys are gathered from its blocks into one
right-aligned window (``(B, kv_heads, W, head_dim)``, W the longest row; shorter rows are
padded on the left, and W rounded up to a multiple of ``WINDOW_ALIGN``), masked by ``doc_ids``
(1 for a real key, 0 for padding), so every attention backend that takes document masks runs
it. The gather is a copy of the rows' keys: a paged attention kernel would read the blocks in
place (docs/serving.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from b200lab.attention.base import AttnMask

# SDPA's memory-efficient kernel wants a mask whose rows start 16-element aligned (eager pads a
# copy, a compiled graph may not), and a window that grows 16 keys at a time, not one
WINDOW_ALIGN = 16


class BlockPool:
    def __init__(self, n_layers: int, num_blocks: int, block_size: int, kv_heads: int, head_dim: int, dtype, device):
        self.block_size, self.num_blocks = block_size, num_blocks
        shape = (num_blocks * block_size, kv_heads, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.free = list(range(num_blocks - 1, -1, -1))  # a stack: the lowest free block is handed out first
        self.device = device

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def can_hold(self, tokens: int) -> bool:
        return self.blocks_for(tokens) <= len(self.free)

    def allocate(self, tokens: int) -> list[int]:
        n = self.blocks_for(tokens)
        if n > len(self.free):
            raise RuntimeError(f"the KV pool has {len(self.free)} free blocks and {tokens} tokens need {n}")
        return [self.free.pop() for _ in range(n)]

    def release(self, blocks: list[int]) -> None:
        self.free.extend(reversed(blocks))

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - len(self.free)

    def view(self, rows: list[Row]) -> PagedStep:
        """The cache view of one forward over ``rows`` (all with the same number of new tokens)."""
        t = rows[0].new_tokens
        if any(r.new_tokens != t for r in rows):
            raise ValueError("every row of one step writes the same number of tokens")
        bs = self.block_size
        width = -(-(max(r.start for r in rows) + t) // WINDOW_ALIGN) * WINDOW_ALIGN
        table = torch.zeros(len(rows), max(len(r.blocks) for r in rows), dtype=torch.long)
        for i, r in enumerate(rows):
            table[i, : len(r.blocks)] = torch.tensor(r.blocks)
        starts = torch.tensor([r.start for r in rows])
        table, starts = table.to(self.device, non_blocking=True), starts.to(self.device, non_blocking=True)
        # right-aligned: column j of row b holds position j - (width - length_b); the new tokens are the last t columns
        pos = torch.arange(width, device=self.device)[None, :] - (width - t - starts)[:, None]
        valid = pos >= 0
        at = pos.clamp(min=0)
        read = table.gather(1, at // bs) * bs + at % bs
        # the new tokens' slots and positions as tensors of their own: a slice's storage offset
        # would be one more size for a compiled step to specialise on
        return PagedStep(
            self,
            read[:, width - t :].clone(memory_format=torch.contiguous_format),
            read,
            valid.long(),
            pos[:, width - t :].clone(memory_format=torch.contiguous_format),
        )


@dataclass
class Row:
    blocks: list[int]  # the request's block table
    start: int  # the position of the first new token (the keys already cached)
    new_tokens: int  # tokens this step feeds (the prompt at prefill, 1 when decoding)


@dataclass
class PagedStep:
    """What one forward reads and writes: ``write`` (B, T) slots of the new keys, ``read`` (B, W)
    slots of every key a row sees (right-aligned), ``valid`` (B, W) 1 where a slot is a real key,
    ``positions`` (B, T) of the new tokens."""

    pool: BlockPool
    write: torch.Tensor
    read: torch.Tensor
    valid: torch.Tensor
    positions: torch.Tensor

    def begin(self, idx: torch.Tensor, positions: torch.Tensor | None):
        return self.positions, AttnMask(doc_ids=self.valid), None

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, where) -> tuple[torch.Tensor, torch.Tensor]:
        b, h, t, d = k.shape
        flat = self.write.reshape(-1)
        self.pool.k[layer][flat] = k.transpose(1, 2).reshape(b * t, h, d).to(self.pool.k[layer].dtype)
        self.pool.v[layer][flat] = v.transpose(1, 2).reshape(b * t, h, d).to(self.pool.v[layer].dtype)
        return self.pool.k[layer][self.read].transpose(1, 2), self.pool.v[layer][self.read].transpose(1, 2)
