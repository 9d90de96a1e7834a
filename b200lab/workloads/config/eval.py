"""``workload=eval``: held-out perplexity of a checkpoint (b200lab/workloads/eval.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from b200lab.core.component import CheckContext
from b200lab.workloads.config.base import WorkloadConfig


@dataclass
class EvalOptions:
    checkpoint: str | None = None  # run:<MLflow run id>, a checkpoint folder or .pt file, a GPT-2 folder, or train
    # checkpoint=train: train this model on this data first (once per settings; b200lab/runner/reference_checkpoint.py)
    train_steps: int = 1000
    train_lr: float = 1e-3
    train_batch: int | None = None  # None: seq.batch
    train_precision: str = "fp32"


@dataclass
class EvalConfig(WorkloadConfig):
    options: EvalOptions = field(default_factory=EvalOptions)

    target = "b200lab.workloads.eval.Eval"
    uses_model = True
    reads_checkpoint = True

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx)
        if ctx.spec("data").synthetic:
            problems.append(f"workload=eval scores held-out text; data={ctx.cfg.data.name} has none (use data=text)")
        return problems
