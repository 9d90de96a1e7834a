"""Which Transformer Engine recipe can run where, decided without initialising CUDA (the parent
process validates).

The rules restate Transformer Engine 2.x's own checks (``transformer_engine.pytorch.quantization.
_compute_*_support``) on the compute capability NVML reports; the worker asks TE itself again
before it runs (:func:`te_says`), so a rule that drifts from TE's shows up as a clear error
rather than a silent fallback.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from typing import Optional

TE_RECIPES = {  # precision.recipe -> Transformer Engine recipe class
    "delayed": "DelayedScaling",
    "current": "Float8CurrentScaling",
    "block": "Float8BlockScaling",
    "mxfp8": "MXFP8BlockScaling",
    "nvfp4": "NVFP4BlockScaling",
}
TE_AVAILABILITY = {  # precision.recipe -> the transformer_engine.pytorch function that answers (ok, reason)
    "delayed": "is_fp8_available",
    "current": "is_fp8_available",
    "block": "is_fp8_block_scaling_available",
    "mxfp8": "is_mxfp8_available",
    "nvfp4": "is_nvfp4_available",
}


def te_version() -> Optional[str]:
    """The installed Transformer Engine version (from metadata: nothing is imported), or None."""
    if importlib.util.find_spec("transformer_engine") is None:
        return None
    for dist in ("transformer_engine", "transformer-engine", "transformer_engine_torch"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def _cuda_version() -> Optional[float]:
    import torch

    try:
        return float(torch.version.cuda) if torch.version.cuda else None
    except ValueError:
        return None


def recipe_problem(recipe: str, capability: Optional[tuple[int, int]], gpu: str, cuda: Optional[float]) -> Optional[str]:
    """Why ``recipe`` cannot run on a card of this compute capability, or None when it can."""
    if capability is None:
        return "NVML did not report the GPU's compute capability"
    capability = tuple(capability)
    cc = f"{capability[0]}.{capability[1]}"
    if recipe in ("delayed", "current"):
        if capability < (8, 9):
            return f"FP8 GEMMs need compute capability >= 8.9 (Ada, Hopper, Blackwell); {gpu} is {cc}"
        if capability < (9, 0) and (cuda or 0) < 12.1:
            return f"FP8 on Ada ({gpu}, {cc}) needs CUDA >= 12.1; torch was built with CUDA {cuda}"
        return None
    if recipe == "block":
        if capability < (9, 0):
            return f"FP8 block scaling needs compute capability >= 9.0 (Hopper or newer); {gpu} is {cc}"
        if (cuda or 0) < 12.9:
            return f"FP8 block scaling needs CUDA >= 12.9; torch was built with CUDA {cuda} ({gpu}, {cc})"
        return None
    if recipe == "mxfp8":
        if capability >= (12, 0):
            return f"MXFP8 is not supported by Transformer Engine on compute capability 12.x yet; {gpu} is {cc}"
        if capability < (10, 0):
            return f"MXFP8 needs compute capability 10.x (Blackwell: B200/B300/GB200); {gpu} is {cc}"
        return None
    if recipe == "nvfp4":
        if capability < (10, 0):
            return f"NVFP4 needs compute capability >= 10.0 (Blackwell: B200/B300/GB200); {gpu} is {cc}"
        return None
    return f"unknown recipe {recipe!r}"


TE_ROW_ALIGN = {"mxfp8": 32}  # rows a Transformer Engine FP8 GEMM needs a multiple of (the others: 8)


def te_decode_rows_problem(job) -> Optional[str]:
    """Why Transformer Engine's FP8 GEMMs (``job.precision.recipe``) cannot run the decode steps of
    the job's workload, or None: they need the product of an input's leading dimensions to be a
    multiple of 8 (32 for mxfp8), and a decode step has one row per sequence (generate:
    seq.batch; serve: as many as requests running, and a prefill as many as its prompt's tokens)."""
    workload = str(job.workload.get("name", ""))
    align = TE_ROW_ALIGN.get(str(job.precision.get("recipe", "")), 8)
    if workload == "generate":
        batch = int(job.seq.batch)
        return None if batch % align == 0 else f"Transformer Engine's FP8 GEMMs need a multiple of {align} rows, and a decode step has seq.batch={batch}"
    if workload == "serve":
        return (f"Transformer Engine's FP8 GEMMs need a multiple of {align} rows, and a decode step has as many rows as requests "
                "running and a prefill as many as its prompt's tokens")
    return None


def te_problem(recipe: str, device: str) -> Optional[str]:
    """Why Transformer Engine cannot run ``recipe`` on this machine (parent side), or None."""
    if device != "cuda":
        return f"Transformer Engine's FP8 runs on NVIDIA GPUs with compute capability >= 8.9; this run's device is {device}"
    if te_version() is None:
        return "Transformer Engine is not installed (pip install 'b200lab[fp8]', i.e. transformer-engine[pytorch])"
    from b200lab.measure.gpus import nvml_gpus

    gpus = nvml_gpus()
    if not gpus:
        return "NVML sees no GPU"
    return recipe_problem(recipe, gpus[0].get("capability"), gpus[0]["name"], _cuda_version())


def import_te():
    """``transformer_engine.pytorch``, made to use the cuDNN torch already loaded. TE's core
    library links cuDNN's sub-libraries by name, and the loader may find a system copy older than
    torch's; two cuDNNs in one process fail ("cuDNN version incompatibility", or undefined
    symbols between its sub-libraries). Loading all of torch's first makes the names resolve to
    them."""
    import ctypes
    import glob

    import torch

    torch.backends.cudnn.version()  # loads torch's cuDNN
    loaded = _loaded_library("libcudnn.so")
    if loaded:
        os.environ.setdefault("CUDNN_HOME", os.path.dirname(loaded))
        pending = sorted(glob.glob(os.path.join(os.path.dirname(loaded), "libcudnn*.so*")), key=lambda p: "graph" not in p)
        while pending:  # a library whose dependencies are not loaded yet is retried after the others
            failed = []
            for path in pending:
                try:
                    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                except OSError:
                    failed.append(path)
            if len(failed) == len(pending):
                break
            pending = failed
    import transformer_engine.pytorch as te

    return te


def _loaded_library(name: str) -> Optional[str]:
    """The path of a shared library this process has mapped whose file name starts with ``name``."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                if os.path.basename(path).startswith(name):
                    return path
    except OSError:
        return None
    return None


def te_says(recipe: str) -> tuple[bool, str]:
    """Transformer Engine's own answer for ``recipe`` on the current CUDA device (worker side)."""
    te = import_te()

    ok, reason = getattr(te, TE_AVAILABILITY[recipe])(return_reason=True)
    return bool(ok), reason or ""
