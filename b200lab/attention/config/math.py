"""``attention=math``: the explicit reference (scores, dense mask, softmax), any mask."""

from __future__ import annotations

from dataclasses import dataclass

from b200lab.attention.config.base import AttentionConfig


@dataclass
class MathConfig(AttentionConfig):
    target = "b200lab.attention.base.MathAttention"
