"""``workload=comms``: collectives over the job's ranks, bus bandwidth (b200lab/workloads/comms.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from b200lab.core.component import CheckContext
from b200lab.workloads.config.base import WorkloadConfig

DTYPES = ("float32", "bfloat16", "float16")


OPS = ("all_reduce", "all_gather", "reduce_scatter")


@dataclass
class CommsOptions:
    op: str = "all_reduce"  # all_reduce | all_gather | reduce_scatter
    dtype: str = "float32"  # float32 | bfloat16 | float16
    max_bytes: int = 2**30  # message size of the timed steps and the top of the sweep
    min_bytes: int = 2**20  # bottom of the size sweep; null: no sweep
    factor: int = 2
    sweep_iters: int = 20
    sweep_warmup: int = 5


@dataclass
class CommsConfig(WorkloadConfig):
    options: CommsOptions = field(default_factory=CommsOptions)

    target = "b200lab.workloads.comms.Comms"

    @classmethod
    def validate(cls, cfg, ctx: CheckContext) -> list[str]:
        problems = super().validate(cfg, ctx)
        if ctx.cfg.parallelism.nproc < 2:
            problems.append(f"workload={cfg.name} needs parallelism.nproc >= 2 (it is {ctx.cfg.parallelism.nproc})")
        o = cfg.options
        if "op" in o and o.op not in OPS:
            problems.append(f"workload.options.op={o.op!r}: choose one of {', '.join(OPS)}")
        if "max_bytes" in o:
            if o.dtype not in DTYPES:
                problems.append(f"workload.options.dtype={o.dtype!r}: choose one of {', '.join(DTYPES)}")
            if o.max_bytes < 1 or (o.min_bytes is not None and not 1 <= o.min_bytes <= o.max_bytes):
                problems.append(
                    f"workload.options.min_bytes={o.min_bytes}, max_bytes={o.max_bytes}: need 1 <= min_bytes <= "
                    "max_bytes"
                )
            if o.factor < 2 or o.sweep_iters < 1 or o.sweep_warmup < 0:
                problems.append("workload.options: factor must be >= 2, sweep_iters >= 1, sweep_warmup >= 0")
        return problems
