"""The model-family contract: what a workload needs to build, feed, score and count a model.

A family is the class ``model._target_`` names. It owns its config fields (``Config``), its
checks (``validate``), its FLOPs (``flops_per_sample``, forward and training, from its config;
shared formulas live in b200lab/measure/flops.py), the shape of its data (``synthetic_batch``
and ``tokens_per_sample``), its loss, and how a parallelism strategy is applied to it
(``parallelize``, torchtitan's ``parallelize_fn``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from b200lab.components import CheckContext, ComponentConfig


@dataclass
class ModelConfig(ComponentConfig):
    family: str = "?"


class ModelFamily:
    Config = ModelConfig
    # a "token" is what tokens_per_s counts: a text token, an image patch, a sample's item
    token_unit = "token"

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        return []

    @staticmethod
    def positive(cfg, *keys: str) -> list[str]:
        """Messages for each ``model.KEY`` that is not a positive integer."""
        return [f"model.{k}={cfg[k]}: must be a positive integer" for k in keys if cfg[k] is None or cfg[k] < 1]

    def build(self, attention) -> torch.nn.Module:
        raise NotImplementedError

    def prepare(self, model: torch.nn.Module, seq_len: int) -> None:
        """Called once after the model is on its device and in its dtype (e.g. rotary tables)."""

    def tokens_per_sample(self, seq_len: int) -> int:
        return seq_len

    def flops_per_sample(self, seq_len: int, training: bool) -> int:
        raise NotImplementedError

    def synthetic_batch(self, batch: int, seq_len: int, generator: torch.Generator, device) -> tuple[Any, torch.Tensor]:
        """(inputs, targets) of random data, never all zeros."""
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training objective, from everything the model returned (a family whose model
        returns extra terms, e.g. a router's load-balancing loss, adds them here)."""
        raise NotImplementedError

    # how each metric from ``summarize`` combines across ranks (max, sum, mean, min)
    metric_rules: dict[str, str] = {}

    def forward_stats(self, outputs) -> dict[str, torch.Tensor]:
        """Statistics of one forward as detached tensors (e.g. tokens per expert). Called inside
        the possibly compiled forward, so it must not synchronise with the host."""
        return {}

    def summarize(self, stats: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Metrics from the ``forward_stats`` of the last steps (after timing, on the host)."""
        return {}

    def artifacts(self, stats: list[dict[str, torch.Tensor]], out_dir) -> list:
        """Files (e.g. a per-expert load histogram) written under ``out_dir`` from the same stats;
        returns their paths."""
        return []

    def parallelize(self, model: torch.nn.Module, strategy, training: bool) -> torch.nn.Module:
        """Apply the strategy; a family with per-layer plans (tensor parallel) overrides this."""
        return strategy.wrap(model, training)
