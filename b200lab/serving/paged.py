"""A block KV cache: one pool of fixed-size blocks per layer, a block table per request.

The pool holds ``num_blocks x block_size`` token slots per layer (keys and values, this rank's
K/V heads). A request is given the blocks for its prompt plus its output when it is admitted
(so it is never preempted), and returns them when it finishes. :meth:`BlockPool.view` turns the
rows of one engine step into what the GPT's decode path reads (``places_slots``): each row's
new keys are written to its slots, and its keys are gathered from its blocks into one
right-aligned window (``(B, kv_heads, W, head_dim)``, W the longest row; shorter rows are
padded on the left, and W rounded up to a multiple of ``WINDOW_ALIGN``), masked by ``doc_ids``
(1 for a real key, 0 for padding), so every attention backend that takes document masks runs
it. The gather is a copy of the rows' keys. A pool made with ``in_place=True`` copies nothing:
its view hands the attention the whole pool as keys and values, ``(1, kv_heads, S, head_dim)``,
with a mask (:class:`PagedKeys`) over two maps the pool keeps on the device, each slot's owner
(the first block of the table holding it) and position, for a backend that reads pages
(FlexAttention: ``workload.options.kv_read=in_place``, docs/serving.md). The maps are written
when a table is first viewed and cleared when its blocks return, not rebuilt per step: a step
sends the device only its rows' owners, positions and write slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from b200lab.attention.base import AttnMask, PagedKeys

# SDPA's memory-efficient kernel wants a mask whose rows start 16-element aligned (eager pads a
# copy, a compiled graph may not), and a window that grows 16 keys at a time, not one
WINDOW_ALIGN = 16


class BlockPool:
    def __init__(
        self,
        n_layers: int,
        num_blocks: int,
        block_size: int,
        kv_heads: int,
        head_dim: int,
        dtype,
        device,
        in_place: bool = False,
    ):
        self.block_size, self.num_blocks, self.in_place = block_size, num_blocks, in_place
        shape = (num_blocks * block_size, kv_heads, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.free = list(range(num_blocks - 1, -1, -1))  # a stack: the lowest free block is handed out first
        self.reserved = 0  # blocks no request is given (reserve)
        self.device = device
        if in_place:  # each slot's owner (a request's first block; -1: free) and position in its request
            self.slot_owner = torch.full((num_blocks * block_size,), -1, dtype=torch.long, device=device)
            self.slot_pos = torch.zeros(num_blocks * block_size, dtype=torch.long, device=device)
            self._owned: dict[int, list[int]] = {}  # owner id -> the table its maps were written for
            self._table_of: dict[int, int] = {}  # block -> the owner id of the table holding it

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def can_hold(self, tokens: int) -> bool:
        return self.blocks_for(tokens) <= len(self.free)

    def allocate(self, tokens: int) -> list[int]:
        n = self.blocks_for(tokens)
        if n > len(self.free):
            raise RuntimeError(f"the KV pool has {len(self.free)} free blocks and {tokens} tokens need {n}")
        return [self.free.pop() for _ in range(n)]

    def _own(self, rows: list[Row]) -> None:
        """The owner and position maps of every row's table, written when a table is first seen
        (a request's first step), not every step."""
        for r in rows:
            key = r.blocks[0]
            if self._owned.get(key) == r.blocks:
                continue
            slots = self._slots(r.blocks)
            self.slot_owner[slots] = key
            self.slot_pos[slots] = torch.arange(len(r.blocks) * self.block_size, device=self.device)
            self._owned[key] = list(r.blocks)
            self._table_of.update(dict.fromkeys(r.blocks, key))

    def _slots(self, blocks: list[int]) -> torch.Tensor:
        """The slots of ``blocks``, in order, as a device index."""
        first = torch.tensor(blocks, dtype=torch.long)[:, None] * self.block_size
        return (first + torch.arange(self.block_size)).reshape(-1).to(self.device, non_blocking=True)

    def reserve(self, n: int) -> list[int]:
        """``n`` blocks taken out of the pool for good (the padding rows' scratch of graphed decode
        steps): no request is given them, and a request is checked against the usable blocks."""
        blocks = self.allocate(n * self.block_size)
        self.reserved += n
        return blocks

    @property
    def usable_blocks(self) -> int:
        """The blocks requests can be given: the pool less the reserved ones."""
        return self.num_blocks - self.reserved

    def release(self, blocks: list[int]) -> None:
        if self.in_place:  # a block handed out again must not show its old request's keys to the new one
            self.slot_owner[self._slots(blocks)] = -1
            for block in blocks:
                self._owned.pop(self._table_of.pop(block, None), None)
        self.free.extend(reversed(blocks))

    @property
    def used_blocks(self) -> int:
        return self.usable_blocks - len(self.free)

    def view(self, rows: list[Row]) -> PagedStep:
        """The cache view of one forward over ``rows`` (all with the same number of new tokens)."""
        t = rows[0].new_tokens
        if any(r.new_tokens != t for r in rows):
            raise ValueError("every row of one step writes the same number of tokens")
        if self.in_place:
            return self._in_place_view(rows, t)
        bs = self.block_size
        width = -(-(max(r.start for r in rows) + t) // WINDOW_ALIGN) * WINDOW_ALIGN
        starts = torch.tensor([r.start for r in rows])
        table, starts = _table(rows).to(self.device, non_blocking=True), starts.to(self.device, non_blocking=True)
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

    def _in_place_view(self, rows: list[Row], t: int) -> PagedStep:
        """The rows' new slots, positions and owners; the attention reads the pool itself, through
        the owner and position maps the pool keeps."""
        self._own(rows)
        positions, write = zip(*(self._new_slots(r) for r in rows))
        positions = self._to_device(positions)
        keys = PagedKeys(self.slot_owner, self.slot_pos, positions, self._to_device([r.blocks[0] for r in rows]))
        return PagedStep(self, self._to_device(write), None, None, positions, keys)

    def packed_view(self, rows: list[Row], padded: tuple[int, int, list[int]] | None = None) -> PagedStep:
        """One forward over rows of any lengths (decode rows of one token beside prefill chunks),
        packed into a single row of all their tokens, ``(1, sum of new_tokens)``: each token
        carries its request's owner id and position, so it attends to its own request's slots
        alone, causally. The logits taken are each row's last token's (``PagedStep.last``).
        ``padded=(tokens, rows, scratch)``: the step made one static shape, ``tokens`` tokens
        (the padding ones read and write only the first slot of the ``scratch`` block) and
        ``rows`` rows (the padding ones repeat the last token; their logits are to be dropped).
        In-place pools only: nothing else reads keys by owner."""
        if not self.in_place:
            raise ValueError("a packed step needs a pool read in place (kv_read=in_place)")
        self._own(rows)
        positions, write, owners, ends = [], [], [], []
        for r in rows:
            row_positions, row_write = self._new_slots(r)
            positions += row_positions
            write += row_write
            owners += [r.blocks[0]] * r.new_tokens
            ends.append(len(positions) - 1)
        if padded is not None:
            tokens, n_rows, scratch = padded
            if len(positions) > tokens or len(ends) > n_rows:
                raise ValueError(f"{len(positions)} tokens in {len(ends)} rows exceed the padded step {padded[:2]}")
            self._own([Row(scratch, 0, 1)])
            pad = tokens - len(positions)
            positions += [0] * pad
            write += [scratch[0] * self.block_size] * pad
            owners += [scratch[0]] * pad
            ends += [tokens - 1] * (n_rows - len(ends))
        positions = self._to_device([positions])
        keys = PagedKeys(self.slot_owner, self.slot_pos, positions, self._to_device([owners]))
        return PagedStep(self, self._to_device([write]), None, None, positions, keys, self._to_device(ends))

    def _new_slots(self, row: Row) -> tuple[list[int], list[int]]:
        """The positions of a row's new tokens and the pool slots they are written to."""
        bs = self.block_size
        positions = [row.start + j for j in range(row.new_tokens)]
        return positions, [row.blocks[p // bs] * bs + p % bs for p in positions]

    def _to_device(self, values) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long).to(self.device, non_blocking=True)


def _table(rows: list[Row]) -> torch.Tensor:
    """The rows' block tables as one (B, most blocks) tensor, on the host, short rows padded with 0."""
    table = torch.zeros(len(rows), max(len(r.blocks) for r in rows), dtype=torch.long)
    for i, r in enumerate(rows):
        table[i, : len(r.blocks)] = torch.tensor(r.blocks)
    return table


@dataclass
class Row:
    blocks: list[int]  # the request's block table
    start: int  # the position of the first new token (the keys already cached)
    new_tokens: int  # tokens this step feeds (the prompt at prefill, 1 when decoding)


@dataclass
class PagedStep:
    """What one forward reads and writes: ``write`` (B, T) slots of the new keys, ``read`` (B, W)
    slots of every key a row sees (right-aligned), ``valid`` (B, W) 1 where a slot is a real key,
    ``positions`` (B, T) of the new tokens; in place, ``keys`` instead of ``read`` and ``valid``;
    a packed step (B = 1) has ``ends``, the index of each packed row's last token."""

    pool: BlockPool
    write: torch.Tensor
    read: torch.Tensor | None
    valid: torch.Tensor | None
    positions: torch.Tensor
    keys: PagedKeys | None = None
    ends: torch.Tensor | None = None

    def last(self, x: torch.Tensor) -> torch.Tensor:
        """(rows, 1, ...) of ``x`` (B, T, ...): each row's last token; a packed step's rows are its segments."""
        if self.ends is None:
            return x[:, -1:]
        return x[0, self.ends][:, None]

    def begin(self, idx: torch.Tensor, positions: torch.Tensor | None):
        if self.keys is not None:
            return self.positions, AttnMask(paged=self.keys), None
        return self.positions, AttnMask(doc_ids=self.valid), None

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, where) -> tuple[torch.Tensor, torch.Tensor]:
        b, h, t, d = k.shape
        flat = self.write.reshape(-1)
        self.pool.k[layer][flat] = k.transpose(1, 2).reshape(b * t, h, d).to(self.pool.k[layer].dtype)
        self.pool.v[layer][flat] = v.transpose(1, 2).reshape(b * t, h, d).to(self.pool.v[layer].dtype)
        if self.keys is not None:  # the whole pool, (1, kv_heads, S, head_dim): no copy
            return self.pool.k[layer].permute(1, 0, 2)[None], self.pool.v[layer].permute(1, 0, 2)[None]
        return self.pool.k[layer][self.read].transpose(1, 2), self.pool.v[layer][self.read].transpose(1, 2)
