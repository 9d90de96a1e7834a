"""fp64 / fp32 / tf32 / bf16 / fp16 through parameter dtypes, master weights and torch.autocast.

b200lab/precision/recipe.py decides which dtype each part uses (see docs/groups.md); this class
applies it: weights created in ``param_dtype``, ``torch.autocast`` when the weights are wider than
the compute dtype, float32 master weights for the optimizer when training 16-bit weights, and a
GradScaler for float16 training.
"""

from __future__ import annotations

import contextlib

import torch

from b200lab.precision.base import PrecisionRecipe
from b200lab.precision.config.autocast import AutocastConfig
from b200lab.precision.recipe import resolve

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PEAK_KEYS = {"float64": "fp64", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


class AutocastPrecision(PrecisionRecipe):
    Config = AutocastConfig

    def __init__(self, cfg, device: str, training: bool):
        super().__init__(cfg, device, training)
        recipe = resolve(cfg, device, training)
        self.tf32 = recipe.tf32
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32
        self.compute_dtype = DTYPES[recipe.compute]
        self.param_dtype = DTYPES[recipe.param]
        self.master_dtype = DTYPES[recipe.master] if recipe.master else None
        self.grad_accum_dtype = DTYPES[recipe.grad_accum]
        self.use_autocast = recipe.autocast
        self.peak_key = "tf32" if self.tf32 else PEAK_KEYS[recipe.compute]
        self.effective = {
            "name": cfg.name,
            "compute_dtype": "tf32" if self.tf32 else recipe.compute,
            "param_dtype": recipe.param,
            "master_dtype": recipe.master,
            "grad_accum_dtype": recipe.grad_accum if training else None,
            "autocast": self.use_autocast,
            "reason": "; ".join(recipe.reasons) or None,
        }

    def convert(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.param_dtype)

    def autocast(self):
        if not self.use_autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=self.compute_dtype)

    def master_weights(self, model: torch.nn.Module, compile: bool = False):
        """A MasterWeights over the model's parameters, or None when the optimizer steps them
        directly. ``compile`` compiles its conversion passes (with the model's torch.compile)."""
        if not self.training or self.master_dtype is None:
            return None
        from b200lab.precision.master import MasterWeights

        return MasterWeights(model.parameters(), self.master_dtype, self.grad_accum_dtype, compile=compile)

    def grad_scaler(self):
        if self.training and self.compute_dtype == torch.float16:
            return torch.amp.GradScaler(self.device)
        return None
