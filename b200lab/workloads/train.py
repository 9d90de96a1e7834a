"""One training step: forward, next-token cross-entropy, backward, AdamW step.

Data are random tokens (a fixed batch per rank); the workload measures speed, not learning.
Gradients are all-reduced by DDP when ranks > 1. With ``compile``, forward and loss are compiled
as one function, so the cross-entropy fuses with the output head.
"""

from __future__ import annotations

from collections import deque

import torch
import torch.nn.functional as F

from b200lab.workloads.base import Workload, build_model, compile_fn, model_flops_per_step, random_tokens


class Train(Workload):
    training = True
    metric_rules = {"loss": "mean"}

    def setup(self) -> None:
        cfg, ctx = self.ctx.cfg, self.ctx
        self.built = build_model(ctx, training=True, compile_model=False)
        self.model = self.built.model.train()
        self.forward_loss = compile_fn(ctx, self._forward_loss) if self.built.compiled else self._forward_loss
        fused = ctx.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=float(self.options.get("lr", 3e-4)), weight_decay=0.1, fused=fused
        )
        self.scaler = self.built.precision.grad_scaler()
        data = random_tokens(ctx, cfg.seq.batch, cfg.seq.len + 1, cfg.model.vocab_size)
        self.inputs, self.targets = data[:, :-1].contiguous(), data[:, 1:].contiguous()
        self.tokens_per_step = self.inputs.numel()
        self.flops_per_step = model_flops_per_step(ctx, self.tokens_per_step, training=True)
        self.losses: deque[torch.Tensor] = deque(maxlen=5)

    def _forward_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with self.built.precision.autocast():
            logits = self.model(inputs)
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    def step(self) -> None:
        loss = self.forward_loss(self.inputs, self.targets)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.losses.append(loss.detach())

    def metrics(self, stats: dict) -> dict:
        if not self.losses:
            return {}
        return {"loss": float(torch.stack(list(self.losses)).float().mean())}
