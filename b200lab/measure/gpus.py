"""GPU inventory through NVML: safe in the parent process, which must never initialise CUDA."""

from __future__ import annotations


def nvml_gpus() -> list[dict]:
    """Name, memory, driver and compute capability (major, minor) of each visible GPU; [] when NVML
    is missing or sees none."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver / library: a CPU machine
        return []
    try:
        import os

        driver = pynvml.nvmlSystemGetDriverVersion()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            wanted = [v for v in visible.split(",") if v.strip()]
            handles = [h for i, h in enumerate(handles) if str(i) in wanted]
        return [
            {
                "name": pynvml.nvmlDeviceGetName(h),
                "memory_gb": round(pynvml.nvmlDeviceGetMemoryInfo(h).total / 1e9, 1),
                "driver": driver,
                "capability": tuple(pynvml.nvmlDeviceGetCudaComputeCapability(h)),
            }
            for h in handles
        ]
    finally:
        pynvml.nvmlShutdown()


def nvml_gpu_count() -> int:
    return len(nvml_gpus())
