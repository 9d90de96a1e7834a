"""The model-family contract: what a workload needs to build, feed, score and count a model.

A family is the class ``model._target_`` names. Its config class (``Config``, in
b200lab/models/config/) owns the fields, the checks and what the family can do; the family owns
its FLOPs (``flops_per_sample``, forward and training, from its config;
shared formulas live in b200lab/measure/flops.py), the shape of its data (``synthetic_batch``
and ``tokens_per_sample``), its loss, and how a parallelism strategy is applied to it
(``parallelize``, torchtitan's ``parallelize_fn``).
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from b200lab.models.config.base import ModelConfig


class ModelFamily:
    Config = ModelConfig

    def __init__(self, cfg):
        self.cfg = cfg

    @property
    def token_unit(self) -> str:
        """What tokens_per_s counts for this family: a text token, an image, a sample."""
        return self.Config.token_unit

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

    def prediction_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of the predictions alone, without auxiliary terms (a router's): what
        ``workload=validate`` compares on each data shard."""
        return self.loss(outputs, targets)

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

    def rate_metrics(self, stats: dict, samples_per_step: int, seq_len: int, training: bool) -> dict:
        """Rates of the family's own work from this rank's step statistics (``stats``: step_ms_p50,
        ...), e.g. a recommender's embedding bytes per second; their rules go in ``metric_rules``."""
        return {}

    def parallelize(self, model: torch.nn.Module, strategy, training: bool, wrap: bool = True) -> torch.nn.Module:
        """Apply the strategy: the family's tensor-parallel plan (``Config.tensor_parallel_plan``)
        over the strategy's TP mesh, its expert-parallel plan (``Config.expert_parallel_plan``:
        each rank keeps its experts), then (``wrap``) the strategy's data-parallel wrapper."""
        mesh = strategy.tp_mesh()
        if mesh is not None:
            self.tensor_parallel_plan().apply(model, mesh, strategy.sequence_parallel)
        if strategy.expert_parallel > 1:
            importlib.import_module(self.Config.expert_parallel_plan).apply(model, strategy.expert_shard)
        return strategy.wrap(model, training) if wrap else model

    def tensor_parallel_plan(self):
        """The module holding the family's plan: ``apply(model, tp_mesh, sequence_parallel)`` and
        ``plain(name, full_tensor, model_cfg, tp)`` (a parameter back in the family's own layout)."""
        if self.Config.tensor_parallel_plan is None:
            raise ValueError(f"model family {self.cfg.family!r} has no tensor-parallel plan")
        return importlib.import_module(self.Config.tensor_parallel_plan)

    def decoder(self, model: torch.nn.Module):
        """The model's decode contract (b200lab/models/decoding.py), for a family whose config
        declares ``decoder``: layers, K/V heads, head dim, vocabulary, its caches and the logits
        of a forward over them. Generate, serve and the bandwidth count use nothing else."""
        raise NotImplementedError(f"model family {self.cfg.family!r} has no KV-cache decode path")

    def fp8_patterns(self) -> dict:
        """Module type -> the FP8 conversion pattern that type holds (b200lab/precision/te_convert.py):
        ``NormLinear(norm, linear)`` for a norm feeding a projection, ``NormMLP(norm, up, down)``
        for a norm + GELU MLP, ``GroupedExperts(up, down)`` for a mixture's 3-D expert weights. The
        converter fuses what a family declares; every other nn.Linear becomes a plain FP8 linear."""
        return {}
