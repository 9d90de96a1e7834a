"""``workload=allreduce``: one all-reduce size (b200lab/workloads/allreduce.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from b200lab.core.component import CheckContext
from b200lab.workloads.config.comms import CommsConfig


@dataclass
class AllReduceOptions:
    size_mb: float = 256.0  # float32 buffer, MB (1e6 bytes)


@dataclass
class AllReduceConfig(CommsConfig):
    options: AllReduceOptions = field(default_factory=AllReduceOptions)

    target = "b200lab.workloads.allreduce.AllReduce"

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx)
        if cfg.options.size_mb <= 0:
            problems.append(f"workload.options.size_mb={cfg.options.size_mb}: must be > 0")
        return problems
