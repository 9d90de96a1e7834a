"""What the decode workloads (``generate``, ``serve``) share: the checks every decode path needs,
asked of the model, attention and precision config classes, and the options of sampling."""

from __future__ import annotations

from dataclasses import dataclass

from b200lab.core.component import CheckContext
from b200lab.core.registry import config_class
from b200lab.workloads.config.base import WorkloadConfig

SAMPLING = ("greedy", "sample")


@dataclass
class CopyBandwidthOptions:
    """The copy bandwidth a decode workload's bytes are held against (b200lab/measure/copy_bandwidth.py)."""

    # the card's copy bandwidth (GB/s) from a recorded workload=hbm run; null: measured here (GPU)
    copy_gbps: float | None = None
    copy_size_mb: float | None = None  # buffer size of the in-job copy measurement; null: workload=hbm's default


def copy_bandwidth_problems(o) -> list[str]:
    problems = []
    if o.copy_gbps is not None and o.copy_gbps <= 0:
        problems.append(f"workload.options.copy_gbps={o.copy_gbps}: must be > 0 (GB/s), or null to measure it")
    if o.copy_size_mb is not None and o.copy_size_mb <= 0:
        problems.append(f"workload.options.copy_size_mb={o.copy_size_mb}: must be > 0")
    return problems


@dataclass
class DecodeWorkloadConfig(WorkloadConfig):
    uses_model = True

    @classmethod
    def decode_problems(cls, cfg, ctx: CheckContext) -> list[str]:
        """What any decode workload refuses: a model family without a decode path, an attention
        backend without one, packed documents, sequence parallel, and a precision recipe whose
        GEMMs cannot run the decode steps (fp8_auto takes its next path there instead)."""
        problems, workload, model, attention = [], cfg.name, ctx.cfg.model, ctx.cfg.attention
        if not ctx.spec("model").decoder:
            problems.append(
                f"workload={workload} needs a model with a KV-cache decode path (the gpt family or moe); "
                f"model={model.name} ({model.get('_target_')}) has none"
            )
        no_decode = ctx.spec("attention").no_decode
        if no_decode:
            problems.append(
                f"attention={attention.name} has no decode path for workload={workload}: {no_decode}; "
                "use attention=sdpa or flex"
            )
        if attention.get("documents"):
            problems.append(
                f"attention={attention.name} keeps packed documents apart; workload={workload} decodes whole "
                "prompts: use attention=sdpa, flex or flex_sliding"
            )
        if (ctx.cfg.parallelism or {}).get("sequence_parallel"):
            problems.append(
                f"parallelism.sequence_parallel=true cannot split a one-token decode step over the sequence; "
                f"turn it off for workload={workload}"
            )
        why = ctx.spec("precision").decode_problem(ctx.cfg.precision, cls.decode_rows(cfg, ctx.cfg))
        return problems + ([why] if why else [])

    @classmethod
    def precision_overrides(cls, job) -> dict:
        """Fields set on the precision section for this workload's build (fp8_auto is told why
        Transformer Engine cannot run the decode steps, so it takes its next path and says why)."""
        spec = config_class("precision", job.precision.get("_target_"))
        return spec.decode_overrides(job.precision, cls.decode_rows(job.workload, job))


def sequence_limit_problems(ctx: CheckContext, tokens: int, what: str) -> list[str]:
    model = ctx.cfg.model
    if model.get("pos") == "learned" and tokens > model.get("max_seq_len", tokens):
        return [
            f"{what} = {tokens} exceeds model.max_seq_len={model.max_seq_len} (model.pos=learned has no positions "
            "past it)"
        ]
    return []


def sampling_problems(o, prefix: str) -> list[str]:
    problems = []
    if o.sampling not in SAMPLING:
        problems.append(f"{prefix}.sampling={o.sampling!r}: choose {' or '.join(SAMPLING)}")
    if o.temperature <= 0:
        problems.append(f"{prefix}.temperature={o.temperature}: must be > 0 (greedy is sampling=greedy)")
    if o.top_k is not None and o.top_k < 1:
        problems.append(f"{prefix}.top_k={o.top_k}: must be a positive integer or null")
    return problems
