"""``workload=validate``: the parallel model against one rank (b200lab/workloads/validate.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from b200lab.core.component import CheckContext
from b200lab.workloads.config.base import WorkloadConfig


@dataclass
class ValidateOptions:
    logits_rtol: float | None = None  # None: by the compute dtype (AUTO_RTOL in b200lab/workloads/validate.py)
    loss_rtol: float | None = None
    grad_rtol: float | None = None


@dataclass
class ValidateConfig(WorkloadConfig):
    warmup_steps: int = 1
    steps: int = 3
    options: ValidateOptions = field(default_factory=ValidateOptions)

    target = "b200lab.workloads.validate.Validate"
    training = True  # gradients are compared: the strategy wraps the model as for training
    uses_model = True

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx)
        for key in ("logits_rtol", "loss_rtol", "grad_rtol"):
            value = cfg.options[key]
            if value is not None and value <= 0:
                problems.append(f"workload.options.{key}={value}: must be > 0")
        if (ctx.cfg.get("attention") or {}).get("documents"):
            problems.append(
                "workload=validate compares batches of token ids; packed documents (attention.documents=true) are not "
                "supported"
            )
        if ctx.cfg.compile.mode is not None:
            problems.append(f"workload=validate runs eager (compile={ctx.cfg.compile.name}): choose compile=none")
        return problems
