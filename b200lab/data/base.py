"""The data contract: what a workload feeds the model, and what it holds out to score it.

A data source is the class ``data._target_`` names (``data=random``, ``data=text``). It owns its
config fields and checks, the training batches (``batch``), and a held-out validation set
cut into sliding windows (``validation``) for perplexity. ``synthetic`` sources (random tokens)
have no held-out set; a workload may reuse one of their batches every step, as a speed point does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from b200lab.data.config.base import DataConfig


@dataclass
class Windows:
    """Windows of ``length`` tokens over a validation ``stream`` (token ids on the device): window
    i's inputs are ``stream[begin[i] : begin[i] + length]``, its targets the same shifted by one,
    and only targets from index ``score_from[i]`` on are scored, so every target of the stream is
    scored exactly once (``scored`` in all)."""

    stream: torch.Tensor
    begin: torch.Tensor  # (W,)
    score_from: torch.Tensor  # (W,)
    length: int
    scored: int

    def __len__(self) -> int:
        return int(self.begin.numel())

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs, targets, scored mask), each (len(index), length), for the windows ``index``."""
        offsets = torch.arange(self.length + 1, device=self.stream.device)
        tokens = self.stream[self.begin[index, None] + offsets].long()
        mask = offsets[None, :-1] >= self.score_from[index, None]
        return tokens[:, :-1], tokens[:, 1:], mask


class DataSource:
    """``documents`` (set from attention.documents) asks for packed sequences: ``batch`` then
    returns its inputs as ``{"idx": tokens, "doc_ids": document of each position}``."""

    Config = DataConfig
    documents = False

    @property
    def synthetic(self) -> bool:
        return bool(self.Config.synthetic)

    def __init__(self, cfg, family, device: torch.device):
        self.cfg = cfg
        self.family = family
        self.device = device
        self.effective: dict = {"name": cfg.name}

    def batch(self, batch: int, seq_len: int, generator: torch.Generator) -> tuple[Any, torch.Tensor]:
        """(inputs, targets) of ``batch`` samples on the device, drawn with ``generator``."""
        raise NotImplementedError

    def packed(self, tokens: torch.Tensor, doc_ids: torch.Tensor):
        """The inputs of a batch: the tokens, with their document ids when documents are asked for."""
        if not self.documents:
            return tokens
        if (
            "documents_per_sample" not in self.effective
        ):  # the first batch only: a host sync every step would sit in the timed region
            self.effective["documents_per_sample"] = round(float(doc_ids[:, -1].float().mean()) + 1, 2)
        return {"idx": tokens, "doc_ids": doc_ids}

    def validation(self, seq_len: int) -> Windows | None:
        """The held-out set as windows of ``seq_len`` tokens, or None (synthetic data)."""
        return None
