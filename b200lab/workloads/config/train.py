"""``workload=train``: optimizer steps of the configured model (b200lab/workloads/train.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from b200lab.core.component import CheckContext
from b200lab.workloads.config.base import WorkloadConfig


@dataclass
class TrainOptions:
    lr: float = 3e-4
    grad_accum: int = 1  # micro-batches of seq.batch samples per optimizer step
    save_checkpoint: bool = False  # weights + model config to artifacts/checkpoint (rank 0, after timing)


@dataclass
class TrainConfig(WorkloadConfig):
    options: TrainOptions = field(default_factory=TrainOptions)

    target = "b200lab.workloads.train.Train"
    training = True
    uses_model = True

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx)
        if cfg.options.grad_accum < 1:
            problems.append(f"workload.options.grad_accum={cfg.options.grad_accum}: must be >= 1")
        if not cfg.options.lr > 0:
            problems.append(f"workload.options.lr={cfg.options.lr}: must be a positive learning rate")
        return problems
