"""Attention backends behind one call: ``backend(q, k, v) -> out``, causal, shapes (B, H, T, D).

A backend is a class taking its AttentionConfig; conf/attention/NAME.yaml names it by
``_target_``. ``effective`` says what actually runs, with a reason for any difference from what
was asked.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class AttentionBackend:
    def __init__(self, cfg, device: str):
        self.requested = cfg.name
        self.options = dict(cfg.options or {})
        self.device = device
        self.effective = {"name": cfg.name, "reason": None}

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SdpaAttention(AttentionBackend):
    """PyTorch's fused SDPA; on CUDA it dispatches to flash / memory-efficient / cuDNN kernels."""

    def __init__(self, cfg, device: str):
        super().__init__(cfg, device)
        if device == "cpu":
            self.effective["kernel"] = "sdpa-cpu"
        else:
            self.effective["kernel"] = "sdpa-auto (flash|efficient|cudnn, chosen per call by PyTorch)"

    def __call__(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class MathAttention(AttentionBackend):
    """Explicit causal attention with an fp32 (fp64 for fp64 inputs) softmax: the readable reference."""

    def __call__(self, q, k, v):
        T = q.shape[-2]
        scores = (q @ k.transpose(-2, -1)).to(torch.promote_types(q.dtype, torch.float32)) * (1.0 / math.sqrt(q.shape[-1]))
        causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        return (scores.softmax(dim=-1).to(v.dtype)) @ v
