"""``precision=fp8_torchao``: FP8 training (and forward) through torchao's float8, beside Transformer Engine.

``convert`` casts the model to its parameter dtype and hands the plain ``nn.Linear`` layers (less
``precision.skip``, a head tied to the embedding, and layers whose dimensions are not multiples
of 16) to ``torchao.float8.convert_to_float8_training`` with
``Float8LinearConfig.from_recipe_name(precision.recipe)``: ``tensorwise`` (one dynamic scale per
tensor, cuBLAS) or ``rowwise`` (a scale per row, CUTLASS; torchao rounds the scales to powers of
two). The three GEMMs of each layer (output, input gradient, weight gradient) run in FP8;
everything between them stays bf16. Weights follow the lab's convention (``precision=bf16``):
bf16 parameters, float32 master weights for the optimizer when training
(b200lab/precision/master.py). torchao is optional (``pip install torchao``, 0.10 or newer) and
generates its casts with torch.compile: eager runs are correct but not fast.
"""

from __future__ import annotations

import torch.nn as nn

from b200lab.precision.autocast import AutocastPrecision
from b200lab.precision.availability import torchao_version
from b200lab.precision.config.torchao_fp8 import TorchaoFP8Config
from b200lab.precision.fp8_layers import convertible_linears, gemm_aligned


class TorchaoFP8Precision(AutocastPrecision):
    Config = TorchaoFP8Config

    def __init__(self, cfg, device: str, training: bool):
        super().__init__(cfg, device, training)
        self.peak_key, self.extra_peak_keys = "fp8", ("bf16",)
        self.effective.update(
            library=f"torchao {torchao_version()}", recipe=cfg.recipe, compute_dtype="fp8", activation_dtype="bfloat16"
        )

    def convert(self, model: nn.Module) -> nn.Module:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training

        model = super().convert(model)
        chosen, kept = convertible_linears(model, self.cfg.skip)
        paths = set()
        for path, linear in chosen:
            if gemm_aligned(linear):
                paths.add(path)
            else:
                kept[path] = f"{linear.in_features}x{linear.out_features} is not a multiple of 16 (FP8 GEMM alignment)"
        convert_to_float8_training(
            model,
            module_filter_fn=lambda module, fqn: fqn in paths,
            config=Float8LinearConfig.from_recipe_name(self.cfg.recipe),
        )
        self.effective.update(fp8_modules=len(paths), fp8_module_paths=sorted(paths), high_precision=kept)
        return model
