"""``precision=fp64 / fp32 / tf32 / bf16 / fp16 / auto / bf16_autocast``: parameter dtypes, master
weights and torch.autocast (b200lab/precision/recipe.py resolves which dtype each part uses)."""

from __future__ import annotations

from dataclasses import dataclass

from b200lab.core.component import CheckContext
from b200lab.precision.config.base import PrecisionConfig
from b200lab.precision.recipe import resolve


@dataclass
class AutocastConfig(PrecisionConfig):
    compute_dtype: str = "auto"  # auto | float64 | float32 | tf32 | bfloat16 | float16
    param_dtype: str = "auto"  # auto: the compute dtype; float32 with 16-bit compute = autocast
    master_dtype: str | None = "auto"  # auto: float32 masters when training 16-bit weights; none: no masters
    grad_accum_dtype: str = "auto"  # auto: the master dtype, else the parameter dtype

    target = "b200lab.precision.autocast.AutocastPrecision"

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        try:
            resolve(cfg, ctx.device, ctx.training)
        except ValueError as exc:
            return [str(exc)]
        return []
