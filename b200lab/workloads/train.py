"""One training step: forward, next-token cross-entropy, backward, AdamW step.

Data are random tokens (a fixed batch per rank); the workload measures speed, not learning.
Gradients are all-reduced by DDP when ranks > 1. With ``compile``, forward and loss are compiled
as one function, so the cross-entropy fuses with the output head. ``options.grad_accum`` = k runs
k micro-batches of ``seq.batch`` sequences (forward + backward each) per optimizer step, as
nanoGPT-style training does; a step then processes k x batch x len tokens. With 16-bit weights
the optimizer steps float32 master weights (b200lab/precision/master.py); with DDP and float32
gradient accumulation every micro-batch's gradients are then all-reduced, because each one is
moved out of the parameters before the next backward.
"""

from __future__ import annotations

import contextlib
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
        self.master = self.built.precision.master_weights(self.model, compile=self.built.compiled)
        fused = ctx.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            self.master.masters if self.master else self.model.parameters(),
            lr=float(self.options.get("lr", 3e-4)),
            weight_decay=0.1,
            fused=fused,
        )
        self.scaler = self.built.precision.grad_scaler()
        self.accum = int(self.options.get("grad_accum", 1))
        if self.accum < 1:
            raise ValueError(f"workload.options.grad_accum={self.accum}: must be >= 1")
        data = random_tokens(ctx, self.accum * cfg.seq.batch, cfg.seq.len + 1, cfg.model.vocab_size)
        self.inputs = data[:, :-1].contiguous().chunk(self.accum)
        self.targets = data[:, 1:].contiguous().chunk(self.accum)
        self.tokens_per_step = sum(x.numel() for x in self.inputs)
        self.sync_every_micro_batch = self.master is not None and self.master.accumulate_in_master
        self.effective = {"grad_accum": self.accum}
        if ctx.world_size > 1 and self.accum > 1:
            self.effective["ddp_sync"] = "every micro-batch" if self.sync_every_micro_batch else "last micro-batch"
        self.flops_per_step = model_flops_per_step(ctx, self.tokens_per_step, training=True)
        self.losses: deque[torch.Tensor] = deque(maxlen=5)

    def _forward_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with self.built.precision.autocast():
            logits = self.model(inputs)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # the loss in fp32 at least
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def step(self) -> None:
        total = 0.0
        for i, (inputs, targets) in enumerate(zip(self.inputs, self.targets)):
            sync_now = i == self.accum - 1 or self.sync_every_micro_batch
            sync = contextlib.nullcontext() if sync_now or not hasattr(self.model, "no_sync") else self.model.no_sync()
            with sync:
                loss = self.forward_loss(inputs, targets) / self.accum
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            if self.master is not None:
                self.master.accumulate()
            total = total + loss.detach()
        if self.master is not None:
            self.master.step(self._optimizer_step)
        else:
            self._optimizer_step()
            self.optimizer.zero_grad(set_to_none=True)
        self.losses.append(total)

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def metrics(self, stats: dict) -> dict:
        if not self.losses:
            return {}
        return {"loss": float(torch.stack(list(self.losses)).float().mean())}
