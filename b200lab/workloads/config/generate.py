"""``workload=generate``: prefill, then decode one token per step from a static KV cache
(b200lab/workloads/generate.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from b200lab.core.component import CheckContext, DecodeRows
from b200lab.workloads.config.decode import (
    CopyBandwidthOptions,
    DecodeWorkloadConfig,
    copy_bandwidth_problems,
    sampling_problems,
    sequence_limit_problems,
)


@dataclass
class GenerateOptions(CopyBandwidthOptions):
    prompt_len: int | None = None  # null: seq.len
    output_len: int = 128  # tokens generated per sequence (the first by the prefill), at least 2
    max_len: int | None = None  # cache slots; null: prompt_len + output_len (every decode step reads all of them)
    sampling: str = "greedy"  # greedy | sample
    temperature: float = 1.0
    top_k: int | None = None  # sample among the k likeliest tokens (null: all)
    cuda_graph: bool | None = None  # capture the decode step in a CUDA graph; null: on a GPU


@dataclass
class GenerateConfig(DecodeWorkloadConfig):
    options: GenerateOptions = field(default_factory=GenerateOptions)

    target = "b200lab.workloads.generate.Generate"

    @classmethod
    def decode_rows(cls, cfg, job) -> DecodeRows:
        batch = int(job.seq.batch)
        return DecodeRows(batch, f"seq.batch={batch}")

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx) + cls.decode_problems(cfg, ctx)
        o = cfg.options
        prompt = o.prompt_len if o.prompt_len is not None else ctx.cfg.seq.len
        if prompt is None or prompt < 1:
            problems.append(f"workload.options.prompt_len={prompt}: must be a positive integer")
        if o.output_len is None or o.output_len < 2:
            problems.append(
                f"workload.options.output_len={o.output_len}: must be at least 2 (the prefill gives the first "
                "token; workload=generate times the decode steps after it)"
            )
        need = (prompt or 0) + (o.output_len or 0)
        if o.max_len is not None and o.max_len < need:
            problems.append(
                f"workload.options.max_len={o.max_len} cannot hold prompt_len + output_len = {prompt} + "
                f"{o.output_len} = {need} tokens; raise it or leave it null (= the sum)"
            )
        problems += sequence_limit_problems(ctx, o.max_len or need, "the cache (prompt_len + output_len)")
        problems += sampling_problems(o, "workload.options")
        if o.cuda_graph and ctx.device != "cuda":
            problems.append(f"workload.options.cuda_graph=true needs a CUDA GPU and this job runs on {ctx.device}")
        problems += copy_bandwidth_problems(o)
        return problems
