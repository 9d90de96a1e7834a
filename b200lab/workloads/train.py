"""One training step: forward, the model family's loss, backward, AdamW step.

Data come from the data group. ``data=random`` (the family's synthetic batch: random tokens for
the GPT) is one fixed batch per data shard, reused every step: the workload measures speed, not
learning. ``data=text`` draws new windows of the training split every step, on the device with
the rank's generator (seeded by run.seed and its data shard, so data-parallel ranks read
different text), and after the timed steps scores the held-out split: ``val_loss`` and
``perplexity`` (b200lab/workloads/perplexity.py), outside the step times. The training loss of
every step is the curve ``train_loss``; ``loss`` is the mean of the last five steps.
``options.save_checkpoint`` writes the weights forward ran with and the model config to
``<job_dir>/artifacts/checkpoint/`` (b200lab/workloads/checkpoint.py), so the run's MLflow
artifacts hold them for ``workload=eval``.

Gradients are synchronised by the parallelism strategy (DDP for data parallel). With
``compile``, forward and loss are compiled as one function, so the cross-entropy fuses with the
output head. ``options.grad_accum`` = k runs k micro-batches of ``seq.batch`` sequences (forward
+ backward each) per optimizer step, as nanoGPT-style training does; a step then processes k x
batch x len tokens. With 16-bit weights the optimizer steps float32 master weights
(b200lab/precision/master.py). With DDP and float32 gradient accumulation,
``parallelism.grad_sync=optimizer_step`` (ddp's default) sums the micro-batches in the float32
masters under no_sync and reduces once, inside the last micro-batch's backward (a DDP comm hook
adds each bucket to its float32 sums and all-reduces them while the backward goes on);
``grad_sync=micro_batch`` all-reduces every micro-batch's 16-bit gradients before they move to
the masters.
"""

from __future__ import annotations

from collections import deque

import torch
from omegaconf import OmegaConf

from b200lab.precision.base import unwrap
from b200lab.workloads import checkpoint, perplexity
from b200lab.workloads.base import (
    Workload,
    build_model,
    call_model,
    compile_fn,
    model_flops_per_step,
)
from b200lab.workloads.config.train import TrainConfig


