"""Inference forward throughput: one full forward of the configured model per step, no autograd."""

from __future__ import annotations

from collections import deque

import torch

from b200lab.workloads.base import (
    Workload,
    build_model,
    call_model,
    model_flops_per_step,
)
from b200lab.workloads.config.forward import ForwardConfig


class Forward(Workload):
    Config = ForwardConfig

    def setup(self) -> None:
        cfg, ctx = self.ctx.cfg, self.ctx
        self.built = build_model(ctx, training=False)
        self.model = self.built.model.eval()
        family = self.built.family
        self.inputs, _ = ctx.data.batch(int(cfg.seq.batch), int(cfg.seq.len), ctx.generator())
        self.tokens_per_step = int(cfg.seq.batch) * family.tokens_per_sample(int(cfg.seq.len))
        self.flops_per_step = model_flops_per_step(ctx, int(cfg.seq.batch), training=False)
        self.stats: deque[dict] = deque(maxlen=5)  # the family's forward statistics of the last steps
        self.metric_rules = dict(family.metric_rules)
        self.effective = {"data": ctx.data.effective}

    def step(self) -> None:
        with torch.inference_mode(), self.built.precision.autocast():
            outputs = call_model(self.model, self.inputs)
            self.stats.append(self.built.family.forward_stats(outputs))

    def metrics(self, stats: dict) -> dict:
        family, cfg = self.built.family, self.ctx.cfg
        return {
            **family.summarize(list(self.stats)),
            **family.rate_metrics(stats, int(cfg.seq.batch), int(cfg.seq.len), False),
        }

    def write_artifacts(self, out_dir) -> None:
        self.built.family.artifacts(list(self.stats), out_dir)
