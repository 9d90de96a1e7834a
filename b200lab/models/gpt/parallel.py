"""Megatron-style tensor parallel for the GPT (b200lab/models/gpt/model.py), through
``torch.distributed.tensor.parallel``: each block's attention is split by heads (the fused qkv
column-parallel, the output projection row-parallel: one all-reduce), the MLP by d_ff (up
column-parallel, down row-parallel: one all-reduce), and the output head by vocabulary (logits
all-gathered). Embedding and norms are replicated. With ``sequence_parallel`` the norms and the
residual stream between the split regions are sharded over the sequence instead (each
all-reduce becomes a reduce-scatter plus an all-gather), as Megatron-LM and torchtitan do.

The fused qkv weight holds ``[q heads; k heads; v heads]`` rows. A plain column split of it would
give rank 0 all of q and rank 1 the k and v rows; so its rows are first interleaved to
``[q_0; k_0; v_0; q_1; k_1; v_1; ...]`` (rank r's query and K/V heads together), and the column
split then gives every rank its own heads. :func:`plain` undoes that order, for comparing or
saving the full weight. Each block's ``n_heads``/``kv_heads`` become the rank's own counts (its
forward reshapes by them).
"""

from __future__ import annotations

import torch

PLAIN_LAYOUT_PARAMS = ("qkv.weight", "qkv.bias")  # parameters whose TP layout differs from the plain one


def interleave_order(n_heads: int, kv_heads: int, head_dim: int, tp: int) -> torch.Tensor:
    """Row indices of the fused qkv weight in tensor-parallel order: ``tp_rows = plain_rows[order]``."""
    q, kv = n_heads * head_dim, kv_heads * head_dim
    ql, kvl = q // tp, kv // tp
    parts = []
    for r in range(tp):
        parts += [
            torch.arange(r * ql, (r + 1) * ql),
            torch.arange(q + r * kvl, q + (r + 1) * kvl),
            torch.arange(q + kv + r * kvl, q + kv + (r + 1) * kvl),
        ]
    return torch.cat(parts)


def plain(name: str, full: torch.Tensor, cfg, tp: int) -> torch.Tensor:
    """A full (gathered) parameter or gradient of the tensor-parallel model in the plain GPT's layout."""
    if tp == 1 or not name.endswith(PLAIN_LAYOUT_PARAMS):
        return full
    order = interleave_order(cfg.n_heads, cfg.n_kv_heads or cfg.n_heads, cfg.d_model // cfg.n_heads, tp).to(full.device)
    out = torch.empty_like(full)
    out[order] = full
    return out


def parallel_layout(name: str, full: torch.Tensor, cfg, tp: int) -> torch.Tensor:
    """A full parameter in the plain GPT's layout, in the tensor-parallel model's (undone by :func:`plain`)."""
    if tp == 1 or not name.endswith(PLAIN_LAYOUT_PARAMS):
        return full
    return full[
        interleave_order(cfg.n_heads, cfg.n_kv_heads or cfg.n_heads, cfg.d_model // cfg.n_heads, tp).to(full.device)
    ]


@torch.no_grad()
def _interleave_qkv(block, tp: int) -> None:
    if block.qkv.weight.is_meta:
        return  # no rows yet: a meta build lays out each full weight as it fills it (parallel_layout)
    order = interleave_order(block.n_heads, block.kv_heads, block.head_dim, tp).to(block.qkv.weight.device)
    block.qkv.weight.copy_(block.qkv.weight[order])
    if block.qkv.bias is not None:
        block.qkv.bias.copy_(block.qkv.bias[order])


def _block_plan(sequence_parallel: bool) -> dict:
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        SequenceParallel,
    )

    if not sequence_parallel:
        return {
            "qkv": ColwiseParallel(),
            "out": RowwiseParallel(),
            "mlp.up": ColwiseParallel(),
            "mlp.down": RowwiseParallel(),
        }
    # the residual stream stays a sequence-sharded DTensor between blocks (so x.shape is global)
    return {
        "norm_attn": SequenceParallel(),
        "qkv": ColwiseParallel(input_layouts=Shard(1)),
        "out": RowwiseParallel(output_layouts=Shard(1), use_local_output=False),
        "mlp.norm": SequenceParallel(),
        "mlp.up": ColwiseParallel(input_layouts=Shard(1)),
        "mlp.down": RowwiseParallel(output_layouts=Shard(1), use_local_output=False),
    }


def apply(model: torch.nn.Module, mesh, sequence_parallel: bool) -> None:
    """Split ``model`` (a GPT) over the 1-D ``mesh`` in place."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleOutput,
        SequenceParallel,
        parallelize_module,
    )

    tp = mesh.size()
    for block in model.blocks:
        _interleave_qkv(block, tp)
        parallelize_module(block, mesh, _block_plan(sequence_parallel))
        block.n_heads, block.kv_heads = block.n_heads // tp, block.kv_heads // tp
    top = {
        "head": ColwiseParallel(
            input_layouts=Shard(1) if sequence_parallel else Replicate(), output_layouts=Replicate()
        )
    }
    if sequence_parallel:
        top["embed"] = PrepareModuleOutput(
            output_layouts=Replicate(), desired_output_layouts=Shard(1), use_local_output=False
        )
        top["norm"] = SequenceParallel()
    parallelize_module(model, mesh, top)
