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

    def rate_metrics(self, stats: dict, samples_per_step: int, seq_len: int, training: bool) -> dict:
        """Rates of the family's own work from this rank's step statistics (``stats``: step_ms_p50,
        ...), e.g. a recommender's embedding bytes per second; their rules go in ``metric_rules``."""
        return {}

    def parallelize(self, model: torch.nn.Module, strategy, training: bool) -> torch.nn.Module:
        """Apply the strategy: the family's tensor-parallel plan over the strategy's TP mesh (from
        :data:`TENSOR_PARALLEL_PLANS`), then the strategy's data-parallel wrapper."""
        mesh = strategy.tp_mesh()
        if mesh is not None:
            tensor_parallel_plan(self.cfg.family).apply(model, mesh, strategy.sequence_parallel)
        return strategy.wrap(model, training)


# model family (``model.family``) -> module with its tensor-parallel plan: ``problems(model_cfg,
# tp, sequence_parallel, seq_len)``, ``apply(model, tp_mesh, sequence_parallel)`` and
# ``plain(name, full_tensor, model_cfg, tp)`` (a parameter in the family's own layout)
TENSOR_PARALLEL_PLANS: dict[str, str] = {"gpt": "b200lab.models.gpt_parallel"}


def tensor_parallel_plan(family: str):
    import importlib

    if family not in TENSOR_PARALLEL_PLANS:
        raise ValueError(f"model family {family!r} has no tensor-parallel plan")
    return importlib.import_module(TENSOR_PARALLEL_PLANS[family])


def tensor_parallel_problems(model_cfg, tp: int, sequence_parallel: bool, seq_len: int) -> list[str]:
    """Why ``model_cfg`` cannot be split over ``tp`` ranks (empty when it can)."""
    family = model_cfg.get("family")
    if family not in TENSOR_PARALLEL_PLANS:
        hint = ("its experts are not split over ranks (expert parallel is its own issue); use parallelism=ddp or fsdp"
                if family == "moe" else f"families with one: {', '.join(sorted(TENSOR_PARALLEL_PLANS))}")
        return [f"parallelism.tp={tp}: model family {family!r} (model={model_cfg.get('name')}) has no tensor-parallel plan; {hint}"]
    return tensor_parallel_plan(family).problems(model_cfg, tp, sequence_parallel, seq_len)
