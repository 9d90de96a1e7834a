"""A masked attention backend from outside b200lab: SDPA restricted to a sliding window."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch.nn.functional as F

from b200lab.attention.base import AttentionBackend, AttnMask, expand_kv
from b200lab.attention.config.base import AttentionConfig


@dataclass
class WindowConfig(AttentionConfig):
    window: int = 16

    @classmethod
    def validate(cls, cfg, ctx):
        return [] if cfg.window >= 1 else [f"attention.window={cfg.window}: must be >= 1"]


class SlidingWindow(AttentionBackend):
    Config = WindowConfig

    def __init__(self, cfg, device):
        super().__init__(cfg, device)
        self.effective["kernel"] = f"sdpa with a dense sliding-window mask (window {cfg.window})"

    def __call__(self, q, k, v, mask: AttnMask = AttnMask()):
        mask = dataclasses.replace(mask, window=self.cfg.window)
        allowed = mask.dense(q.shape[-2], k.shape[-2], q.device)
        return F.scaled_dot_product_attention(q, expand_kv(q, k), expand_kv(q, v), attn_mask=allowed)
