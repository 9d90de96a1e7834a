"""``data=random``: the model family's synthetic batch."""

from __future__ import annotations

from dataclasses import dataclass

from b200lab.core.component import CheckContext
from b200lab.data.config.base import DataConfig


@dataclass
class RandomConfig(DataConfig):
    doc_len: int = 2048  # mean document length of packed sequences (only with attention.documents)

    target = "b200lab.data.random.RandomData"

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        doc_len = cfg.get("doc_len", 2048)
        return [] if doc_len >= 1 else [f"data.doc_len={doc_len}: must be a positive number of tokens"]
