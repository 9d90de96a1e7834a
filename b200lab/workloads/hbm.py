"""Device-memory bandwidth: one step copies a buffer of ``size_mb`` MB into another.

Bytes are counted as read + written (2 x size): ``hbm_gbps`` = 2 x size / median step time.
The buffers hold random data and are several times the L2 cache, so the copy streams from HBM.
``size_mb`` unset: 4096 MB on a GPU, 256 MB on a CPU (two buffers of that size are allocated).
"""

from __future__ import annotations

import torch

from b200lab.measure.copy_bandwidth import AUTO_SIZE_MB
from b200lab.workloads.base import Workload
from b200lab.workloads.config.hbm import HbmConfig


class HbmCopy(Workload):
    Config = HbmConfig
    metric_rules = {"hbm_gbps": "mean"}

    def setup(self) -> None:
        size_mb = self.options.size_mb or AUTO_SIZE_MB[self.ctx.device.type]
        n = int(size_mb * 1e6) // 4
        g = self.ctx.generator()
        self.src = torch.rand(n, device=self.ctx.device, generator=g)
        self.dst = torch.empty_like(self.src)
        self.bytes_per_step = 2 * self.src.numel() * self.src.element_size()
        self.effective = {
            "size_mb": self.src.numel() * 4 / 1e6,
            "bytes_per_step": self.bytes_per_step,
            "counted": "read + write",
        }

    def step(self) -> None:
        self.dst.copy_(self.src)

    def metrics(self, stats: dict) -> dict:
        return {"hbm_gbps": self.bytes_per_step / (stats["step_ms_p50"] / 1e3) / 1e9} if stats.get("n_steps") else {}
