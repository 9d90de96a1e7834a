"""``data=random``: the model family's synthetic batch (uniform random tokens for the GPT).

With packed documents (attention.documents, e.g. attention=flex_document), each position after
the first starts a new document with probability 1 / ``data.doc_len``, so documents have
geometric lengths with mean about ``doc_len`` (the last one cut by the sequence end).
"""

from __future__ import annotations

import torch

from b200lab.data.base import DataSource
from b200lab.data.config.random import RandomConfig


class RandomData(DataSource):
    Config = RandomConfig

    def batch(self, batch: int, seq_len: int, generator: torch.Generator):
        inputs, targets = self.family.synthetic_batch(batch, seq_len, generator, self.device)
        if not self.documents:
            return inputs, targets
        self.effective["doc_len"] = doc_len = int(self.cfg.get("doc_len", 2048))
        starts = torch.rand(batch, seq_len, generator=generator, device=self.device) < 1.0 / doc_len
        starts[:, 0] = False
        return self.packed(inputs, starts.long().cumsum(dim=1)), targets
