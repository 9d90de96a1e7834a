"""All-reduce bandwidth across the job's ranks (NCCL on GPU, gloo on CPU): ``workload=comms``
(b200lab/workloads/comms.py) fixed to one float32 all-reduce (sum) of ``size_mb`` MB (1e6
bytes) and no size sweep. busbw = algbw x 2 (n - 1) / n, as nccl-tests defines it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from b200lab.components import CheckContext
from b200lab.workloads.base import WorkloadConfig
from b200lab.workloads.comms import Comms


@dataclass
class AllReduceOptions:
    size_mb: float = 256.0  # float32 buffer, MB (1e6 bytes)


@dataclass
class AllReduceConfig(WorkloadConfig):
    options: AllReduceOptions = field(default_factory=AllReduceOptions)


class AllReduce(Comms):
    Config = AllReduceConfig
    op = "all_reduce"

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx)
        if cfg.options.size_mb <= 0:
            problems.append(f"workload.options.size_mb={cfg.options.size_mb}: must be > 0")
        return problems

    def message(self) -> tuple[int, torch.dtype]:
        return max(1, int(float(self.options.size_mb) * 1e6) // 4) * 4, torch.float32

    def sweep_sizes(self) -> list[int]:
        return []
