"""The card's copy bandwidth: ``dst.copy_(src)`` timed with device events, bytes counted read +
written. ``workload=hbm`` times it as its step; the decode workloads measure it in their own job
as the bound their bytes are held against (b200lab/serving/bandwidth.py)."""

from __future__ import annotations

import torch

from b200lab.measure.step_stats import step_stats
from b200lab.measure.timing import time_steps

AUTO_SIZE_MB = {"cuda": 4096.0, "cpu": 256.0}  # MB (1e6 bytes) per buffer: far past any cache


def copy_gbps(device: torch.device, size_mb: float, steps: int = 20) -> float:
    """GB/s (1e9 bytes) of ``dst.copy_(src)`` counted read + written, median of ``steps``."""
    n = int(size_mb * 1e6) // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    timing = time_steps(lambda: dst.copy_(src), device, warmup=3, steps=steps)
    src = dst = None  # the buffers go before the model is built
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return 2 * n * 4 / (step_stats(timing.step_ms)["step_ms_p50"] / 1e3) / 1e9


def job_copy_bandwidth(device: torch.device, given_gbps: float | None, size_mb: float | None) -> dict | None:
    """The copy bandwidth a decode workload divides by, with where it came from: ``given_gbps``
    as given, else measured here on a GPU (call it before the model is built), else None (a CPU
    has no HBM, and a tiny model sits in its caches)."""
    if given_gbps is not None:
        return {"gbps": float(given_gbps), "source": "given (workload.options.copy_gbps)"}
    if device.type != "cuda":
        return None
    size = float(size_mb or AUTO_SIZE_MB["cuda"])
    return {
        "gbps": copy_gbps(device, size),
        "source": f"measured in this job before the model was built (device copy of {size:g} MB, read + write, "
        "median of 20)",
    }
