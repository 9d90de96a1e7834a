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

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass, field
from typing import Optional

import torch.nn as nn

from b200lab.components import CheckContext
from b200lab.precision.autocast import AutocastConfig, AutocastPrecision
from b200lab.precision.fp8_layers import convertible_linears, fp8_gemm_support, gemm_aligned

RECIPES = ("tensorwise", "rowwise")
PARAM_DTYPES = ("auto", "bfloat16", "float32")
MIN_TORCHAO = (0, 10)


@dataclass
class TorchaoFP8Config(AutocastConfig):
    compute_dtype: str = "bfloat16"  # activations between the FP8 GEMMs; torchao's float8 takes bfloat16
    recipe: str = "tensorwise"  # tensorwise | rowwise (torchao's Float8LinearRecipeName)
    skip: list[str] = field(default_factory=list)  # module paths or names (e.g. head) kept in bf16


def torchao_version() -> Optional[str]:
    """The installed torchao's version (found without importing it), or None."""
    if importlib.util.find_spec("torchao") is None:
        return None
    try:
        return importlib.metadata.version("torchao")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def torchao_problem() -> Optional[str]:
    """Why torchao's float8 cannot be used here, or None."""
    version = torchao_version()
    if version is None:
        return "torchao is not installed (pip install torchao)"
    found = re.match(r"(\d+)\.(\d+)", version)
    if found and (int(found[1]), int(found[2])) < MIN_TORCHAO:
        return f"torchao {version} is older than 0.10, whose Float8LinearConfig.from_recipe_name this recipe uses (pip install -U torchao)"
    return None


class TorchaoFP8Precision(AutocastPrecision):
    Config = TorchaoFP8Config

    @classmethod
    def available(cls, device: str) -> tuple[bool, str]:
        """Whether torchao's FP8 GEMMs can run here, and why not."""
        why = torchao_problem()
        return (False, why) if why else fp8_gemm_support(device)

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = []
        if cfg.recipe not in RECIPES:
            problems.append(f"precision.recipe={cfg.recipe!r}: choose one of {', '.join(RECIPES)} (torchao's float8 recipes)")
        elif cfg.recipe == "rowwise" and not ctx.training:
            problems.append(f"precision.recipe=rowwise with workload={ctx.cfg.workload.name}: torchao's rowwise float8 fails under "
                            "torch.inference_mode ('aten.reshape.default with axiswise scaling is not supported yet', torchao "
                            "0.18); use precision.recipe=tensorwise, or precision=fp8_weight_only for inference")
        if cfg.compute_dtype != "bfloat16":
            problems.append(f"precision.compute_dtype={cfg.compute_dtype!r}: torchao's float8 runs bfloat16 between its FP8 GEMMs")
        elif cfg.param_dtype not in PARAM_DTYPES:
            problems.append(f"precision.param_dtype={cfg.param_dtype!r}: choose one of {', '.join(PARAM_DTYPES)}")
        else:
            problems += super().validate(cfg, ctx)
        why = torchao_problem()
        if why:
            problems.append(f"precision={cfg.name}: {why}")
        ok, why = fp8_gemm_support(ctx.device)
        if not ok:
            problems.append(f"precision={cfg.name}: {why}")
        return problems

    def __init__(self, cfg, device: str, training: bool):
        super().__init__(cfg, device, training)
        self.peak_key, self.extra_peak_keys = "fp8", ("bf16",)
        self.effective.update(library=f"torchao {torchao_version()}", recipe=cfg.recipe, compute_dtype="fp8",
                              activation_dtype="bfloat16")

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
        convert_to_float8_training(model, module_filter_fn=lambda module, fqn: fqn in paths,
                                   config=Float8LinearConfig.from_recipe_name(self.cfg.recipe))
        self.effective.update(fp8_modules=len(paths), fp8_module_paths=sorted(paths), high_precision=kept)
        return model
