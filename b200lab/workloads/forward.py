"""Inference forward throughput: one full forward to logits per step, no autograd."""

from __future__ import annotations

import torch

from b200lab.workloads.base import Workload, build_model, model_flops_per_step, random_tokens


class Forward(Workload):
    def setup(self) -> None:
        cfg = self.ctx.cfg
        self.built = build_model(self.ctx, training=False)
        self.model = self.built.model.eval()
        self.tokens = random_tokens(self.ctx, cfg.seq.batch, cfg.seq.len, cfg.model.vocab_size)
        self.tokens_per_step = self.tokens.numel()
        self.flops_per_step = model_flops_per_step(self.ctx, self.tokens_per_step, training=False)

    def step(self) -> None:
        with torch.inference_mode(), self.built.precision.autocast():
            self.model(self.tokens)
