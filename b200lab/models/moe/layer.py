"""A mixture-of-experts MLP, the part of a GPT block that a MoE model replaces: the norm, a router,
routed experts and optional shared experts.

Routing, per token: router logits (the compute dtype's GEMM), scores in float32 (softmax or
sigmoid), the ``top_k`` experts by score (plus an optional per-expert ``selection_bias``,
DeepSeek-V3's balancing bias: it changes which experts are picked, not their weights), and their
scores renormalised to sum to 1 (``renormalize``).

Dispatch with no host synchronisation and fixed shapes: the T x k assignments are sorted by expert
(stable, slot-major: every token's first choice before any second choice, then token order), so
each expert's rows are contiguous in one buffer of T*k rows and its group ends at ``offs`` (the
cumulative sum of the per-expert counts). With a capacity factor each expert keeps at most
C = ceil(factor * T * k / E) rows, first in that order; the dropped assignments are moved behind
the last kept row, where the grouped GEMM does not compute, and they add nothing to the output
(``torch.where``, so whatever those rows hold cannot leak into values or gradients).

Expert compute: ``grouped`` runs two ``torch._grouped_mm`` (up and down) over the sorted buffer;
``loop`` is the reference: per expert, its tokens (``nonzero``: a host sync), two ``F.linear``,
``index_add`` back. The permutation's backward is a gather by the inverse permutation and a sum
over the k copies of a token (no atomics).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import record_function

from b200lab.models.config.moe import IMPLS, SCORES
from b200lab.models.gpt.model import make_norm

GROUPED_MM = getattr(torch, "_grouped_mm", None)


class DispatchPlan(NamedTuple):
    """Where each of the N = T*k assignments (index t*k + slot) goes in the expert-sorted buffer."""

    row_token: torch.Tensor  # (N,) the token each buffer row reads
    row_assignment: torch.Tensor  # (N,) the assignment each buffer row holds
    assignment_row: torch.Tensor  # (N,) the buffer row of each assignment
    offs: torch.Tensor  # (E,) int32: end row of each expert's group
    routed: torch.Tensor  # (E,) assignments routed to each expert
    kept: torch.Tensor  # (E,) of those, kept under the capacity (= routed when dropless)
    kept_mask: torch.Tensor | None  # (N,) per assignment; None when dropless
    row_valid: torch.Tensor | None  # (N,) per buffer row; None when dropless


class RoutingStats(NamedTuple):
    """One layer's routing in one forward, carried to the model's output."""

    aux_loss: torch.Tensor  # load-balancing loss (0 outside training)
    z_loss: torch.Tensor  # router z-loss (0 outside training)
    routed: torch.Tensor  # (E,) assignments per expert
    kept: torch.Tensor  # (E,) after dropping
    # expert parallel: the same, summed over the expert-parallel ranks (None on one rank)
    group_routed: torch.Tensor | None = None
    group_kept: torch.Tensor | None = None


def capacity_for(tokens: int, top_k: int, n_experts: int, factor: float | None) -> int | None:
    """Rows each expert keeps: ceil(factor * tokens * top_k / n_experts); None is dropless."""
    if factor is None:
        return None
    return max(1, math.ceil(factor * tokens * top_k / n_experts))


def route(
    logits: torch.Tensor,
    top_k: int,
    score: str = "softmax",
    selection_bias: torch.Tensor | None = None,
    renormalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(experts (T, k) by descending choice, their weights (T, k) and scores (T, E), in float32 at least)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    scores = logits.softmax(-1) if score == "softmax" else logits.sigmoid()
    choice = scores if selection_bias is None else scores + selection_bias.to(scores.dtype)
    experts = choice.topk(top_k, dim=-1).indices
    weights = scores.gather(-1, experts)
    if renormalize:
        weights = weights / weights.sum(-1, keepdim=True)
    return experts, weights, scores


def plan_dispatch(experts: torch.Tensor, n_experts: int, capacity: int | None = None) -> DispatchPlan:
    """The expert-sorted layout of the assignments ``experts`` (T, k), from sorts and cumulative
    sums only: no host synchronisation, every shape fixed by T, k and E."""
    T, k = experts.shape
    n = T * k
    device = experts.device
    slot_major = experts.t().reshape(-1)  # index slot * T + token: first choices first
    order = torch.argsort(slot_major, stable=True)
    assignment = (order % T) * k + order // T  # the token-major index t * k + slot
    routed = torch.zeros(n_experts, dtype=torch.int64, device=device).scatter_add_(
        0, slot_major, torch.ones_like(slot_major)
    )
    positions = torch.arange(n, device=device)
    if capacity is None:  # row i holds the i-th assignment in sorted order
        assignment_row = torch.empty_like(assignment).scatter_(0, assignment, positions)
        return DispatchPlan(
            assignment // k, assignment, assignment_row, routed.cumsum(0).to(torch.int32), routed, routed, None, None
        )
    sorted_expert = slot_major[order]
    rank = positions - (routed.cumsum(0) - routed)[sorted_expert]  # place in the expert's queue
    keep = rank < capacity
    kept = routed.clamp(max=capacity)
    n_kept = kept.sum()
    dropped_rank = (~keep).cumsum(0) - 1
    rows = torch.where(keep, (kept.cumsum(0) - kept)[sorted_expert] + rank, n_kept + dropped_rank)
    row_valid = positions < n_kept
    row_assignment = torch.empty_like(assignment).scatter_(0, rows, assignment)
    assignment_row = torch.empty_like(assignment).scatter_(0, assignment, rows)
    return DispatchPlan(
        row_assignment // k,
        row_assignment,
        assignment_row,
        kept.cumsum(0).to(torch.int32),
        routed,
        kept,
        row_valid[assignment_row],
        row_valid,
    )


def load_balancing_loss(
    scores: torch.Tensor,
    routed: torch.Tensor,
    top_k: int,
    score: str = "softmax",
    assignments: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Switch Transformer's E * sum_e f_e P_e: f_e the fraction of assignments routed to expert e,
    P_e its mean routing probability (sigmoid scores normalised per token). 1 when balanced.
    ``routed`` and ``assignments`` (default T * top_k) may count more tokens than ``scores`` holds
    (expert parallel: every rank's assignments)."""
    T, E = scores.shape
    probs = scores if score == "softmax" else scores / scores.sum(-1, keepdim=True)
    return E * (routed.to(probs.dtype) / (T * top_k if assignments is None else assignments) * probs.mean(0)).sum()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's z-loss: the mean squared log-sum-exp of the router logits."""
    return torch.logsumexp(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1).square().mean()


