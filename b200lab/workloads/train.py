"""One training step: forward, the model family's loss, backward, AdamW step.

Data are the family's synthetic batch (random tokens for the GPT, a fixed batch per data
shard); the workload measures speed, not learning. Gradients are synchronised by the
parallelism strategy (DDP for data parallel). With ``compile``, forward and loss are compiled
as one function, so the cross-entropy fuses with the output head. ``options.grad_accum`` = k runs
k micro-batches of ``seq.batch`` sequences (forward + backward each) per optimizer step, as
nanoGPT-style training does; a step then processes k x batch x len tokens. With 16-bit weights
the optimizer steps float32 master weights (b200lab/precision/master.py); with DDP and float32
gradient accumulation every micro-batch's gradients are then all-reduced, because each one is
moved out of the parameters before the next backward.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from b200lab.components import CheckContext
from b200lab.workloads.base import Workload, WorkloadConfig, build_model, compile_fn, model_flops_per_step


@dataclass
class TrainOptions:
    lr: float = 3e-4
    grad_accum: int = 1  # micro-batches of seq.batch samples per optimizer step


@dataclass
class TrainConfig(WorkloadConfig):
    options: TrainOptions = field(default_factory=TrainOptions)


class Train(Workload):
    Config = TrainConfig
    training = True
    uses_model = True
    metric_rules = {"loss": "mean"}

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx)
        if cfg.options.grad_accum < 1:
            problems.append(f"workload.options.grad_accum={cfg.options.grad_accum}: must be >= 1")
        return problems

    def setup(self) -> None:
        cfg, ctx = self.ctx.cfg, self.ctx
        self.built = build_model(ctx, training=True, compile_model=False)
        self.model = self.built.model.train()
        self.forward_loss = compile_fn(ctx, self._forward_loss) if self.built.compiled else self._forward_loss
        self.master = self.built.precision.master_weights(self.model, compile=self.built.compiled)
        fused = ctx.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            self.master.masters if self.master else self.model.parameters(),
            lr=float(self.options.lr),
            weight_decay=0.1,
            fused=fused,
        )
        self.scaler = self.built.precision.grad_scaler()
        self.accum = int(self.options.grad_accum)
        family, batch, seq_len = self.built.family, int(cfg.seq.batch), int(cfg.seq.len)
        g = ctx.generator()
        micro = [family.synthetic_batch(batch, seq_len, g, ctx.device) for _ in range(self.accum)]
        self.inputs, self.targets = [m[0] for m in micro], [m[1] for m in micro]
        self.tokens_per_step = self.accum * batch * family.tokens_per_sample(seq_len)
        self.sync_every_micro_batch = self.master is not None and self.master.accumulate_in_master
        self.effective = {"grad_accum": self.accum}
        if ctx.world_size > 1 and self.accum > 1:
            self.effective["ddp_sync"] = "every micro-batch" if self.sync_every_micro_batch else "last micro-batch"
        self.flops_per_step = model_flops_per_step(ctx, self.accum * batch, training=True)
        self.losses: deque[torch.Tensor] = deque(maxlen=5)
        self.stats: deque[dict] = deque(maxlen=5)  # the family's forward statistics of the last steps
        self.metric_rules = {**type(self).metric_rules, **family.metric_rules}

    def _forward_loss(self, inputs, targets: torch.Tensor):
        with self.built.precision.autocast():
            outputs = self.model(inputs)
        family = self.built.family
        return family.loss(outputs, targets), family.forward_stats(outputs)

    def step(self) -> None:
        total = 0.0
        for i, (inputs, targets) in enumerate(zip(self.inputs, self.targets)):
            with self.ctx.strategy.no_sync(self.model, i == self.accum - 1, self.sync_every_micro_batch):
                loss, stats = self.forward_loss(inputs, targets)
                loss = loss / self.accum
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
        self.stats.append(stats)

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def metrics(self, stats: dict) -> dict:
        if not self.losses:
            return {}
        return {"loss": float(torch.stack(list(self.losses)).float().mean()), **self.built.family.summarize(list(self.stats))}

    def write_artifacts(self, out_dir) -> None:
        self.built.family.artifacts(list(self.stats), out_dir)
