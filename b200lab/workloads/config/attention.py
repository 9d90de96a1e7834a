"""``workload=attention``: one attention call, timed and checked against the math reference
(b200lab/workloads/attention_bench.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from b200lab.core.component import CheckContext
from b200lab.workloads.config.base import WorkloadConfig


@dataclass
class AttentionBenchOptions:
    heads: int = 16
    kv_heads: int | None = None  # None: heads (no grouped-query attention)
    head_dim: int = 128
    backward: bool = False  # forward + backward (gradients of q, k, v)
    cuda_graph: bool = False  # capture one step in a CUDA graph and replay it (GPU only)
    check_rows: int = 64  # query rows per block compared with the math reference (first, random, last)


@dataclass
class AttentionBenchConfig(WorkloadConfig):
    options: AttentionBenchOptions = field(default_factory=AttentionBenchOptions)

    target = "b200lab.workloads.attention_bench.AttentionBench"

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx)
        o = cfg.options
        for key in ("heads", "head_dim", "check_rows"):
            if o[key] < 1:
                problems.append(f"workload.options.{key}={o[key]}: must be a positive integer")
        if o.kv_heads is not None and (o.kv_heads < 1 or o.heads % o.kv_heads):
            problems.append(f"workload.options.kv_heads={o.kv_heads} must divide workload.options.heads={o.heads}")
        if o.cuda_graph and ctx.device != "cuda":
            problems.append(f"workload.options.cuda_graph=true needs a CUDA GPU and this job runs on {ctx.device}")
        why = ctx.spec("attention").no_cpu_backward
        if o.backward and ctx.device != "cuda" and why:
            problems.append(
                f"workload.options.backward=true with attention={ctx.cfg.attention.name} on {ctx.device}: {why}"
            )
        if ctx.cfg.attention.get("documents"):
            problems.append(
                f"workload=attention draws no documents; use attention=flex or flex_sliding "
                f"(attention={ctx.cfg.attention.name} needs packed data: workload=forward or train)"
            )
        return problems
