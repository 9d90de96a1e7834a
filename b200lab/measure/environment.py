"""What ran: hardware, driver and library versions, git sha. The parent part never touches CUDA."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def git_sha() -> str:
    """HEAD of the checkout b200lab runs from, '+dirty' when tracked files changed; 'unknown' outside
    a checkout. B200LAB_GIT_SHA overrides (a copied tree on a GPU host has no .git)."""
    if os.environ.get("B200LAB_GIT_SHA"):
        return os.environ["B200LAB_GIT_SHA"]
    try:
        sha = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if sha.returncode:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "-uno"], capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def host_env() -> dict:
    import torch

    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "b200lab": _version("b200lab"),
        "mlflow": _version("mlflow"),
        "hydra": _version("hydra-core"),
        "git_sha": git_sha(),
        "cpu_count": os.cpu_count(),
    }


def device_env(device) -> dict:
    """Collected inside a worker rank, where CUDA may be initialised."""
    import torch

    env = {"device": device.type, "cuda": torch.version.cuda, "transformer_engine": _version("transformer_engine") or _version("transformer-engine")}
    if device.type == "cuda":
        from b200lab.measure.gpus import nvml_gpus

        gpus = nvml_gpus()
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gb=round(props.total_memory / 1e9, 1),
            sm_count=props.multi_processor_count,
            capability=f"{props.major}.{props.minor}",
            driver=gpus[0]["driver"] if gpus else None,
            cudnn=torch.backends.cudnn.version(),
            nccl=".".join(map(str, torch.cuda.nccl.version())) if hasattr(torch.cuda, "nccl") else None,
        )
    else:
        env.update(gpu=None, gpu_count=0, cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return env
