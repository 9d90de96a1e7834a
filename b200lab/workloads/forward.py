"""Inference forward throughput: one full forward of the configured model per step, no autograd."""

from __future__ import annotations

import torch

from b200lab.workloads.base import Workload, build_model, model_flops_per_step


class Forward(Workload):
    uses_model = True

    def setup(self) -> None:
        cfg, ctx = self.ctx.cfg, self.ctx
        self.built = build_model(ctx, training=False)
        self.model = self.built.model.eval()
        family = self.built.family
        self.inputs, _ = family.synthetic_batch(int(cfg.seq.batch), int(cfg.seq.len), ctx.generator(), ctx.device)
        self.tokens_per_step = int(cfg.seq.batch) * family.tokens_per_sample(int(cfg.seq.len))
        self.flops_per_step = model_flops_per_step(ctx, int(cfg.seq.batch), training=False)

    def step(self) -> None:
        with torch.inference_mode(), self.built.precision.autocast():
            self.model(self.inputs)
