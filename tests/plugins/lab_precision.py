"""A precision recipe from outside b200lab: weights cast to one dtype except modules kept in float32."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from b200lab.precision.base import PrecisionRecipe
from b200lab.precision.config.base import PrecisionConfig

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class KeepFp32Config(PrecisionConfig):
    weight_dtype: str = "bfloat16"
    keep_fp32: list[str] = field(default_factory=lambda: ["norm"])  # module-name substrings left in float32

    @classmethod
    def validate(cls, cfg, ctx):
        return (
            []
            if cfg.weight_dtype in DTYPES
            else [f"precision.weight_dtype={cfg.weight_dtype!r}: choose {', '.join(DTYPES)}"]
        )


class KeepFp32(PrecisionRecipe):
    Config = KeepFp32Config

    def __init__(self, cfg, device, training):
        super().__init__(cfg, device, training)
        self.compute_dtype = DTYPES[cfg.weight_dtype]
        self.peak_key = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[cfg.weight_dtype]

    def convert(self, model):
        kept = 0
        for name, module in model.named_modules():
            own = list(module.parameters(recurse=False))
            if any(k in name for k in self.cfg.keep_fp32):
                kept += sum(p.numel() for p in own)
            else:
                for p in own:
                    p.data = p.data.to(self.compute_dtype)
        self.effective.update(weight_dtype=self.cfg.weight_dtype, fp32_params=kept)
        return model

    def autocast(self):
        return torch.autocast(device_type=self.device, dtype=self.compute_dtype)
