"""What the FP8 recipes share: whether this machine runs FP8 GEMMs, and which Linear layers to swap.

``fp8_gemm_support`` reads the GPUs' compute capability through NVML, so config validation in the
parent process (which never initialises CUDA) and the worker give the same answer.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import torch
import torch.nn as nn

E4M3_MAX = 448.0  # largest finite float8_e4m3fn
MIN_CAPABILITY = (8, 9)  # Ada; Hopper is 9.0, Blackwell 10.0


def fp8_gemm_support(device: str) -> tuple[bool, str]:
    """(True, "") when ``torch._scaled_mm`` can run e4m3 GEMMs on this machine's GPUs, else
    (False, the reason)."""
    if device != "cuda":
        return False, f"no CUDA GPU (device {device}): FP8 GEMMs need compute capability 8.9 or newer"
    if not (hasattr(torch, "float8_e4m3fn") and hasattr(torch, "_scaled_mm")):
        return False, f"torch {torch.__version__} has no float8_e4m3fn / torch._scaled_mm"
    from b200lab.measure.gpus import nvml_gpus

    gpus = nvml_gpus()
    if not gpus or any(g.get("capability") is None for g in gpus):
        return False, "NVML did not report the GPUs' compute capability"
    low = min(gpus, key=lambda g: tuple(g["capability"]))
    if tuple(low["capability"]) < MIN_CAPABILITY:
        major, minor = low["capability"]
        return False, f"{low['name']} has compute capability {major}.{minor}: FP8 tensor cores need 8.9 (Ada) or newer"
    return True, ""


def linear_layers(model: nn.Module, skip) -> tuple[list[tuple[str, nn.Linear]], dict[str, str]]:
    """([(name, layer)] of the plain ``nn.Linear`` layers to convert, {name: why not} of the others).

    ``skip`` holds fnmatch patterns of module names (``head``, ``blocks.0.*``). A layer whose
    weight another module shares (a head tied to the embedding) stays as it is: converting it
    would keep both copies and untie them."""
    owners: dict[int, list[str]] = {}
    for mod_name, mod in model.named_modules():
        for p_name, p in mod.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append(f"{mod_name}.{p_name}" if mod_name else p_name)
    chosen, skipped = [], {}
    for name, mod in model.named_modules():
        if type(mod) is not nn.Linear:
            continue
        pattern = next((p for p in skip if fnmatchcase(name, p)), None)
        shared = [o for o in owners[id(mod.weight)] if o != f"{name}.weight"]
        if pattern is not None:
            skipped[name] = f"precision.skip matches {pattern!r}"
        elif shared:
            skipped[name] = f"its weight is tied to {shared[0]}"
        else:
            chosen.append((name, mod))
    return chosen, skipped


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)
