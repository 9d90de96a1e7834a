"""``data=random``: the model family's synthetic batch (uniform random tokens for the GPT)."""

from __future__ import annotations

import torch

from b200lab.data.base import DataSource


class RandomData(DataSource):
    def batch(self, batch: int, seq_len: int, generator: torch.Generator):
        return self.family.synthetic_batch(batch, seq_len, generator, self.device)