class _GatherRows(torch.autograd.Function):
    """``x[index]`` whose backward is a gather too: ``inverse`` names, for every one of the
    ``fold`` copies of each source row, the output row it went to (a permutation), so the
    gradient is ``grad[inverse]`` summed over the copies, with no atomic adds."""

    @staticmethod
    def forward(ctx, x, index, inverse, fold: int):
        ctx.save_for_backward(inverse)
        ctx.fold = fold
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        g = grad.index_select(0, inverse)
        if ctx.fold > 1:
            g = g.view(-1, ctx.fold, g.shape[-1]).sum(1)
        return g, None, None, None


def dispatch(h: torch.Tensor, plan: DispatchPlan, top_k: int) -> torch.Tensor:
    """(T, d) tokens -> (T*k, d) rows in expert order; dropped rows are zero."""
    rows = _GatherRows.apply(h, plan.row_token, plan.assignment_row, top_k)
    return rows if plan.row_valid is None else torch.where(plan.row_valid[:, None], rows, 0)


def combine(rows: torch.Tensor, weights: torch.Tensor, plan: DispatchPlan) -> torch.Tensor:
    """(T*k, d) expert outputs -> (T, d): each token's outputs weighted and summed."""
    T, k = weights.shape
    per_assignment = _GatherRows.apply(rows, plan.assignment_row, plan.row_assignment, 1)
    if plan.kept_mask is not None:
        per_assignment = torch.where(plan.kept_mask[:, None], per_assignment, 0)
    # elementwise, not bmm: cuBLAS's batched GEMM over T tiny (1 x k) products is slow, in the backward most
    return (per_assignment.view(T, k, -1) * weights.to(rows.dtype).unsqueeze(-1)).sum(1)


