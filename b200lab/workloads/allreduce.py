"""All-reduce bandwidth across the job's ranks (NCCL on GPU, gloo on CPU).

One step all-reduces (sum) a float32 buffer of ``size_mb`` MB. Following nccl-tests:
algbw = size / time, busbw = algbw x 2 (n - 1) / n, the per-link traffic a ring moves, so
busbw is comparable across rank counts. The result is checked against the expected sum once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from b200lab.components import CheckContext
from b200lab.workloads.base import Workload, WorkloadConfig


@dataclass
class AllReduceOptions:
    size_mb: float = 256.0  # float32 buffer, MB (1e6 bytes)


@dataclass
class AllReduceConfig(WorkloadConfig):
    options: AllReduceOptions = field(default_factory=AllReduceOptions)


class AllReduce(Workload):
    Config = AllReduceConfig
    metric_rules = {"allreduce_busbw_gbps": "min", "allreduce_algbw_gbps": "min"}

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx)
        if ctx.cfg.parallelism.nproc < 2:
            problems.append(f"workload=allreduce needs parallelism.nproc >= 2 (it is {ctx.cfg.parallelism.nproc})")
        if cfg.options.size_mb <= 0:
            problems.append(f"workload.options.size_mb={cfg.options.size_mb}: must be > 0")
        return problems

    def setup(self) -> None:
        if self.ctx.world_size < 2:
            raise RuntimeError("workload=allreduce needs parallelism.nproc >= 2")
        size_mb = float(self.options.size_mb)
        n = max(1, int(size_mb * 1e6) // 4)
        g = self.ctx.generator()
        self.buf = torch.rand(n, device=self.ctx.device, generator=g)
        self._check()
        self.size_bytes = n * 4
        self.effective = {"size_mb": self.size_bytes / 1e6, "backend": dist.get_backend(), "ranks": self.ctx.world_size}

    def _check(self) -> None:
        """Every rank contributes rank+1 at a known element: the sum must be n(n+1)/2."""
        probe = torch.zeros(4, device=self.ctx.device)
        probe[1] = self.ctx.rank + 1
        dist.all_reduce(probe)
        w = self.ctx.world_size
        if probe[1].item() != w * (w + 1) / 2:
            raise RuntimeError(f"all_reduce returned {probe[1].item()}, expected {w * (w + 1) / 2}")

    def step(self) -> None:
        dist.all_reduce(self.buf)

    def metrics(self, stats: dict) -> dict:
        if not stats.get("n_steps"):
            return {}
        w = self.ctx.world_size
        algbw = self.size_bytes / (stats["step_ms_p50"] / 1e3) / 1e9
        return {"allreduce_algbw_gbps": algbw, "allreduce_busbw_gbps": algbw * 2 * (w - 1) / w}
