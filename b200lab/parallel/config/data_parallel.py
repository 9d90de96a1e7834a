"""``parallelism=single`` and ``ddp``: every rank a replica on its own batch."""

from __future__ import annotations

from dataclasses import dataclass

from b200lab.core.component import CheckContext
from b200lab.parallel.config.base import ParallelismConfig, expert_parallel_problems

GRAD_SYNC = ("micro_batch", "optimizer_step")


@dataclass
class DataParallelConfig(ParallelismConfig):
    # with float32 master weights and grad_accum > 1: micro_batch all-reduces every micro-batch's
    # 16-bit gradients (DDP's own hooks); optimizer_step sums micro-batches in the float32 masters
    # under no_sync and all-reduces those once per optimizer step
    grad_sync: str = "micro_batch"
    # DDP's gradient bucket size; under torch.compile each bucket is also a graph break (dynamo's
    # DDPOptimizer splits the graph at bucket boundaries so reductions overlap the backward). 200, not
    # DDP's 25: gpt_1b on 2 x H100 scales 0.975 at 200 and 0.965 at 25 (docs/measurements/2026-11-26-parallel-overlap)
    bucket_cap_mb: float = 200.0

    target = "b200lab.parallel.data_parallel.DataParallel"

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx)
        if cfg.grad_sync not in GRAD_SYNC:
            problems.append(f"parallelism.grad_sync={cfg.grad_sync!r}: choose {' or '.join(GRAD_SYNC)}")
        if not cfg.bucket_cap_mb > 0:
            problems.append(f"parallelism.bucket_cap_mb={cfg.bucket_cap_mb}: must be a positive number of MiB")
        return problems + expert_parallel_problems(cfg, ctx, "nproc")
