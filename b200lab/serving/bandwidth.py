"""What a decode step must move through memory, and the card's measured copy bandwidth.

``hbm_bw_util`` = (weight bytes + KV bytes of the decode steps) / their device time / the copy
bandwidth measured in the same job, all on this rank:

- weight bytes, per step: every parameter this rank holds (its tensor-parallel shard), at its
  stored element size, except the token (and learned position) embedding tables, of which a step
  reads one row per sequence (B x d_model); a tied output head is counted once, as the head;
- KV bytes, per step at position p: the keys and values of positions 0..p read by every layer
  (layers x 2 x B x kv_heads x (p + 1) x head_dim x element size) plus the new position written;
- the copy bandwidth: ``workload=hbm``'s figure, bytes read + written of a device copy of
  ``size_mb`` buffers (median step), measured before the model is built.

The count is what a minimal decode must move: a static cache's attention reads all ``max_len``
slots and the activations and logits are small; those costs lower the ratio, they do not raise
it. docs/serving.md states the formula with its example numbers.
"""

from __future__ import annotations

import torch

from b200lab.measure.timing import step_stats, time_steps


def weight_bytes(model: torch.nn.Module, batch: int) -> int:
    total, seen = 0, set()
    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = getattr(model, "head", None)
    head_weight = id(head.weight) if head is not None else None
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        local = p.to_local() if hasattr(p, "to_local") else p
        size = local.element_size()
        if id(p) in tables and id(p) != head_weight:
            total += batch * local.shape[-1] * size  # one row per sequence
        else:
            total += local.numel() * size
    return total


def kv_bytes(n_layers: int, batch: int, kv_heads: int, head_dim: int, element_size: int, position: int) -> int:
    """Keys and values read (positions 0..position) and written (position) by one decode step."""
    per_position = n_layers * 2 * batch * kv_heads * head_dim * element_size
    return per_position * (position + 1) + per_position


def copy_gbps(device: torch.device, size_mb: float, steps: int = 20) -> float:
    """GB/s (1e9 bytes) of ``dst.copy_(src)`` counted read + written, median of ``steps``."""
    n = int(size_mb * 1e6) // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    timing = time_steps(lambda: dst.copy_(src), device, warmup=3, steps=steps)
    del src, dst
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return 2 * n * 4 / (step_stats(timing.step_ms)["step_ms_p50"] / 1e3) / 1e9
