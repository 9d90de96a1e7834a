"""The next token from a batch of logits, on the device (no host sync, CUDA-graph safe)."""

from __future__ import annotations

import torch


def next_token(
    logits: torch.Tensor,
    sampling: str = "greedy",
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits (B, V) -> token ids (B,). ``sample`` draws from softmax(logits / temperature) over
    the ``top_k`` largest (all when None) with the exponential trick (argmax of p / E, E ~ Exp(1)),
    which needs no host sync and replays inside a CUDA graph (default generator)."""
    if sampling == "greedy":
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return (probs / noise).argmax(dim=-1)
