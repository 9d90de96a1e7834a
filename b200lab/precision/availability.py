"""Which FP8 path can run where, decided without importing torch or initialising CUDA (config
validation runs in the parent process): Transformer Engine's recipes, torchao's float8, and the
FP8 GEMM of ``torch._scaled_mm``.

The rules restate Transformer Engine 2.x's own checks (``transformer_engine.pytorch.quantization.
_compute_*_support``) on the compute capability NVML reports; the worker asks TE itself again
before it runs (:func:`te_says`), so a rule that drifts from TE's shows up as a clear error
rather than a silent fallback.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re

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


def te_version() -> str | None:
    """The installed Transformer Engine version (from metadata: nothing is imported), or None."""
    if importlib.util.find_spec("transformer_engine") is None:
        return None
    for dist in ("transformer_engine", "transformer-engine", "transformer_engine_torch"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def _cuda_version() -> float | None:
    from b200lab.measure.torch_build import torch_cuda_version

    try:
        return float(torch_cuda_version() or "")
    except ValueError:
        return None


def recipe_problem(recipe: str, capability: tuple[int, int] | None, gpu: str, cuda: float | None) -> str | None:
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


EXPERT_PATHS = ("auto", "rowwise", "te", "bf16")  # precision.moe_experts under a Transformer Engine recipe


def rowwise_grouped_problem(capability: tuple[int, int] | None, gpu: str = "the GPU") -> str | None:
    """Why PyTorch's rowwise FP8 grouped GEMM (``torch._scaled_grouped_mm``) cannot run on a card
    of this compute capability, or None: its CUTLASS kernel is built for sm90 only (Blackwell's
    grouped FP8 is MXFP8, which the lab does not build for experts yet)."""
    if capability is None:
        return "NVML did not report the GPU's compute capability"
    if tuple(capability)[0] != 9:
        return (
            f"PyTorch's rowwise FP8 grouped GEMM runs on compute capability 9.x (Hopper) only; {gpu} is "
            f"{capability[0]}.{capability[1]}"
        )
    return None


# why precision.moe_experts=auto takes Transformer Engine's GroupedLinear for an eager model on Hopper: the
# rowwise path quantises each call's activations in separate, unfused kernels there. The records
# (docs/measurements/2026-12-07-fp8-moe-rowwise, H100, medians of 3 trials, each beside bf16):
#   compiled, 8-layer training   rowwise 1.078x bf16   te 0.390x
#   eager forward, seq 12k / 16k rowwise 0.804x / 0.833x   te 0.978x / 1.046x
# Eager training was not measured with rowwise (gpu_fp8_moe.sh's train_eager phase); it follows the forward.
EAGER_ROWWISE_LOSES = (
    "the model runs eager, where the rowwise path quantises each call's activations in separate kernels: "
    "recorded 0.80x/0.83x bf16 against te's 0.98x/1.05x (model=moe forward, seq 12k/16k, H100, runs "
    "5a1a82f6/f69b7892 vs db5aab8e/43091950, docs/measurements/2026-12-07-fp8-moe-rowwise; eager training "
    "is not measured and follows the forward); compiled, rowwise is taken (1.08x bf16, te 0.39x)"
)


def expert_path(
    setting: str,
    capability: tuple[int, int] | None,
    gpu: str = "the GPU",
    torch_lacking: str | None = None,
    *,
    compiled: bool,
) -> tuple[str, str | None]:
    """(te | rowwise | bf16, why ``auto`` passed over rowwise or None) for ``precision.moe_experts``;
    ``torch_lacking``: the version of a torch without ``torch._scaled_grouped_mm``; ``compiled``:
    whether the model runs under torch.compile (``auto`` takes rowwise only then)."""
    if setting != "auto":
        return setting, None
    why = f"torch {torch_lacking} has no torch._scaled_grouped_mm" if torch_lacking else None
    why = why or rowwise_grouped_problem(capability, gpu) or (None if compiled else EAGER_ROWWISE_LOSES)
    return ("te", f"rowwise: {why}") if why else ("rowwise", None)


TE_ROW_ALIGN = {"mxfp8": 32}  # rows a Transformer Engine FP8 GEMM needs a multiple of (the others: 8)


def te_decode_rows_problem(recipe: str, rows) -> str | None:
    """Why Transformer Engine's FP8 GEMMs (recipe ``recipe``) cannot run a workload's decode steps,
    or None: they need the product of an input's leading dimensions to be a multiple of 8 (32 for
    mxfp8), and a decode step has one row per sequence. ``rows``: the workload's
    :class:`~b200lab.core.component.DecodeRows` (None: the workload does not decode)."""
    if rows is None:
        return None
    align = TE_ROW_ALIGN.get(str(recipe), 8)
    if rows.count is not None and rows.count % align == 0:
        return None
    return f"Transformer Engine's FP8 GEMMs need a multiple of {align} rows, and a decode step has {rows.described}"


def te_problem(recipe: str, device: str) -> str | None:
    """Why Transformer Engine cannot run ``recipe`` on this machine (parent side), or None."""
    if device != "cuda":
        return (
            "Transformer Engine's FP8 runs on NVIDIA GPUs with compute capability >= 8.9; this run's device is "
            f"{device}"
        )
    if te_version() is None:
        return "Transformer Engine is not installed (pip install 'b200lab[fp8]', i.e. transformer-engine[pytorch])"
    from b200lab.measure.gpus import nvml_gpus

    gpus = nvml_gpus()
    if not gpus:
        return "NVML sees no GPU"
    return recipe_problem(recipe, gpus[0].get("capability"), gpus[0]["name"], _cuda_version())


MIN_CAPABILITY = (8, 9)  # Ada; Hopper is 9.0, Blackwell 10.0


def fp8_gemm_support(device: str) -> tuple[bool, str]:
    """(True, "") when ``torch._scaled_mm`` can run e4m3 GEMMs on this machine's GPUs, else
    (False, the reason)."""
    if device != "cuda":
        return False, f"no CUDA GPU (device {device}): FP8 GEMMs need compute capability 8.9 or newer"
    import torch

    if not (hasattr(torch, "float8_e4m3fn") and hasattr(torch, "_scaled_mm")):
        return False, f"torch {torch.__version__} has no float8_e4m3fn / torch._scaled_mm"
    from b200lab.measure.gpus import nvml_gpus

    gpus = nvml_gpus()
    if not gpus or any(g.get("capability") is None for g in gpus):
        return False, "NVML did not report the GPUs' compute capability"
    low = min(gpus, key=lambda g: tuple(g["capability"]))
    if tuple(low["capability"]) < MIN_CAPABILITY:
        major, minor = low["capability"]
        return False, f"{low['name']} has compute capability {major}.{minor}: FP8 GEMMs need 8.9 (Ada) or newer"
    return True, ""


MIN_TORCHAO = (0, 10)


def torchao_version() -> str | None:
    """The installed torchao's version (found without importing it), or None."""
    if importlib.util.find_spec("torchao") is None:
        return None
    try:
        return importlib.metadata.version("torchao")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def torchao_problem() -> str | None:
    """Why torchao's float8 cannot be used here, or None."""
    version = torchao_version()
    if version is None:
        return "torchao is not installed (pip install torchao)"
    found = re.match(r"(\d+)\.(\d+)", version)
    if found and (int(found[1]), int(found[2])) < MIN_TORCHAO:
        return (
            f"torchao {version} is older than 0.10, whose Float8LinearConfig.from_recipe_name this recipe uses (pip "
            "install -U torchao)"
        )
    return None
