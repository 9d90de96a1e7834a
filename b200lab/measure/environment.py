"""What ran: hardware, driver and library versions, git sha. The parent part never touches CUDA."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE = ("b200lab", "conf", "experiments", "pyproject.toml")  # what decides what a run does
STAGED_SHA = Path(".gpu") / "base" / "GIT_SHA"  # "SHA TREE_HASH", written by python -m b200lab.tools.provenance


def _source_files(root: Path) -> list[tuple[str, Path]]:
    """(relative path, path) of b200lab/**/*.py, conf/**, experiments/** (links followed, as a
    copy would hold them) and pyproject.toml."""
    files = []
    for top in SOURCE:
        base = root / top
        if base.is_file():
            files.append((top, base))
            continue
        for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
            dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
            for name in filenames:
                if top == "b200lab" and not name.endswith(
                    (".py", ".yaml")
                ):  # .yaml: the conf an installed b200lab ships
                    continue
                path = Path(dirpath) / name
                files.append((path.relative_to(root).as_posix(), path))
    return sorted(files)


def tree_hash(root: Path = REPO_ROOT) -> str:
    """A short hash of the source tree's paths and contents: equal trees, equal hashes."""
    digest = hashlib.sha256()
    for rel, path in _source_files(root):
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_sha(root: Path = REPO_ROOT) -> str:
    """What source ran (TREE: :func:`tree_hash` of what is there).

    - a staged ``SHA TREE`` pair ($B200LAB_GIT_SHA, else .gpu/base/GIT_SHA) whose TREE matches:
      ``SHA``. It wins over .git, which a copied tree may carry stale (the device copies hold the
      session's first HEAD), because it names exactly this source;
    - a checkout: ``HEAD``, or ``HEAD+dirty.TREE`` when the source differs from it;
    - a copy without .git: the staged sha with ``+dirty.TREE`` (its tree differs) or ``+tree.TREE``
      (no tree hash was staged); ``unknown+tree.TREE`` when nothing was staged.
    """
    staged = os.environ.get("B200LAB_GIT_SHA") or ""
    if not staged and (root / STAGED_SHA).is_file():
        staged = (root / STAGED_SHA).read_text()
    parts = staged.split()
    local = tree_hash(root)
    if len(parts) > 1 and parts[1] == local:
        return parts[0]
    # only b200lab's own checkout: an installed b200lab inside someone else's repository is not it
    head = _git(root, "rev-parse", "HEAD") if (root / ".git").exists() else None
    if head:
        changes = _git(root, "status", "--porcelain", "--", *SOURCE)
        return head if changes == "" else f"{head}+dirty.{local}"
    if not parts:
        return f"unknown+tree.{local}"
    return f"{parts[0]}+{'dirty' if len(parts) > 1 else 'tree'}.{local}"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def host_env() -> dict:
    """The host as the runner's parent sees it (the ranks add the device's side); torch is named,
    not imported, so a refused or recorded run never pays for loading it here."""
    from b200lab.measure.torch_build import torch_version

    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch_version(),
        "b200lab": _version("b200lab"),
        "mlflow": _version("mlflow"),
        "hydra": _version("hydra-core"),
        "git_sha": git_sha(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),  # a host-bound workload (serve, small decode steps) runs at the host's pace
    }


def cpu_model() -> str | None:
    """The processor's name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


TUNING_PREFIXES = (
    "NCCL_",
    "TORCH_NCCL_",
    "CUDA_",
    "PYTORCH_",
    "TORCHINDUCTOR_",
    "TORCH_COMPILE",
    "CUBLAS",
    "CUDNN_",
    "NVTE_",
    "OMP_",
    "MKL_",
)


def tuning_env_vars(environ=None) -> dict:
    """The rank's environment variables that can change what it measures (NCCL's protocol and
    communicator modes, the allocator, inductor, thread counts, visible devices), sorted."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in sorted(environ) if k.startswith(TUNING_PREFIXES)}


def device_env(device) -> dict:
    """Collected inside a worker rank, where CUDA may be initialised."""
    import torch

    env = {
        "device": device.type,
        "cuda": torch.version.cuda,
        "transformer_engine": _version("transformer_engine") or _version("transformer-engine"),
        "triton": _version("triton"),
        "flash_attn_4": _version("flash-attn-4") or _version("flash_attn_4"),
        "env_vars": tuning_env_vars(),
    }
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
            gpu_uuid=str(getattr(props, "uuid", "")) or None,  # which physical card: tells two lent machines apart
        )
    else:
        env.update(
            gpu=None, gpu_count=0, cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads()
        )
    return env


def reference_provenance(argv: list[str], device) -> dict:
    """What a reference script outside the lab (the plain TE model, timm's ViT) records beside its
    numbers, so it is a record like a lab run: an id to cite, the command, the source and the
    same host and device fields a lab run has."""
    import shlex
    import uuid

    return {
        "run_id": uuid.uuid4().hex,
        "command": shlex.join(["python3", *argv]),
        "env": {**host_env(), **device_env(device)},
    }