def grouped_kernel(device: torch.device, dtype: torch.dtype) -> str:
    """What ``torch._grouped_mm`` runs on this device for this dtype (aten GroupedBlas.cpp)."""
    if device.type != "cuda":
        return f"{device.type}: one mm per expert"
    if dtype == torch.bfloat16 and torch.cuda.get_device_capability(device)[0] in (9, 10):
        return "CUTLASS grouped GEMM (bf16, sm90/sm100): no host sync"
    return "aten fallback: one mm per expert after copying the offsets to the host (a host sync per call)"


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matmuls run in: autocast's when it is on (it does not cover grouped GEMMs)."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


class Router(nn.Module):
    """Logits of each token for each expert. A plain weight rather than ``nn.Linear``, so layer
    converters (FP8) leave the routing decision in high precision."""

    def __init__(self, d_model: int, n_experts: int, selection_bias: list | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_experts, d_model))
        bias = None if selection_bias is None else torch.tensor(list(selection_bias), dtype=torch.float32)
        self.register_buffer("selection_bias", bias, persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.weight.to(h.dtype))


class Experts(nn.Module):
    """E GELU(tanh) MLPs as 3-D weights: up (E, f, d) and down (E, d, f), nn.Linear's layout."""

    def __init__(self, n_experts: int, d_model: int, d_ff: int):
        super().__init__()
        self.up = nn.Parameter(torch.empty(n_experts, d_ff, d_model))
        self.down = nn.Parameter(torch.empty(n_experts, d_model, d_ff))
        # expert parallel: the block of experts this rank holds, an ExpertShard (b200lab/parallel/expert.py);
        # up and down then hold only those experts' rows (b200lab/models/moe/expert_parallel.py)
        self.shard = None

    def weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return self.up.to(dtype), self.down.to(dtype)

    def grouped(self, rows: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
        """Rows sorted by expert, expert e's group ending at offs[e]; rows past offs[-1] are not computed."""
        up, down = self.weights(rows.dtype)
        hidden = F.gelu(GROUPED_MM(rows, up.transpose(-2, -1), offs=offs), approximate="tanh")
        return GROUPED_MM(hidden, down.transpose(-2, -1), offs=offs)

    def loop(
        self, h: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor, kept_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """The reference: each expert's tokens found with ``nonzero`` (a host sync per expert)."""
        up, down = self.weights(h.dtype)
        k = experts.shape[1]
        flat_experts, flat_weights = experts.reshape(-1), weights.reshape(-1)
        out = torch.zeros_like(h)
        for e in range(up.shape[0]):
            chosen = flat_experts == e
            if kept_mask is not None:
                chosen = chosen & kept_mask
            assignments = chosen.nonzero().squeeze(1)
            tokens = assignments // k
            y = F.linear(F.gelu(F.linear(h.index_select(0, tokens), up[e]), approximate="tanh"), down[e])
            out = out.index_add(0, tokens, y * flat_weights[assignments, None].to(y.dtype))
        return out


class SharedExperts(nn.Module):
    """Always-on experts (DeepSeekMoE), as one GELU MLP as wide as all of them together."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(h), approximate="tanh"))


class MoELayer(nn.Module):
    """Norm, router, routed experts (+ shared experts): a drop-in for the GPT block's ``MLP``.

    Each forward leaves its :class:`RoutingStats` in ``self.stats`` for the model to collect into
    its output, and the expert path it took and its dtype in ``self.ran``."""

    def __init__(
        self,
        d_model: int,
        n_experts: int,
        top_k: int,
        d_ff_expert: int,
        n_shared_experts: int = 0,
        score: str = "softmax",
        renormalize: bool = True,
        capacity_factor: float | None = None,
        impl: str = "grouped",
        selection_bias: list | None = None,
        norm_eps: float = 1e-5,
        norm: str = "rmsnorm",
    ):
        super().__init__()
        if impl not in IMPLS or score not in SCORES:
            raise ValueError(f"impl {impl!r} / score {score!r}: choose {IMPLS} / {SCORES}")
        self.n_experts, self.top_k, self.d_ff_expert = n_experts, top_k, d_ff_expert
        self.score, self.renormalize, self.capacity_factor, self.impl = score, renormalize, capacity_factor, impl
        self.norm = make_norm(norm, d_model, norm_eps)
        self.router = Router(d_model, n_experts, selection_bias)
        self.experts = Experts(n_experts, d_model, d_ff_expert)
        self.shared = SharedExperts(d_model, n_shared_experts * d_ff_expert) if n_shared_experts else None
        self.stats: RoutingStats | None = None
        self.ran: tuple[str, torch.dtype] | None = None
        # expert parallel: the routed experts over ranks, (experts, h, weights, plan, top_k, path) ->
        # (output, every rank's counts); installed by b200lab/models/moe/expert_parallel.py
        self.across_ranks = None

    def reset_parameters(self, std: float = 0.02, residual_scale: float = 1.0) -> None:
        """GPT-2's init: normal(std); projections into the residual stream scaled by residual_scale."""
        nn.init.normal_(self.router.weight, std=std)
        nn.init.normal_(self.experts.up, std=std)
        nn.init.normal_(self.experts.down, std=std * residual_scale)
        if self.shared is not None:
            nn.init.normal_(self.shared.up.weight, std=std)
            nn.init.normal_(self.shared.down.weight, std=std * residual_scale)

    def path(self, dtype: torch.dtype) -> str:
        """The expert implementation that runs in ``dtype``: the grouped GEMM has no float64
        kernel, and torch.compile traces it in bfloat16 only (other dtypes run it eagerly)."""
        if self.impl == "loop" or GROUPED_MM is None or dtype == torch.float64:
            return "loop"
        if dtype != torch.bfloat16 and torch.compiler.is_compiling():
            return "grouped-eager"
        return "grouped"

    def route(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, DispatchPlan]:
        """(logits, experts, weights, scores, plan) for the normalised tokens ``h`` (T, d)."""
        with record_function("moe.router"):
            logits = self.router(h)
            experts, weights, scores = route(
                logits, self.top_k, self.score, self.router.selection_bias, self.renormalize
            )
            capacity = capacity_for(h.shape[0], self.top_k, self.n_experts, self.capacity_factor)
            return logits, experts, weights, scores, plan_dispatch(experts, self.n_experts, capacity)

    def routed_experts(self, h: torch.Tensor, weights: torch.Tensor, plan: DispatchPlan) -> torch.Tensor:
        """The grouped path: dispatch, grouped GEMMs, combine."""
        with record_function("moe.dispatch"):
            rows = dispatch(h, plan, self.top_k)
        with record_function("moe.experts"):
            rows = self.experts.grouped(rows, plan.offs)
        with record_function("moe.combine"):
            return combine(rows, weights, plan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        dtype = compute_dtype(x)
        h = self.norm(x).reshape(-1, shape[-1]).to(dtype)
        logits, experts, weights, scores, plan = self.route(h)
        path = self.path(dtype)
        counts = None  # expert parallel: every rank's per-expert counts of this forward
        if self.across_ranks is not None:  # its split sizes are read on the host: eager under torch.compile
            y, counts = torch.compiler.disable(self.across_ranks)(self.experts, h, weights, plan, self.top_k, path)
        elif path == "loop":
            y = self.experts.loop(h, experts, weights, plan.kept_mask)
        elif path == "grouped-eager":
            y = torch.compiler.disable(self.routed_experts)(h, weights, plan)
        else:
            y = self.routed_experts(h, weights, plan)
        if self.shared is not None:
            y = y + self.shared(h)
        group_routed = group_kept = None
        if counts is not None:  # the expert-parallel group's loads
            group_routed, group_kept = (c.sum(0).to(h.device) for c in (counts.routed, counts.kept))
        if self.training:
            balance = (
                load_balancing_loss(scores, plan.routed, self.top_k, self.score)
                if counts is None
                else load_balancing_loss(scores, group_routed, self.top_k, self.score, group_routed.sum())
            )
            aux, z = balance, router_z_loss(logits)
        else:
            aux = z = scores.new_zeros(())
        self.stats = RoutingStats(aux, z, plan.routed, plan.kept, group_routed, group_kept)
        self.ran = (path, dtype)
        return y.view(shape)