class Train(Workload):
    Config = TrainConfig
    metric_rules = {"loss": "mean", "train_loss": "mean", **perplexity.METRIC_RULES}

    def setup(self) -> None:
        cfg, ctx = self.ctx.cfg, self.ctx
        self.built = build_model(ctx, training=True, compile_model=False)
        self.model = self.built.model.train()
        self.forward_loss = compile_fn(ctx, self._forward_loss) if self.built.compiled else self._forward_loss
        # parallelism: FSDP2 mixed precision keeps float32 shards itself (no second master copy)
        self.master = (
            None
            if ctx.strategy.keeps_master_weights
            else self.built.precision.master_weights(self.model, compile=self.built.compiled)
        )
        fused = ctx.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            self.master.masters if self.master else self.model.parameters(),
            lr=float(self.options.lr),
            weight_decay=0.1,
            fused=fused,
        )
        self.scaler = self.built.precision.grad_scaler()
        self.accum = int(self.options.grad_accum)
        family, self.batch, self.seq_len = self.built.family, int(cfg.seq.batch), int(cfg.seq.len)
        self.data, self.generator = ctx.data, ctx.generator()
        # synthetic data: one fixed set of micro-batches, reused every step (a speed point)
        fixed = (
            [self.data.batch(self.batch, self.seq_len, self.generator) for _ in range(self.accum)]
            if self.data.synthetic
            else []
        )
        self.inputs, self.targets = [m[0] for m in fixed], [m[1] for m in fixed]
        self.windows = self.data.validation(self.seq_len)
        self.tokens_per_step = self.accum * self.batch * family.tokens_per_sample(self.seq_len)
        self.sync_every_micro_batch = self.master is not None and self.master.accumulate_in_master
        # parallelism: sum micro-batches in the float32 masters under no_sync, all-reduce them once per step
        self.reduce_masters = self.sync_every_micro_batch and self.accum > 1 and ctx.strategy.reduces_master_grads()
        self.sync_every_micro_batch = self.sync_every_micro_batch and not self.reduce_masters
        if self.reduce_masters:
            ctx.strategy.reduce_masters_in_backward(self.model, self.master)
        self.effective = {"grad_accum": self.accum, "data": self.data.effective}
        if ctx.world_size > 1 and self.accum > 1:
            self.effective["ddp_sync"] = (
                "once per step (float32 master gradients, in the last backward)"
                if self.reduce_masters
                else "every micro-batch"
                if self.sync_every_micro_batch
                else "last micro-batch"
            )
        self.flops_per_step = model_flops_per_step(ctx, self.accum * self.batch, training=True)
        self.loss_history = torch.zeros(
            1024, dtype=torch.float64, device=ctx.device
        )  # every step's loss, read after timing
        self.n_steps = 0
        self.stats: deque[dict] = deque(maxlen=5)  # the family's forward statistics of the last steps
        self.validation: perplexity.Perplexity | None = None
        self.metric_rules = {**type(self).metric_rules, **family.metric_rules}

    def _forward_loss(self, inputs, targets: torch.Tensor):
        with self.built.precision.autocast():
            outputs = call_model(self.model, inputs)
        family = self.built.family
        return family.loss(outputs, targets), family.forward_stats(outputs)

    def _micro_batches(self):
        if self.inputs:
            return zip(self.inputs, self.targets)
        return (self.data.batch(self.batch, self.seq_len, self.generator) for _ in range(self.accum))

    @property
    def losses(self) -> torch.Tensor:
        """The loss of every step so far (on the device)."""
        return self.loss_history[: self.n_steps]

    def step(self) -> None:
        total = 0.0
        for i, (inputs, targets) in enumerate(self._micro_batches()):
            last = i == self.accum - 1
            with self.ctx.strategy.no_sync(self.model, last, self.sync_every_micro_batch):
                loss, stats = self.forward_loss(inputs, targets)
                loss = loss / self.accum
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            if self.master is not None and last and self.reduce_masters:
                # parallelism: this backward's comm hook added them to the reduced float32 sums
                self.master.drop_grads()
            elif self.master is not None:
                self.master.accumulate()
            total = total + loss.detach()
        if self.master is not None:
            self.master.step(self._optimizer_step)
        else:
            self._optimizer_step()
            self.optimizer.zero_grad(set_to_none=True)
        self._record(total, stats)

    def health(self) -> str | None:
        """The first step whose loss is not finite (one host sync, outside the timed steps)."""
        bad = (~torch.isfinite(self.losses)).nonzero()
        if not bad.numel():
            return None
        first = int(bad[0])
        return (
            f"diverged at step {first + 1} (counting warm-up steps): loss {float(self.losses[first])}; lower "
            "workload.options.lr"
        )

    def _record(self, loss: torch.Tensor, stats: dict) -> None:
        """Keep the step's loss on the device (no host sync inside the timed steps)."""
        if self.n_steps == self.loss_history.numel():
            self.loss_history = torch.cat([self.loss_history, torch.zeros_like(self.loss_history)])
        self.loss_history[self.n_steps] = loss
        self.n_steps += 1
        self.stats.append(stats)

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def after_timing(self) -> None:
        if self.windows is None:
            return
        model = unwrap(self.model).eval()  # the plain module: no DDP collectives, no recompile
        try:
            self.validation = perplexity.evaluate(model, self.built.precision, self.windows, self.batch)
        finally:
            model.train()

    def metrics(self, stats: dict) -> dict:
        if not self.n_steps:
            return {}
        family = self.built.family
        out = {
            "loss": float(self.losses[-5:].mean()),
            **family.summarize(list(self.stats)),
            **family.rate_metrics(stats, self.accum * self.batch, self.seq_len, True),
        }
        if self.validation is not None:
            out.update(self.validation.metrics())
        return out

    def curves(self) -> dict:
        losses = self.losses.tolist()
        return {"train_loss": [[i + 1, v] for i, v in enumerate(losses)]} if losses else {}

    def write_artifacts(self, out_dir) -> None:
        self.built.family.artifacts(list(self.stats), out_dir)
        if self.options.save_checkpoint:
            cfg = self.ctx.cfg
            checkpoint.save(
                out_dir / checkpoint.FOLDER,
                self.built.precision.plain_state_dict(self.model),
                {
                    "model": OmegaConf.to_container(cfg.model, resolve=True),
                    "data": self.data.effective,
                    "precision": self.built.precision.record(),
                    "steps": self.n_steps,
                    "seq_len": self.seq_len,
                    "seed": int(cfg.run.seed),
                    **({"val_loss": self.validation.val_loss} if self.validation else {}),
                },
            )
