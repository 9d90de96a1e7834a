"""``workload=gemm``: one matrix multiply, the card's GEMM ceiling (b200lab/workloads/gemm.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from b200lab.core.component import CheckContext
from b200lab.workloads.config.base import WorkloadConfig

DTYPES = ("bf16", "fp16", "fp32", "tf32", "fp8")


def parse_shape(shape: str) -> tuple[int, int, int]:
    try:
        m, n, k = (int(x) for x in str(shape).lower().split("x"))
    except ValueError:
        raise ValueError(f"workload.options.shape={shape!r}: expected MxNxK, e.g. 8192x8192x8192") from None
    return m, n, k


@dataclass
class GemmOptions:
    dtype: str = "bf16"  # bf16 | fp16 | tf32 | fp32 | fp8
    shape: str = "auto"  # MxNxK, or auto: sized for the device


@dataclass
class GemmConfig(WorkloadConfig):
    options: GemmOptions = field(default_factory=GemmOptions)

    target = "b200lab.workloads.gemm.Gemm"

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx)
        if cfg.options.dtype not in DTYPES:
            problems.append(f"workload.options.dtype={cfg.options.dtype!r}: choose {', '.join(DTYPES)}")
        elif cfg.options.dtype == "fp8" and ctx.device != "cuda":
            problems.append("workload.options.dtype=fp8 needs a CUDA GPU with FP8 tensor cores (sm_89 or newer)")
        if cfg.options.shape != "auto":
            try:
                parse_shape(cfg.options.shape)
            except ValueError as exc:
                problems.append(str(exc))
        return problems
