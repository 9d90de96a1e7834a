"""The MoE family's expert-parallel plan: each rank keeps E / W experts of every layer and the
routed rows travel to the rank that owns their expert and back (all-to-all dispatch and combine).

Per layer and forward, on each of the W ranks (b200lab/parallel/expert.py has the collectives):

1. routing and the expert-sorted buffer of this rank's tokens, as on one rank (layer.py); the
   rows bound for rank j are contiguous (experts ``[j E/W, (j+1) E/W)``);
2. the counts: every rank's (routed, kept) rows per expert, all-gathered and read on the host
   (the split sizes of the all-to-all: one host synchronisation per layer);
3. dispatch: the kept rows all-to-all to their experts' ranks; the received rows (grouped by
   source rank) are permuted into local-expert order;
4. this rank's experts over the received rows: ``Experts.grouped(rows, offs)`` (the loop
   reference in float64), the same contract as on one rank;
5. combine: the outputs permuted back, all-to-all'd to the ranks that sent them, and weighted
   and summed per token (dropped rows add nothing), as on one rank.

Gradients. The all-to-alls' backward is the reverse all-to-all, so an expert's weight gradient
on its owner sums the contributions of every rank's tokens, i.e. of every rank's loss. DDP and
FSDP2 average every other gradient over the W data-parallel ranks (the loss is each rank's mean),
so the experts' output gradient is divided by W (and their input gradient multiplied back by W):
every gradient is then the gradient of the one-rank loss of the global batch. The expert
weights are kept out of DDP's and FSDP2's reductions (each rank owns its experts).

The load-balancing loss uses the group's loads (every rank's assignments, from the gathered
counts) with this rank's mean routing probabilities; its mean over ranks is the one-rank
global-batch loss (Megatron-LM's ``global_aux_loss``). A capacity factor applies per rank, to
its own tokens, as under plain data parallel.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.profiler import record_function

from b200lab.models.moe.layer import DispatchPlan, Experts, MoELayer, _GatherRows, combine, dispatch
from b200lab.parallel.expert import Counts, ExpertShard, all_to_all, exchange_counts, scale_grad


def apply(model: nn.Module, shard_of) -> None:
    """Split the experts of every MoE layer: ``shard_of(n_experts)`` is this rank's
    :class:`ExpertShard`. Works on meta and materialised weights (the rank keeps its block)."""
    for layer in model.modules():
        if isinstance(layer, MoELayer):
            split_experts(layer.experts, shard_of(layer.n_experts))
            layer.across_ranks = routed_across_ranks


def split_experts(experts: Experts, shard: ExpertShard) -> None:
    """Keep this rank's experts ``[first, first + n_local)`` of each 3-D weight."""
    rows = slice(shard.first, shard.first + shard.n_local)
    for key in ("up", "down"):
        full = getattr(experts, key)
        setattr(experts, key, nn.Parameter(full.detach()[rows].clone(), requires_grad=full.requires_grad))
    experts.shard = shard


def routed_across_ranks(
    experts: Experts, h: torch.Tensor, weights: torch.Tensor, plan: DispatchPlan, top_k: int, path: str
) -> tuple[torch.Tensor, Counts]:
    """(T, d) tokens -> (T, d) outputs of their routed experts, wherever those live; and every
    rank's counts of this forward."""
    shard = experts.shard
    with record_function("moe.dispatch"):
        counts = exchange_counts(plan.routed, plan.kept, shard)
        send, per_source = counts.send_splits(shard), counts.received(shard)
        receive = per_source.sum(1).tolist()
        n_kept = sum(send)
        rows = all_to_all(dispatch(h, plan, top_k)[:n_kept], send, receive, shard.group)
        order, inverse, offs, local_expert = local_expert_order(per_source, h.device)
        rows = _GatherRows.apply(rows, order, inverse, 1)
    with record_function("moe.experts"):
        out = local_experts(experts, rows, offs, local_expert, path, shard.size)
    with record_function("moe.combine"):
        out = all_to_all(_GatherRows.apply(out, inverse, order, 1), receive, send, shard.group)
        dropped = plan.row_token.shape[0] - n_kept
        if dropped:  # the rows past the kept ones, as one rank's buffer has them (combine ignores them)
            out = torch.cat([out, out.new_zeros((dropped, out.shape[1]))])
        return combine(out, weights, plan), counts


def local_expert_order(
    per_source: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The received rows come grouped by source rank, then by local expert (counts ``per_source``,
    ranks x local experts). Returns (order: the received row at each local-expert-sorted
    position, its inverse, the groups' end rows ``offs``, each sorted row's local expert)."""
    n_sources, n_local = per_source.shape
    experts = torch.arange(n_local).repeat(n_sources)
    expert_of_row = torch.repeat_interleave(experts, per_source.reshape(-1))
    order = torch.argsort(expert_of_row, stable=True)
    inverse = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel()))
    offs = per_source.sum(0).cumsum(0).to(torch.int32)
    return order.to(device), inverse.to(device), offs.to(device), expert_of_row[order].to(device)


def local_experts(
    experts: Experts,
    rows: torch.Tensor,
    offs: torch.Tensor,
    local_expert: torch.Tensor,
    path: str,
    ranks: int,
) -> torch.Tensor:
    """This rank's experts over the rows they received (sorted by local expert). The output's
    gradient is divided by ``ranks`` (and the input's multiplied back): the expert weights'
    gradient sums every rank's loss, the other gradients are averaged over the ranks."""
    if rows.shape[0] == 0:
        # nothing came: the output still hangs off the received rows, so this rank's backward
        # issues the reverse all-to-all like every other rank's, and off the weights, which get a
        # zero gradient as the grouped GEMM gives an expert without rows (its backward rejects
        # zero rows in all)
        return rows * 0 + sum(p.sum() for p in experts.parameters()).to(rows.dtype) * 0
    rows = scale_grad(rows, float(ranks))
    if path == "loop":  # float64 or expert_impl=loop: each row through its expert, weight 1
        out = experts.loop(rows, local_expert[:, None], rows.new_ones((rows.shape[0], 1)), None)
    else:
        out = experts.grouped(rows, offs)
    return scale_grad(out, 1.0 / ranks)
