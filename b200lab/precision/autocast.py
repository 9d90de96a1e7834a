"""fp32 / tf32 / bf16 / fp16 through weight casting and torch.autocast.

Weights (``param_dtype: auto``): for inference they are cast to the compute dtype, so a bf16
forward reads bf16 weights and no autocast is needed; for training they stay float32 master
weights and matmuls run under autocast in the compute dtype (fp16 adds a GradScaler).
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class AutocastPrecision:
    def __init__(self, cfg, device: str, training: bool):
        self.device = device
        self.training = training
        reasons = []
        requested = cfg.compute_dtype
        compute = requested
        if requested == "auto":
            compute = "bfloat16" if device == "cuda" else "float32"
            reasons.append(f"auto on {device} means {compute}")
        self.tf32 = compute == "tf32"
        if self.tf32:
            compute = "float32"
            if device != "cuda":
                self.tf32 = False
                reasons.append("tf32 is a CUDA matmul mode; on CPU the matmuls ran in plain float32")
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32
        self.compute_dtype = DTYPES[compute]
        param = cfg.param_dtype
        if param == "auto":
            param = compute if compute in ("float32", "float64") else ("float32" if training else compute)
        self.param_dtype = DTYPES[param]
        self.use_autocast = self.compute_dtype != torch.float32 and self.param_dtype != self.compute_dtype
        self.effective = {
            "name": cfg.name,
            "compute_dtype": "tf32" if self.tf32 else compute,
            "param_dtype": param,
            "autocast": self.use_autocast,
            "reason": "; ".join(reasons) or None,
        }

    def convert(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.param_dtype)

    def autocast(self):
        if not self.use_autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=self.compute_dtype)

    def grad_scaler(self):
        if self.training and self.compute_dtype == torch.float16:
            return torch.amp.GradScaler(self.device)
        return None
