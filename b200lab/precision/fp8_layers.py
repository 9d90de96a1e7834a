"""FP8 linear layers outside Transformer Engine: e4m3 quantisation with per-row scales, the scaled
GEMM (``torch._scaled_mm``) and which layers a recipe swaps. Whether this machine runs the FP8
GEMM is b200lab/precision/availability.py's ``fp8_gemm_support`` (NVML, no CUDA), so config
validation in the parent process and the rank give the same answer.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from b200lab.precision.e4m3 import AMAX_FLOOR, E4M3_MAX
from b200lab.precision.te_convert import _aligned, _shared_parameters

CHUNK_ELEMENTS = 1 << 26  # quantise weights this many elements at a time (the float64 copy: 512 MB)


def convertible_linears(model: nn.Module, skip) -> tuple[list[tuple[str, nn.Linear]], dict[str, str]]:
    """([(path, layer)] of the plain ``nn.Linear`` layers to convert, {path: why not} of the rest).

    ``skip`` names module paths or their last part (``head``), as Transformer Engine's recipe
    reads it. A layer whose weight another module shares (a head tied to the embedding) stays:
    converting it would keep both copies and untie them."""
    tied = _shared_parameters(model)
    chosen, kept = [], {}
    for path, module in model.named_modules():
        if type(module) is not nn.Linear:
            continue
        if path in skip or path.rpartition(".")[2] in skip:
            kept[path] = "skipped by precision.skip"
        elif id(module.weight) in tied:
            kept[path] = "weight tied to another module (the embedding)"
        else:
            chosen.append((path, module))
    return chosen, kept


def gemm_aligned(linear: nn.Module) -> bool:
    """Whether ``torch._scaled_mm`` takes this layer's weight (both dimensions multiples of 16)."""
    return _aligned(linear.in_features, linear.out_features)


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


@torch.no_grad()
def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 weight, float32 scale per row) with ``weight[i] ~ q[i] * scale[i]``: each row's
    largest magnitude maps to 448. The division and rounding run in float64, so the result is
    exactly the e4m3 cast of ``weight / (amax / 448)``. An all-zero row gets scale 1."""
    q = torch.empty(weight.shape, dtype=torch.float8_e4m3fn, device=weight.device)
    scale = torch.empty(weight.shape[0], dtype=torch.float32, device=weight.device)
    rows = max(1, CHUNK_ELEMENTS // max(1, weight.shape[1]))
    for start in range(0, weight.shape[0], rows):
        w = weight[start : start + rows].to(torch.float64)
        amax = w.abs().amax(dim=1)
        s = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
        q[start : start + rows] = (w / s[:, None]).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
        scale[start : start + rows] = s.to(torch.float32)
    return q, scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (q.to(torch.float32) * scale[:, None]).to(dtype)


def scaled_linear(
    x: torch.Tensor,
    weight_fp8: torch.Tensor,
    weight_scale: torch.Tensor,
    bias,
    per_row: bool = True,
    fast_accum: bool = True,
) -> torch.Tensor:
    """``x @ (weight_fp8 * weight_scale)^T + bias`` as one e4m3 GEMM with a bfloat16 result.

    The activations are quantised on the device each call (no host sync): scale = amax / 448 of
    each row (token) with ``per_row``, else of the whole call's activations; ``torch._scaled_mm``
    applies both operands' scales in its epilogue (rowwise scaling: an (M, 1) and a (1, N) scale)."""
    lead, k = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, k)
    amax = x2.abs().amax(dim=-1, keepdim=True) if per_row else x2.abs().amax().expand(x2.shape[0], 1)
    x_scale = (amax.to(torch.float32).clamp(min=AMAX_FLOOR) / E4M3_MAX).contiguous()  # rowwise scales must be dense
    x_fp8 = (x2.to(torch.float32) / x_scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    y = torch._scaled_mm(
        x_fp8,
        weight_fp8.t(),
        scale_a=x_scale,
        scale_b=weight_scale.unsqueeze(0),
        bias=bias,
        out_dtype=torch.bfloat16,
        use_fast_accum=fast_accum,
    )
    return y.reshape(*lead, y.shape[-1])
