"""All-reduce bandwidth across the job's ranks (NCCL on GPU, gloo on CPU): ``workload=comms``
(b200lab/workloads/comms.py) fixed to one float32 all-reduce (sum) of ``size_mb`` MB (1e6
bytes) and no size sweep. busbw = algbw x 2 (n - 1) / n, as nccl-tests defines it.
"""

from __future__ import annotations

import torch

from b200lab.workloads.comms import Comms
from b200lab.workloads.config.allreduce import AllReduceConfig


class AllReduce(Comms):
    Config = AllReduceConfig
    op = "all_reduce"

    def message(self) -> tuple[int, torch.dtype]:
        return max(1, int(float(self.options.size_mb) * 1e6) // 4) * 4, torch.float32

    def sweep_sizes(self) -> list[int]:
        return []
