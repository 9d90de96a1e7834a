"""``workload=forward``: inference steps of the configured model (b200lab/workloads/forward.py)."""

from __future__ import annotations

from dataclasses import dataclass

from b200lab.workloads.config.base import WorkloadConfig


@dataclass
class ForwardConfig(WorkloadConfig):
    target = "b200lab.workloads.forward.Forward"
    uses_model = True
