"""``workload=moe_layer``: one mixture-of-experts layer beside the dense MLP of equal active
width (b200lab/workloads/moe_layer.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from b200lab.core.component import CheckContext
from b200lab.models.config.moe import layer_problems
from b200lab.workloads.config.base import WorkloadConfig

DTYPES = ("bf16", "fp16", "fp32")


@dataclass
class MoELayerOptions:
    d_model: int = 2048
    tokens: int = 16384
    n_experts: int = 8
    top_k: int = 2
    d_ff_expert: int = 8192
    n_shared_experts: int = 0
    router: str = "softmax"  # softmax | sigmoid
    capacity_factor: float | None = None  # null: dropless
    expert_impl: str = "grouped"  # grouped | loop
    dtype: str = "bf16"  # bf16 | fp16 | fp32
    compile: bool = False  # torch.compile(fullgraph=True) of the MoE layer, the dense MLP and each phase
    phases: bool = True  # time router / permutation / experts apart (grouped path)


@dataclass
class MoELayerConfig(WorkloadConfig):
    options: MoELayerOptions = field(default_factory=MoELayerOptions)

    target = "b200lab.workloads.moe_layer.MoELayerBench"

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx)
        o = cfg.options
        problems += [
            f"workload.options.{k}={o[k]}: must be a positive integer"
            for k in ("d_model", "tokens", "n_experts", "top_k", "d_ff_expert")
            if o[k] < 1
        ]
        problems += layer_problems(
            "workload.options",
            o.d_model,
            o.n_experts,
            o.top_k,
            o.d_ff_expert,
            o.n_shared_experts,
            o.router,
            o.expert_impl,
            o.capacity_factor,
        )
        if o.dtype not in DTYPES:
            problems.append(f"workload.options.dtype={o.dtype!r}: choose {', '.join(DTYPES)}")
        elif o.compile and o.dtype != "bf16" and o.expert_impl == "grouped":
            problems.append(
                f"workload.options.compile=true with dtype={o.dtype}: torch.compile traces the grouped GEMM in bf16 "
                "only"
            )
        if o.compile and cfg.warmup_steps < 1:
            problems.append(
                "workload.options.compile=true needs workload.warmup_steps >= 1 so compilation stays out of the timed "
                "steps"
            )
        if o.compile and o.expert_impl == "loop":
            problems.append(
                "workload.options.compile=true with expert_impl=loop: the loop's per-expert token counts are "
                "data-dependent"
            )
        return problems
