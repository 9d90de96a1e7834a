"""What this machine has, asked without initialising CUDA or importing torch: the device a job
runs on, the ranks it can hold, the profilers on PATH."""

from __future__ import annotations

import os
import shutil

from b200lab.measure.torch_build import torch_cuda_version


class ConfigError(ValueError):
    """A configuration that composes but cannot run; the message names the keys."""


class ProfilerMissing(RuntimeError):
    pass


def available_ranks(device: str) -> int:
    from b200lab.measure.gpus import nvml_gpu_count

    return nvml_gpu_count() if device == "cuda" else (os.cpu_count() or 1)


def resolve_device(requested: str) -> str:
    """cuda when the machine has a usable NVIDIA GPU, else cpu. Never initialises CUDA."""
    from b200lab.measure.gpus import nvml_gpu_count

    if requested not in ("auto", "cuda", "cpu"):
        raise ConfigError(f"run.device={requested!r}: choose auto, cuda or cpu")
    if requested == "cpu":
        return "cpu"
    has_gpu = torch_cuda_version() is not None and nvml_gpu_count() > 0
    if requested == "cuda" and not has_gpu:
        raise ConfigError("run.device=cuda: no CUDA GPU is visible (NVML sees none, or torch is a CPU build)")
    return "cuda" if has_gpu else "cpu"


def require_profiler(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ProfilerMissing(
            f"profile={tool} needs {'Nsight Systems' if tool == 'nsys' else 'Nsight Compute'}: "
            f"`{tool}` is not on PATH (install it or add its bin/ folder to PATH)"
        )
    return path
