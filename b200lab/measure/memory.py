"""Peak memory: the CUDA caching allocator's peaks on GPU, the process's peak RSS everywhere."""

from __future__ import annotations

import resource
import sys

import torch

GB = 1e9


def reset_peaks(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_rss_gb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss * (1 if sys.platform == "darwin" else 1024) / GB  # bytes on macOS, KiB on Linux


def memory_metrics(device: torch.device) -> dict:
    out = {"peak_rss_gb": peak_rss_gb()}
    if device.type == "cuda":
        stats = torch.cuda.memory_stats(device)
        out.update(
            peak_mem_allocated_gb=stats.get("allocated_bytes.all.peak", 0) / GB,
            peak_mem_reserved_gb=stats.get("reserved_bytes.all.peak", 0) / GB,
            alloc_retries=stats.get("num_alloc_retries", 0),
        )
        used = nvml_used_gb(device)
        if used is not None:
            out["nvml_used_gb"] = used  # the whole device: CUDA context, NCCL buffers, other processes
    return out


def nvml_used_gb(device: torch.device):
    from b200lab.measure.energy import nvml_handle

    handle, _ = nvml_handle(device)
    if handle is None:
        return None
    import pynvml

    return pynvml.nvmlDeviceGetMemoryInfo(handle).used / GB
