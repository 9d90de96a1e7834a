"""What a decode step must move through memory (the copy bandwidth it is held against:
b200lab/measure/copy_bandwidth.py).

``hbm_bw_util`` = (weight bytes + KV bytes of the decode steps) / their device time / the copy
bandwidth measured in the same job, all on this rank:

- weight bytes, per step: every weight this rank holds (its tensor-parallel shard), at its
  stored element size: the parameters and the persistent buffers (an FP8 layer's e4m3 weight and
  its scales, precision=fp8_weight_only), not the non-persistent ones (rotary tables); the token
  (and learned position) embedding tables count one row per sequence (B x d_model); a tied
  output head is counted once, as the head;
- KV bytes, per step at position p: the keys and values of the positions the new token attends
  to, 0..p or the last ``window`` of them under a sliding window (layers x 2 x B x kv_heads x
  min(p + 1, window) x head_dim x element size), plus the new position written;
- the copy bandwidth: ``workload=hbm``'s figure, bytes read + written of a device copy of
  ``size_mb`` buffers (median step), measured before the model is built.

The count is what a minimal decode must move: a static cache's attention reads all ``max_len``
slots and the activations and logits are small; those costs lower the ratio, they do not raise
it. docs/serving.md states the formula with its example numbers.
"""

from __future__ import annotations

import torch


def weights(model: torch.nn.Module) -> list[torch.Tensor]:
    """Every weight tensor a forward reads, once each: the state dict's tensors (parameters and
    persistent buffers), so an FP8 layer's ``weight_fp8`` and ``weight_scale`` count and the
    rotary tables (non-persistent buffers) do not."""
    out, seen = [], set()
    for t in model.state_dict(keep_vars=True).values():
        if isinstance(t, torch.Tensor) and id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def weight_bytes(model: torch.nn.Module, batch: int) -> int:
    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head_weight = id(getattr(getattr(model, "head", None), "weight", None))  # an FP8 head has none: not a table
    total = 0
    for t in weights(model):
        local = t.to_local() if hasattr(t, "to_local") else t
        size = local.element_size()
        if id(t) in tables and id(t) != head_weight:
            total += batch * local.shape[-1] * size  # one row per sequence
        else:
            total += local.numel() * size
    return total


def kv_bytes(
    n_layers: int,
    batch: int,
    kv_heads: int,
    head_dim: int,
    element_size: int,
    position: int,
    window: int | None = None,
) -> int:
    """Keys and values read (positions 0..position, or the last ``window`` of them) and written
    (position) by one decode step."""
    per_position = n_layers * 2 * batch * kv_heads * head_dim * element_size
    read = position + 1 if window is None else min(position + 1, window)
    return per_position * read + per_position


def generation_bytes(decoder, batch: int, prompt_len: int, output_len: int, cache_element_size: int) -> int:
    """Bytes the ``output_len - 1`` decode steps of one generation must move: the weights once per
    step and the KV bytes at each position fed (prompt_len .. prompt_len + output_len - 2), under
    the model's attention window if it has one (``decoder``: b200lab/models/decoding.py)."""
    d = decoder
    kv = sum(
        kv_bytes(d.n_layers, batch, d.kv_heads, d.head_dim, cache_element_size, p, d.window)
        for p in range(prompt_len, prompt_len + output_len - 1)
    )
    return (output_len - 1) * weight_bytes(d.model, batch) + kv
