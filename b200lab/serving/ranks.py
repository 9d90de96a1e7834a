"""Which rank reports what, so ranks that serve the same requests count them once.

Tensor-parallel peers (one data shard) run the same requests in lockstep; under
``parallelism=ddp`` the serve workload replicates the same trace on every rank. The aggregator
sums tokens over distinct data shards and combines each metric by its rule, so:

- request-level metrics (latencies, counts, throughputs) come from global rank 0 alone;
- a per-shard figure (generate's tokens/s) comes from each shard's first rank alone (rule sum);
- the ranks' clocks are rank 0's (:class:`SyncedClock`), so their schedules are identical.
"""

from __future__ import annotations

import torch


def shard_leader(ctx) -> bool:
    """Whether this rank is the lowest rank of its data shard."""
    if ctx.world_size == 1:
        return True
    import torch.distributed as dist

    shards = [None] * ctx.world_size
    dist.all_gather_object(shards, ctx.data_shard)
    return shards.index(ctx.data_shard) == ctx.rank


class SyncedClock:
    """Another clock's readings, rank 0's broadcast to every rank (a gloo group: a host value)."""

    def __init__(self, inner):
        import torch.distributed as dist

        self.inner = inner
        self.group = dist.new_group(backend="gloo")

    def now(self) -> float:
        import torch.distributed as dist

        t = torch.tensor([self.inner.now()], dtype=torch.float64)
        dist.broadcast(t, src=0, group=self.group)
        return float(t.item())

    def sleep_until(self, t: float) -> None:
        self.inner.sleep_until(t)

    def work(self, kind: str, rows: int, tokens: int) -> None:
        self.inner.work(kind, rows, tokens)
