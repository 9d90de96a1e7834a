"""``precision=fp8_weight_only``: e4m3 weights with a float32 scale per output channel, for
inference (b200lab/precision/weight_only.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import OmegaConf

from b200lab.core.component import CheckContext
from b200lab.precision.availability import fp8_gemm_support
from b200lab.precision.config.base import PrecisionConfig
from b200lab.precision.recipe import resolve

COMPUTE_DTYPES = ("auto", "bfloat16", "float32")
GEMMS = ("auto", "fp8", "dequantised")
SCALINGS = ("row", "tensor")


def compute_dtype(cfg, device: str) -> tuple[str, list[str]]:
    """The activations' dtype (and a de-quantised GEMM's) on ``device``, with the reasons of ``auto``."""
    dtypes = resolve(OmegaConf.create({"compute_dtype": cfg.compute_dtype, "param_dtype": "auto"}), device, False)
    return dtypes.compute, dtypes.reasons


@dataclass
class FP8WeightOnlyConfig(PrecisionConfig):
    compute_dtype: str = "auto"  # activations (and a de-quantised GEMM): auto = bfloat16 on CUDA, float32 on CPU
    # auto: FP8 _scaled_mm where the GPU runs it, else de-quantised; fp8: refuse elsewhere; dequantised
    gemm: str = "auto"
    activation_scaling: str = "row"  # row: one scale per token; tensor: one per call
    fast_accum: bool = True  # _scaled_mm's faster accumulation (torchao's choice for forward GEMMs)
    skip: list[str] = field(default_factory=list)  # module paths or names (e.g. head) kept in the compute dtype

    target = "b200lab.precision.weight_only.FP8WeightOnlyPrecision"
    fp8_gemms = True
    replaces_linears = "b200lab's FP8WeightLinear"

    @classmethod
    def available(cls, device: str) -> tuple[bool, str]:
        """Whether the FP8 GEMM (not the de-quantised fallback) can run here, and why not."""
        return fp8_gemm_support(device)

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = []
        if ctx.training:
            problems.append(
                f"precision={cfg.name} is an inference recipe (FP8 weights have no gradients) and "
                f"workload={ctx.cfg.workload.name} trains: train with precision=fp8_torchao, precision=fp8 "
                "(Transformer Engine) or precision=bf16"
            )
        if cfg.activation_scaling not in SCALINGS:
            problems.append(f"precision.activation_scaling={cfg.activation_scaling!r}: choose {' or '.join(SCALINGS)}")
        if cfg.compute_dtype not in COMPUTE_DTYPES:
            problems.append(f"precision.compute_dtype={cfg.compute_dtype!r}: choose one of {', '.join(COMPUTE_DTYPES)}")
        elif cfg.gemm not in GEMMS:
            problems.append(f"precision.gemm={cfg.gemm!r}: choose one of {', '.join(GEMMS)}")
        elif cfg.gemm == "fp8":
            ok, why = fp8_gemm_support(ctx.device)
            if not ok:
                problems.append(f"precision={cfg.name} precision.gemm=fp8: {why}")
            elif compute_dtype(cfg, ctx.device)[0] != "bfloat16":
                problems.append(
                    f"precision.gemm=fp8 writes bfloat16 activations; precision.compute_dtype={cfg.compute_dtype} "
                    "cannot take them (use auto or bfloat16)"
                )
        return problems
