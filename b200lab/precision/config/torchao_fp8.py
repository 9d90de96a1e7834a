"""``precision=fp8_torchao``: FP8 training through torchao's float8 (b200lab/precision/torchao_fp8.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from b200lab.core.component import CheckContext
from b200lab.precision.availability import fp8_gemm_support, torchao_problem
from b200lab.precision.config.autocast import AutocastConfig

RECIPES = ("tensorwise", "rowwise")
PARAM_DTYPES = ("auto", "bfloat16", "float32")


@dataclass
class TorchaoFP8Config(AutocastConfig):
    compute_dtype: str = "bfloat16"  # activations between the FP8 GEMMs; torchao's float8 takes bfloat16
    recipe: str = "tensorwise"  # tensorwise | rowwise (torchao's Float8LinearRecipeName)
    skip: list[str] = field(default_factory=list)  # module paths or names (e.g. head) kept in bf16

    target = "b200lab.precision.torchao_fp8.TorchaoFP8Precision"
    fp8_gemms = True
    replaces_linears = "torchao Float8Linear"

    @classmethod
    def available(cls, device: str) -> tuple[bool, str]:
        """Whether torchao's FP8 GEMMs can run here, and why not."""
        why = torchao_problem()
        return (False, why) if why else fp8_gemm_support(device)

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = []
        if cfg.recipe not in RECIPES:
            problems.append(
                f"precision.recipe={cfg.recipe!r}: choose one of {', '.join(RECIPES)} (torchao's float8 recipes)"
            )
        elif cfg.recipe == "rowwise" and not ctx.training:
            problems.append(
                f"precision.recipe=rowwise with workload={ctx.cfg.workload.name}: torchao's rowwise float8 fails under "
                "torch.inference_mode ('aten.reshape.default with axiswise scaling is not supported yet', torchao "
                "0.18); use precision.recipe=tensorwise, or precision=fp8_weight_only for inference"
            )
        if cfg.compute_dtype != "bfloat16":
            problems.append(
                f"precision.compute_dtype={cfg.compute_dtype!r}: torchao's float8 runs bfloat16 between its FP8 GEMMs"
            )
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
