"""``precision=fp8, fp8_current, fp8_block, fp8_mxfp8, fp8_nvfp4``: Transformer Engine recipes
(b200lab/precision/te_fp8.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from b200lab.core.component import CheckContext, DecodeRows
from b200lab.precision.availability import (
    EXPERT_PATHS,
    TE_RECIPES,
    rowwise_grouped_problem,
    te_decode_rows_problem,
    te_problem,
)
from b200lab.precision.config.base import PrecisionConfig

FORMATS = ("auto", "hybrid", "e4m3")


@dataclass
class TEFP8Config(PrecisionConfig):
    recipe: str = "delayed"  # delayed | current | block | mxfp8 | nvfp4
    # auto: the recipe's default (hybrid for delayed/current) | hybrid (e4m3 forward, e5m2 grads) | e4m3
    fp8_format: str = "auto"
    amax_history_len: int = 1024  # delayed only
    amax_compute_algo: str = "max"  # delayed only: max | most_recent
    skip: list[str] = field(default_factory=list)  # module paths or names (e.g. head) kept in bf16
    # auto: float32 master weights when training; none: the optimizer steps the bf16 weights
    master_dtype: str | None = "auto"
    # a mixture's routed experts: auto (rowwise on Hopper when the model is compiled, else te; the records behind
    # the rule: availability.EAGER_ROWWISE_LOSES) | rowwise (torch._scaled_grouped_mm, no host sync; Hopper) | te
    # (Transformer Engine GroupedLinear: group sizes read on the host) | bf16
    moe_experts: str = "auto"
    # fp8: every aligned linear | bf16: linears too small for FP8 to gain stay bf16 (te_convert.small_gemm)
    small_gemms: str = "fp8"
    compiled_model: bool = False  # set from compile.mode for the job (job_overrides): moe_experts=auto reads it

    target = "b200lab.precision.te_fp8.TEFP8Precision"
    fp8_gemms = True
    may_use_te = True
    replaces_linears = "Transformer Engine"

    @classmethod
    def job_overrides(cls, cfg, job) -> dict:
        return compiled_overrides(job)

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = []
        if cfg.recipe not in TE_RECIPES:
            return [f"precision.recipe={cfg.recipe!r}: choose one of {', '.join(TE_RECIPES)}"]
        if cfg.fp8_format not in FORMATS:
            problems.append(f"precision.fp8_format={cfg.fp8_format!r}: choose one of {', '.join(FORMATS)}")
        if cfg.amax_compute_algo not in ("max", "most_recent"):
            problems.append(f"precision.amax_compute_algo={cfg.amax_compute_algo!r}: choose max or most_recent")
        if cfg.get("small_gemms", "fp8") not in ("fp8", "bf16"):
            problems.append(f"precision.small_gemms={cfg.small_gemms!r}: choose fp8 or bf16")
        if cfg.amax_history_len < 1:
            problems.append(f"precision.amax_history_len={cfg.amax_history_len}: must be >= 1")
        if str(cfg.master_dtype).lower() not in ("auto", "none", "null", "float32"):
            problems.append(f"precision.master_dtype={cfg.master_dtype!r}: choose auto, none or float32")
        tokens = int(ctx.cfg.seq.batch) * int(ctx.cfg.seq.len)
        if tokens % 16:
            problems.append(f"seq.batch x seq.len = {tokens} tokens: FP8 GEMMs need a multiple of 16")
        if ctx.cfg.compile.mode is not None and ctx.cfg.compile.fullgraph:
            problems.append(
                f"precision={cfg.name} with compile.fullgraph=true: Transformer Engine's modules are graph breaks "
                "(they run eager between the compiled parts); set compile.fullgraph=false"
            )
        why = te_problem(cfg.recipe, ctx.device)
        if why:
            problems.append(f"precision={cfg.name} precision.recipe={cfg.recipe}: {why}")
        problems += cls.experts_problems(cfg, ctx.device)
        return problems

    @staticmethod
    def experts_problems(cfg, device: str) -> list[str]:
        setting = cfg.get("moe_experts", "auto")
        if setting not in EXPERT_PATHS:
            return [f"precision.moe_experts={setting!r}: choose one of {', '.join(EXPERT_PATHS)}"]
        if setting != "rowwise" or device != "cuda":  # off a GPU, te_problem has refused already
            return []
        from b200lab.measure.gpus import nvml_gpus

        gpus = nvml_gpus()
        why = rowwise_grouped_problem(gpus[0].get("capability") if gpus else None, gpus[0]["name"] if gpus else "")
        return [f"precision.moe_experts=rowwise: {why}; use auto, te or bf16"] if why else []

    @classmethod
    def decode_problem(cls, cfg, rows: DecodeRows | None) -> str | None:
        why = te_decode_rows_problem(cfg.recipe, rows)
        if why is None:
            return None
        fixed = ", or a seq.batch that is a multiple of TE's alignment" if rows.count is not None else ""
        return (
            f"precision={cfg.name}: {why}; use precision=fp8_weight_only (e4m3 weights, bf16 compute), fp8_auto or "
            f"bf16{fixed}"
        )


def compiled_overrides(job) -> dict:
    """``compiled_model`` for the job: whether its model runs under torch.compile."""
    return {"compiled_model": job.compile.get("mode") is not None}
