"""``workload=hbm``: a device copy, the card's memory-bandwidth ceiling (b200lab/workloads/hbm.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from b200lab.core.component import CheckContext
from b200lab.workloads.config.base import WorkloadConfig


@dataclass
class HbmOptions:
    size_mb: float | None = None  # MB (1e6 bytes) per buffer; None: sized for the device


@dataclass
class HbmConfig(WorkloadConfig):
    options: HbmOptions = field(default_factory=HbmOptions)

    target = "b200lab.workloads.hbm.HbmCopy"

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx)
        if cfg.options.size_mb is not None and cfg.options.size_mb <= 0:
            problems.append(f"workload.options.size_mb={cfg.options.size_mb}: must be > 0")
        return problems
