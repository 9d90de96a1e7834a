"""Expert parallel's communication: which experts a rank owns, the exchange of per-expert row
counts, and the all-to-all that moves rows between ranks (with its reverse as the backward).

A layer of E experts split over W ranks (``parallelism.expert_parallel`` = W) gives rank r the
E / W experts ``[r E/W, (r+1) E/W)``. Rows travel in expert order, so the rows bound for one rank
are contiguous and the all-to-all needs only the row count per destination. Those counts change
every step: every rank first all-gathers its (routed, kept) count per expert (2 x E integers),
then reads the gathered counts on the host to get the split sizes of the all-to-all (one host
synchronisation per layer and forward). torchtitan and Megatron-LM do the same (their "token
dispatcher" exchanges the counts, then synchronises to size the buffers); the gathered counts
also give the group's loads for the load-balancing loss and the routing statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ExpertShard:
    """The experts one rank owns: ``n_experts`` split over the ``size`` ranks of ``group``."""

    group: Any  # the process group of the expert-parallel ranks (its own communicator)
    rank: int  # this rank's index in the group
    size: int
    n_experts: int  # experts per layer in the whole model

    @property
    def n_local(self) -> int:
        return self.n_experts // self.size

    @property
    def first(self) -> int:
        return self.rank * self.n_local


@dataclass(frozen=True)
class Counts:
    """Every rank's per-expert counts of one forward, on the host: (ranks, experts)."""

    routed: torch.Tensor  # assignments each rank routed to each expert (before dropping)
    kept: torch.Tensor  # rows each rank sends to each expert (after the capacity)

    def send_splits(self, shard: ExpertShard) -> list[int]:
        """Rows this rank sends to each rank (its rows are in expert order)."""
        return self.kept[shard.rank].view(shard.size, shard.n_local).sum(1).tolist()

    def received(self, shard: ExpertShard) -> torch.Tensor:
        """(ranks, local experts): the rows each rank sends to each of this rank's experts."""
        return self.kept[:, shard.first : shard.first + shard.n_local]


def exchange_counts(routed: torch.Tensor, kept: torch.Tensor, shard: ExpertShard) -> Counts:
    """All-gather each rank's (routed, kept) counts per expert and read them on the host (the one
    host synchronisation of a layer's forward: the all-to-all needs its split sizes)."""
    mine = torch.stack([routed, kept]).to(torch.int64)
    every = mine.new_empty((shard.size * 2, mine.shape[1]))  # gloo gathers along dim 0 only
    dist.all_gather_into_tensor(every, mine, group=shard.group)
    every = every.cpu().view(shard.size, 2, -1)
    return Counts(every[:, 0], every[:, 1])


class _AllToAll(torch.autograd.Function):
    """``dist.all_to_all_single`` with explicit split sizes; its backward is the reverse
    all-to-all (the gradient of each row goes back to the rank that sent it)."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, send: list[int], receive: list[int], group):
        ctx.send, ctx.receive, ctx.group = send, receive, group
        out = rows.new_empty((sum(receive), *rows.shape[1:]))
        dist.all_to_all_single(out, rows.contiguous(), receive, send, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _AllToAll.apply(grad.contiguous(), ctx.receive, ctx.send, ctx.group), None, None, None


def all_to_all(rows: torch.Tensor, send: list[int], receive: list[int], group) -> torch.Tensor:
    """Send ``send[j]`` consecutive rows to rank j, receive ``receive[j]`` rows from rank j (in
    rank order); autograd-aware."""
    return _AllToAll.apply(rows, send, receive, group)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` in the forward; its gradient multiplied by ``scale`` in the backward."""
    return _ScaleGrad.apply(x, scale)


def expert_parameters(model: torch.nn.Module) -> dict[str, ExpertShard]:
    """Parameter name -> its :class:`ExpertShard`, for each parameter of which this rank holds
    only its experts' rows (the parameters of a module whose ``shard`` is an ExpertShard)."""
    return {
        f"{prefix}.{key}" if prefix else key: module.shard
        for prefix, module in model.named_modules()
        if isinstance(getattr(module, "shard", None), ExpertShard)
        for key, _ in module.named_parameters(recurse=False)
    }


def gather_rows(local: torch.Tensor, shard: ExpertShard) -> torch.Tensor:
    """The full tensor from every rank's block of rows (dim 0), e.g. an expert weight's gradient."""
    full = local.new_empty((shard.size * local.shape[0], *local.shape[1:]))
    dist.all_gather_into_tensor(full, local.contiguous(), group=shard.group)
    return full
