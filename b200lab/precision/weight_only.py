"""``precision=fp8_weight_only``: e4m3 weights with one float32 scale per output channel, for inference.

``convert`` swaps every plain ``nn.Linear`` (except ``precision.skip`` and a head tied to the
embedding) for an :class:`FP8WeightLinear`. Where the GPU has FP8 tensor cores (compute
capability 8.9+), each call quantises its bf16 activations on the device (a scale from each
token's amax, or the call's, no host sync) and runs one e4m3 x e4m3 GEMM through
``torch._scaled_mm`` with rowwise scales and a bf16 result. Elsewhere (a CPU, an older GPU,
``precision.gemm=dequantised``, a layer whose dimensions are not multiples of 16) the weight is
de-quantised to the compute dtype before an ordinary matmul, and ``effective.gemm`` says
``dequantised (reason)``: the memory is saved, the FP8 GEMM is not run, and the run never claims it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from b200lab.measure.peaks import DTYPE_KEYS
from b200lab.precision.availability import fp8_gemm_support
from b200lab.precision.base import PrecisionRecipe, unwrap
from b200lab.precision.config.weight_only import FP8WeightOnlyConfig, compute_dtype
from b200lab.precision.fp8_layers import (
    convertible_linears,
    dequantize_rows,
    gemm_aligned,
    quantize_rows,
    scaled_linear,
    set_module,
)


class FP8WeightLinear(nn.Module):
    """A linear layer whose weight is stored as e4m3 with a float32 scale per output channel."""

    def __init__(
        self,
        weight_fp8: torch.Tensor,
        weight_scale: torch.Tensor,
        bias,
        fp8_gemm: bool,
        per_row: bool = True,
        fast_accum: bool = True,
    ):
        super().__init__()
        self.out_features, self.in_features = weight_fp8.shape
        self.register_buffer("weight_fp8", weight_fp8)
        self.register_buffer("weight_scale", weight_scale)
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        self.fp8_gemm, self.per_row, self.fast_accum = fp8_gemm, per_row, fast_accum

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> FP8WeightLinear:
        q, scale = quantize_rows(linear.weight.detach())
        return cls(q, scale, linear.bias, **kwargs)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        return dequantize_rows(self.weight_fp8, self.weight_scale, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp8_gemm:
            return scaled_linear(x, self.weight_fp8, self.weight_scale, self.bias, self.per_row, self.fast_accum)
        return F.linear(x, self.dequantized(x.dtype), self.bias)

    def extra_repr(self) -> str:
        gemm = "fp8 _scaled_mm" if self.fp8_gemm else "dequantised"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"gemm={gemm}"
        )


class FP8WeightOnlyPrecision(PrecisionRecipe):
    Config = FP8WeightOnlyConfig

    def __init__(self, cfg, device: str, training: bool):
        super().__init__(cfg, device, training)
        compute, reasons = compute_dtype(cfg, device)
        self.compute_dtype = self.param_dtype = getattr(torch, compute)
        self.compute_name = compute
        if cfg.gemm == "dequantised":
            fp8, why = False, "precision.gemm=dequantised"
        else:
            fp8, why = fp8_gemm_support(device)
            if fp8 and compute != "bfloat16":
                fp8, why = False, f"compute dtype {compute}: the FP8 GEMM writes bfloat16"
        self.fp8_gemm = fp8
        self.effective = {
            "name": cfg.name,
            "param_dtype": "float8_e4m3fn, a float32 scale per output channel",
            "activation_dtype": compute,
            "fast_accum": cfg.fast_accum if fp8 else None,
            "activation_scaling": f"{cfg.activation_scaling}wise amax per call" if fp8 else None,
        }
        self.reasons = reasons
        self._record_gemm(fp8, why)

    def _record_gemm(self, fp8: bool, why: str) -> None:
        self.peak_key = "fp8" if fp8 else DTYPE_KEYS[self.compute_name]
        self.extra_peak_keys = ("bf16",) if fp8 else ()
        self.effective.update(
            compute_dtype="fp8" if fp8 else self.compute_name,
            gemm="fp8 _scaled_mm" if fp8 else f"dequantised ({why})",
            reason="; ".join(
                self.reasons
                + ([] if fp8 else [f"weights de-quantised to {self.compute_name} before each matmul: {why}"])
            )
            or None,
        )

    def convert(self, model: nn.Module) -> nn.Module:
        model = model.to(self.param_dtype)
        chosen, kept = convertible_linears(model, self.cfg.skip)
        before = after = 0
        fallback: dict[str, str] = {}
        for path, linear in chosen:
            fp8 = self.fp8_gemm and gemm_aligned(linear)
            if self.fp8_gemm and not fp8:
                fallback[path] = (
                    f"{linear.in_features}x{linear.out_features} is not a multiple of 16 (torch._scaled_mm alignment)"
                )
            layer = FP8WeightLinear.from_linear(
                linear, fp8_gemm=fp8, per_row=self.cfg.activation_scaling == "row", fast_accum=bool(self.cfg.fast_accum)
            )
            set_module(model, path, layer)
            before += linear.weight.numel() * linear.weight.element_size()
            after += layer.weight_fp8.numel() * layer.weight_fp8.element_size() + layer.weight_scale.numel() * 4
        if self.fp8_gemm and len(fallback) == len(chosen):
            self._record_gemm(False, "no converted layer has dimensions that are multiples of 16")
        self.effective.update(
            fp8_modules=len(chosen),
            fp8_gemm_modules=len(chosen) - len(fallback) if self.fp8_gemm else 0,
            dequantised_modules=fallback,
            high_precision=kept,
            weight_bytes_before=before,
            weight_bytes_fp8=after,
            weight_bytes_saved=before - after,
        )
        return model

    def plain_state_dict(self, model: nn.Module) -> dict:
        """The model's own names: each FP8 layer's ``weight`` de-quantised to the parameter dtype."""
        model = unwrap(model)
        state = model.state_dict()
        for path, module in model.named_modules():
            if isinstance(module, FP8WeightLinear):
                prefix = f"{path}." if path else ""
                del state[prefix + "weight_fp8"], state[prefix + "weight_scale"]
                state[prefix + "weight"] = module.dequantized(self.param_dtype)
        return state
